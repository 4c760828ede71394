"""transformers' Trainer with qwentune's batches and loss: packed rows and the lean loss head.

The loop, optimizer, schedule, checkpoints and distributed plumbing stay the Trainer's. Only
the loss is computed here (see loss.py), normalized by the number of labelled tokens in the
whole accumulated batch, which is what transformers' own causal-LM loss does; so a run with
the lean head follows the same curve as one without it.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch

from ..data.collate import pack_batch, pad_batch
from ..data.tokenize import IGNORE_INDEX
from ..models import import_peft
from .loss import LeanLoss, shifted_targets
from .speedups import Speedups, lean_head_kernel

import_peft()  # before transformers' Trainer, which imports peft: see models.import_peft
from transformers import Trainer  # noqa: E402

REAL_TOKENS = "real_tokens"  # batch key: tokens that are not padding, for honest tokens/s


def make_collator(packing: bool, pad_token_id: int):
    # Padded batches carry an attention mask, from which the Trainer counts real tokens itself.
    return _packed_with_count if packing else partial(pad_batch, pad_token_id=pad_token_id)


def _packed_with_count(examples):
    batch = pack_batch(examples)
    batch[REAL_TOKENS] = torch.tensor(batch["input_ids"].shape[1])
    return batch


def split_packed(batch: dict, tokens_per_pass: int) -> list[dict]:
    """Cut a packed row at example boundaries into pieces of at most tokens_per_pass tokens.

    An example longer than tokens_per_pass is a piece of its own. Running the pieces one after the
    other and adding their gradients gives the same gradient as the whole row, with the activation
    memory of one piece.
    """
    length = batch["input_ids"].shape[1]
    if length <= tokens_per_pass:
        return [batch]
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [length]
    cuts, begin = [0], 0
    for start, following in zip(starts, starts[1:]):
        if following - begin > tokens_per_pass and start > begin:
            cuts.append(start)
            begin = start
    cuts.append(length)
    # The token count was taken for the whole batch before the step; pieces carry row slices only.
    return [{key: value[:, a:b] for key, value in batch.items() if key != REAL_TOKENS} for a, b in zip(cuts, cuts[1:])]


def unwrap_causal_lm(model):
    """The transformers model inside PEFT / DDP wrappers."""
    while hasattr(model, "module"):  # DDP, DataParallel
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class QwentuneTrainer(Trainer):
    # Our loss is divided by the labelled-token count of the whole accumulated batch (the
    # Trainer counts it when it believes the model takes loss kwargs), so it is already
    # scaled for gradient accumulation.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, speedups: Speedups, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.speedups = speedups
        self.tokens_per_pass = speedups.tokens_per_pass
        self.model_accepts_loss_kwargs = True
        self.lean_loss = (LeanLoss(unwrap_causal_lm(self.model), lean_head_kernel(speedups)) if speedups.lean_head
                          else None)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """A packed row longer than tokens_per_pass runs as several forward/backward passes."""
        pieces = split_packed(inputs, self.tokens_per_pass) if self.tokens_per_pass and "position_ids" in inputs else [inputs]
        if len(pieces) == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        if num_items_in_batch is None:
            num_items_in_batch = (inputs["shift_labels"] != IGNORE_INDEX).sum()
        total = 0.0
        for i, piece in enumerate(pieces):
            # Gradients are synchronized across processes once, after the last piece.
            last = i == len(pieces) - 1
            with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
                total = total + super().training_step(model, piece, num_items_in_batch)
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != REAL_TOKENS}
        if self.lean_loss is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        targets = inputs.get("shift_labels")
        if targets is None:
            targets = shifted_targets(inputs["labels"])
        total, outputs = self.lean_loss(model, inputs["input_ids"], targets,
                                        position_ids=inputs.get("position_ids"),
                                        attention_mask=inputs.get("attention_mask"))
        count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # The count covers every process and DDP averages gradients over processes.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _track_num_input_tokens(self, inputs):
        # Without an attention mask (packed rows) transformers counts the tokens that differ from
        # pad_token_id; for tokenizers whose pad token is the end-of-turn token that undercounts,
        # so count what the collator knows to be real.
        if REAL_TOKENS not in inputs or self.args.include_num_input_tokens_seen == "no":
            return super()._track_num_input_tokens(inputs)
        tokens = torch.as_tensor(inputs[REAL_TOKENS], device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()
