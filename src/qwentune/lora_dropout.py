"""LoRA dropout that is cheap on CPU.

PEFT applies dropout to the input of every LoRA branch (seven per decoder layer). On CPU,
torch's dropout draws one random number per element from a single-threaded generator and
was 25-30% of a LoRA training step on SmolLM2 (profiled); the rank-8 matmul it feeds costs
almost nothing. This dropout keeps the semantics (an independent keep/drop choice per element,
kept values scaled so the expectation is unchanged, identity in eval mode) but cuts each 64-bit
random draw into four 16-bit lanes: 4x fewer draws, measured 4x faster than nn.Dropout. The
keep probability is quantized to 1/65536 (0.1 becomes 0.100006) and the scale uses the
quantized value, so the output stays unbiased. Only the boolean mask is kept for backward.
"""

from __future__ import annotations

import torch

LANES = 1 << 16


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep, scale: float):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0.0).mul_(scale)  # where: no float copy of the mask

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None, None


def keep_mask(shape: torch.Size, keep_lanes: int, device) -> torch.Tensor:
    """Boolean mask, each element True with probability keep_lanes / 65536."""
    n = shape.numel()
    bits = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    return (bits.view(torch.int16)[:n] < keep_lanes - (LANES // 2)).view(shape)


class FastDropout(torch.nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.keep_lanes = round((1.0 - p) * LANES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = keep_mask(x.shape, self.keep_lanes, x.device)
        return _MaskedScale.apply(x, keep, LANES / self.keep_lanes)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_lora_dropout(model) -> int:
    """Swap the nn.Dropout of every LoRA branch for FastDropout; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        branches = getattr(module, "lora_dropout", None)
        if not isinstance(branches, torch.nn.ModuleDict):
            continue
        for name, dropout in branches.items():
            if isinstance(dropout, torch.nn.Dropout) and 0.0 < dropout.p < 1.0:
                branches[name] = FastDropout(dropout.p)
                swapped += 1
    return swapped
