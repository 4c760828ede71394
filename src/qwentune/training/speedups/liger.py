"""Liger's Triton kernels on CUDA (liger-kernel, github.com/linkedin/Liger-Kernel): RMSNorm, SwiGLU, RoPE,
and its fused linear cross-entropy as the lean loss head's kernel.

liger_kernel itself is imported inside the functions, which run only where cuda_packages.usable_packages
found it (CUDA, Triton).

The norms, MLP and RoPE are patched the way transformers' Trainer does for `use_liger_kernel`
(transformers/integrations/liger.py): `_apply_liger_kernel_to_instance` on the causal LM inside the
PeftModel. For an existing model it rebinds `forward` of each RMSNorm and MLP instance; the patched MLP
forward is `down_proj(silu(gate_proj(x)) * up_proj(x))` on the module's own projections, which PEFT has
already replaced with its LoRA layers, so the adapters train as before. Its RoPE patch replaces the
architecture module's `apply_rotary_pos_emb`, for every model of that architecture in this process.

The loss: Liger can also replace the model's whole forward with one that ends in its fused linear
cross-entropy (`fused_linear_cross_entropy=True`). Here it is used inside qwentune's lean head instead
(loss.LeanLoss with `kernel=fused_linear_cross_entropy_sum`), which has fewer moving parts: the model's
forward stays transformers' own (Liger's copies of each architecture's forward follow transformers'
releases), the lean head already picks the labelled positions of packed rows (shift_labels) so Liger's
kernel sees reply tokens only, and the normalisation by the accumulated batch's token count and the
processes stays the one QwentuneTrainer tests; only the kernel under the head changes.

May import: torch, transformers, liger_kernel.
"""

from __future__ import annotations

import inspect

import torch

from ...data.tokenize import IGNORE_INDEX
from ...errors import UserError

# Patches asked for; each architecture's apply function takes those it has (transformers does the same).
# The loss is not patched into the model (see the module docstring).
PATCHES = {"rope": True, "rms_norm": True, "swiglu": True, "geglu": True,
           "cross_entropy": False, "fused_linear_cross_entropy": False}
FUSED_HEAD = "liger_fused_linear_cross_entropy"


def use_liger_kernels(causal_lm, fused_head: bool, insist: bool) -> tuple[str, ...]:
    """Patch `causal_lm` (a transformers model, the one inside the PeftModel) with Liger's kernels.

    Returns the names of what took effect, e.g. ("liger_rope", "liger_rms_norm", "liger_swiglu",
    "liger_fused_linear_cross_entropy"); the last one when `fused_head` (the lean head then uses
    fused_linear_cross_entropy_sum). UserError when `insist` and Liger has no kernels for the architecture.
    """
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    model_type = causal_lm.config.model_type
    apply = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if apply is None and insist:
        raise UserError(f"training.cuda_kernels is true, but liger-kernel has no kernels for model type "
                        f"{model_type!r}; set it to auto.")
    applied = []
    if apply is not None:
        _apply_liger_kernel_to_instance(model=causal_lm, **PATCHES)
        # What the apply function does: our value where it takes the argument, else its own default.
        for name, parameter in inspect.signature(apply).parameters.items():
            if isinstance(parameter.default, bool) and PATCHES.get(name, parameter.default):
                applied.append(f"liger_{name}")
    if fused_head:
        applied.append(FUSED_HEAD)
    return tuple(applied)


def fused_linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                   targets: torch.Tensor) -> torch.Tensor:
    """sum_i CE(hidden_i @ weight.T + bias, target_i) by Liger's fused kernel: (rows, hidden) and (rows,) ->
    a 0-dim fp32 tensor; the same contract as loss.chunked_head, which it replaces on CUDA.

    Liger computes the gradients in the forward pass, by row chunks over the whole vocabulary; a head
    that is trained gets its gradient accumulated in fp32, as loss.py's own head does.
    """
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    if targets.numel() == 0:  # no labelled position in this piece: Liger's chunking needs at least one row
        return hidden.sum().float() * 0.0
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum", accum_dtype=torch.float32)
    return loss(weight, hidden, targets, bias)
