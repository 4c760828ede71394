"""A lean causal-LM loss head: cross-entropy without materializing the full logits tensor.

For Qwen's 151,936-token vocabulary the logits of a 1,024-token row take 0.6 GB in fp32, and the
naive path keeps several such tensors alive for the backward pass (logits, their fp32 copy,
log-softmax). Here the loss is computed chunk by chunk over only the positions that carry a label
(prompt tokens are masked out of the loss, so their logits are never needed), and the gradient
with respect to the hidden states is computed in the same pass; only that gradient, one row of
hidden size per labelled token, is kept for backward. A frozen head (LoRA's case) is walked in
vocabulary blocks with an online softmax, so no chunk spans the whole vocabulary. Loss value and
gradients equal the naive path's (tests/training/test_loss.py).
"""

from __future__ import annotations

import torch

from ..data.tokenize import IGNORE_INDEX

# Logits computed at once stay under this many values (128 MB in fp32).
CHUNK_VALUES = 1 << 25
# A frozen head is walked in blocks of rows x vocabulary entries. On a CPU a block's logits must
# stay in cache between its passes: 512 x 4,096 (8 MB in fp32) was 1.15-1.34x faster than
# whole-vocabulary chunks at vocabulary 151,936 from 512 to 2,048 rows (1.08-1.12x at 264 x 49,152);
# taller or wider blocks were no faster. On an accelerator fewer, larger blocks keep the number of
# kernel launches down (not measured here: no GPU).
CPU_BLOCK = (512, 4096)
ACCELERATOR_VOCAB_BLOCK = 32_768


def head_blocks(vocab_size: int, device_type: str, trained: bool) -> tuple[int, int]:
    """(rows, vocabulary entries) of the logits computed at once by LinearCrossEntropySum.

    A trained head's gradient needs each row's final softmax, so its chunks span the vocabulary.
    """
    if trained:
        return max(16, CHUNK_VALUES // vocab_size), vocab_size
    if device_type == "cpu":
        return CPU_BLOCK
    return max(16, CHUNK_VALUES // ACCELERATOR_VOCAB_BLOCK), ACCELERATOR_VOCAB_BLOCK


class LinearCrossEntropySum(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T + bias, target_i), chunked; gradients computed in forward.

    chunk_rows and vocab_block: see head_blocks (vocab_block is used for a frozen head only).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows: int, vocab_block: int):
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        if need_weight or need_bias:
            total, grads = _trained_head(hidden, weight, bias, targets, chunk_rows, need_hidden, need_weight,
                                         need_bias)
        else:
            total, grad_hidden = _frozen_head(hidden, weight, bias, targets, chunk_rows, vocab_block, need_hidden)
            grads = (grad_hidden,) if need_hidden else ()
        ctx.save_for_backward(*grads)
        ctx.which = (need_hidden, need_weight, need_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        grads = []
        for needed, dtype in zip(ctx.which, ctx.dtypes):
            grads.append((next(saved) * grad_total).to(dtype) if needed else None)
        return (*grads, None, None, None)


def _trained_head(hidden, weight, bias, targets, chunk_rows, need_hidden, need_weight, need_bias):
    """Loss and the gradients asked for, by chunks of rows over the whole vocabulary.

    The weight's gradient needs each row's final softmax, so every chunk sees all of the vocabulary.
    """
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
        # d(sum CE)/d(logits) = softmax - one_hot = (exps - sums * one_hot) / sums.
        exps[torch.arange(len(t), device=t.device), t] -= sums.squeeze(1)
        grad_logits = exps.div_(sums)
        if need_hidden:
            grad_hidden[start:start + chunk_rows] = grad_logits.to(hidden.dtype) @ weight.to(hidden.dtype)
        if need_weight:
            grad_weight += grad_logits.T @ h.float()
        if need_bias:
            grad_bias += grad_logits.sum(0)
    return total, tuple(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None)


def _frozen_head(hidden, weight, bias, targets, chunk_rows, vocab_block, need_hidden):
    """(loss, gradient for the hidden states or None) of a head that is not trained (the LoRA case).

    One pass over the vocabulary in blocks with an online softmax, as flash attention does over
    keys: a running max m and sum s of exp(logit - m) per row, and the running product
    exp(logits - m) @ weight for the gradient; whenever m grows, what was accumulated is rescaled
    by exp(m_old - m_new). At the end, d(sum CE)/d(hidden) = softmax @ weight - weight[target]
    = product / s - weight[target].
    """
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if need_hidden else None
    exact = torch.promote_types(weight.dtype, torch.float32)  # softmax sums: fp32 at least
    for start in range(0, hidden.shape[0], chunk_rows):
        h = hidden[start:start + chunk_rows]
        t = targets[start:start + chunk_rows]
        rows = h.shape[0]
        maxes = torch.full((rows, 1), float("-inf"), dtype=exact, device=h.device)
        sums = torch.zeros(rows, 1, dtype=exact, device=h.device)
        product = torch.zeros(rows, h.shape[1], dtype=exact, device=h.device) if need_hidden else None
        for first in range(0, weight.shape[0], vocab_block):
            w = weight[first:first + vocab_block]
            logits = torch.nn.functional.linear(h, w, None if bias is None else bias[first:first + vocab_block])
            logits = logits.to(exact)
            new_maxes = torch.maximum(maxes, logits.amax(dim=1, keepdim=True))
            rescale = maxes.sub_(new_maxes).exp_()
            exps = logits.sub_(new_maxes).exp_()
            sums.mul_(rescale).add_(exps.sum(dim=1, keepdim=True))
            if need_hidden:
                if w.dtype == exact:
                    product.mul_(rescale).addmm_(exps, w)
                else:
                    product.mul_(rescale).add_(exps.to(w.dtype) @ w)
            maxes = new_maxes
        target_weights = weight[t]
        target_logits = (h.to(exact) * target_weights.to(exact)).sum(dim=1)
        if bias is not None:
            target_logits += bias[t].to(exact)
        total += (maxes + sums.log()).squeeze(1).sub_(target_logits).sum()
        if need_hidden:
            grad_hidden[start:start + chunk_rows] = product.div_(sums).sub_(target_weights.to(exact))
    return total, grad_hidden


def chunked_head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 targets: torch.Tensor) -> torch.Tensor:
    """sum_i CE(hidden_i @ weight.T + bias, target_i): (rows, hidden) and (rows,) -> a 0-dim fp32 tensor,
    by LinearCrossEntropySum in the blocks head_blocks gives for this device and head."""
    trained = weight.requires_grad or (bias is not None and bias.requires_grad)
    rows, vocab_block = head_blocks(weight.shape[0], weight.device.type, trained)
    return LinearCrossEntropySum.apply(hidden, weight, bias, targets, rows, vocab_block)


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

    def __init__(self, causal_lm, kernel=None) -> None:
        self.head = causal_lm.get_output_embeddings()
        # The cross-entropy of the head: chunked_head, or another with its contract (Liger's on CUDA,
        # speedups/liger.py).
        self.kernel = kernel or chunked_head
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
        total = self.kernel(hidden[keep], self.head.weight, self.head.bias, targets[keep])
        return total, outputs

    def remove(self) -> None:
        self._hook.remove()
        self._hidden = None
