"""transformers' Trainer with qwentune's batches and loss: packed rows and the lean loss head.

The loop, optimizer, schedule, checkpoints and distributed plumbing stay the Trainer's. Only
the loss is computed here (see loss.py), normalized by the number of labelled tokens in the
whole accumulated batch, which is what transformers' own causal-LM loss does; so a run with
the lean head follows the same curve as one without it.
"""

from __future__ import annotations

from functools import partial

import torch
from transformers import Trainer

from .data.collate import pack_batch, pad_batch
from .loss import LeanLoss, lean_head_supported, shifted_targets

REAL_TOKENS = "real_tokens"  # batch key: tokens that are not padding, for honest tokens/s


def make_collator(packing: bool, pad_token_id: int, max_length: int):
    if packing:
        return partial(_packed_with_count, pad_token_id=pad_token_id, row_tokens=max_length)
    return partial(_padded_with_count, pad_token_id=pad_token_id)


def _packed_with_count(examples, pad_token_id: int, row_tokens: int):
    batch = pack_batch(examples, pad_token_id, row_tokens)
    batch[REAL_TOKENS] = torch.tensor(sum(len(e["input_ids"]) for e in examples))
    return batch


def _padded_with_count(examples, pad_token_id: int):
    batch = pad_batch(examples, pad_token_id)
    batch[REAL_TOKENS] = batch["attention_mask"].sum()
    return batch


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

    def __init__(self, *args, lean_head: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = True
        causal_lm = unwrap_causal_lm(self.model)
        self.lean_loss = LeanLoss(causal_lm) if lean_head and lean_head_supported(causal_lm) else None

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
        count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # The count covers every process and DDP averages gradients over processes.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _track_num_input_tokens(self, inputs):
        # transformers counts tokens that differ from pad_token_id when there is no attention
        # mask (packed rows); for tokenizers whose pad token is the end-of-turn token that
        # undercounts, so count what the collator knows to be real.
        if REAL_TOKENS not in inputs or self.args.include_num_input_tokens_seen == "no":
            return super()._track_num_input_tokens(inputs)
        tokens = torch.as_tensor(inputs[REAL_TOKENS], device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()
