"""A lean causal-LM loss head: cross-entropy without materializing the full logits tensor.

For Qwen's 151,936-token vocabulary the logits of a 1,024-token row take 0.6 GB in fp32, and the
naive path keeps several such tensors alive for the backward pass (logits, their fp32 copy,
log-softmax). Here the loss is computed chunk by chunk over only the positions that carry a label
(prompt tokens are masked out of the loss, so their logits are never needed), and the gradient
with respect to the hidden states is computed in the same pass; only that gradient, one row of
hidden size per labelled token, is kept for backward. Loss value and gradients equal the naive
path's (tests/test_loss.py).
"""

from __future__ import annotations

import torch

from .data.tokenize import IGNORE_INDEX

# Logits computed at once: chunk rows x vocabulary stay under this many values (128 MB in fp32).
CHUNK_VALUES = 1 << 25


class LinearCrossEntropySum(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T + bias, target_i), chunked; gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows: int):
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]
            t = targets[start:start + chunk_rows]
            logits = torch.nn.functional.linear(h, weight, bias).float()
            target_logits = logits.gather(1, t[:, None]).squeeze(1)
            # log-sum-exp by hand, in place: the logits buffer becomes exp(logits - max) and is the
            # chunk's only vocabulary-sized tensor (torch.logsumexp allocates another one).
            maxes = logits.amax(dim=1, keepdim=True)
            exps = logits.sub_(maxes).exp_()
            sums = exps.sum(dim=1, keepdim=True)
            total += (maxes + sums.log()).squeeze(1).sub_(target_logits).sum()
            if not (need_hidden or need_weight or need_bias):
                continue
            # d(sum CE)/d(logits) = softmax - one_hot = (exps - sums * one_hot) / sums.
            exps[torch.arange(len(t), device=t.device), t] -= sums.squeeze(1)
            if need_weight or need_bias:
                grad_logits, row_scale = exps.div_(sums), None
            else:  # divide the (rows x hidden) product instead of the (rows x vocabulary) buffer
                grad_logits, row_scale = exps, sums
            grad_logits = grad_logits.to(hidden.dtype)
            if need_hidden:
                grad_h = grad_logits @ weight.to(hidden.dtype)
                grad_hidden[start:start + chunk_rows] = grad_h if row_scale is None else grad_h.div_(row_scale)
            if need_weight:
                grad_weight += grad_logits.float().T @ h.float()
            if need_bias:
                grad_bias += grad_logits.float().sum(0)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None))
        ctx.which = (need_hidden, need_weight, need_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        grads = []
        for needed, dtype in zip(ctx.which, ctx.dtypes):
            grads.append((next(saved) * grad_total).to(dtype) if needed else None)
        return (*grads, None, None)


def chunk_rows_for(vocab_size: int) -> int:
    return max(16, CHUNK_VALUES // vocab_size)


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with hidden positions: position i predicts token i + 1."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


def lean_head_supported(causal_lm) -> bool:
    """A plain Linear output head with no logit scaling or soft-capping (Qwen2, Llama, SmolLM, Mistral...)."""
    head = causal_lm.get_output_embeddings()
    config = causal_lm.config
    return (
        type(head) is torch.nn.Linear
        and getattr(config, "final_logit_softcapping", None) is None
        and getattr(config, "logit_scale", None) is None
        and hasattr(causal_lm, "get_decoder")
    )


class LeanLoss:
    """Summed cross-entropy of a causal LM's labelled positions, through the lean head.

    The model is called as usual (through any PEFT / DDP wrapper, so hooks and gradient
    synchronisation work) but asked for the logits of one position only (`logits_to_keep=1`);
    the decoder's final hidden states are taken from a forward hook and fed to the chunked head.
    Only for models where lean_head_supported() holds and the head's weight is not sharded
    (FSDP / ZeRO-3 gather it only inside the head's own forward).
    """

    def __init__(self, causal_lm) -> None:
        self.head = causal_lm.get_output_embeddings()
        self.chunk_rows = chunk_rows_for(self.head.weight.shape[0])
        self._hidden: torch.Tensor | None = None
        self._hook = causal_lm.get_decoder().register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module, args, output) -> None:
        self._hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state

    def __call__(self, model, input_ids, targets, position_ids=None, attention_mask=None):
        """(loss summed over positions whose target is not IGNORE_INDEX, the model's outputs).

        `targets` are already shifted (see shifted_targets), which lets packed rows end each
        example with IGNORE_INDEX.
        """
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=1, use_cache=False)
        hidden, self._hidden = self._hidden, None
        keep = targets != IGNORE_INDEX
        total = LinearCrossEntropySum.apply(hidden[keep], self.head.weight, self.head.bias, targets[keep],
                                            self.chunk_rows)
        return total, outputs

    def remove(self) -> None:
        self._hook.remove()
        self._hidden = None
