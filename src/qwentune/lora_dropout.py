"""LoRA dropout that is cheap on CPU.

PEFT applies dropout to the input of every LoRA branch (seven per decoder layer). On CPU,
torch's dropout draws one random number per element from a single-threaded generator and
was 25-30% of a LoRA training step on SmolLM2 (profiled); the rank-8 matmul it feeds costs
almost nothing. This dropout keeps the per-element semantics (an independent keep/drop
choice per element, kept values scaled so the expectation is unchanged, identity in eval
mode) but cuts each 64-bit random draw into four 16-bit lanes: 4x fewer draws, measured 4x
faster than nn.Dropout. The keep probability is quantized to 1/65536 (0.1 becomes 0.100006)
and the scale uses the quantized value, so the output stays unbiased. Only the boolean mask
is kept for backward.

One deliberate difference from PEFT: branches that read the same tensor (q/k/v read the
attention input, gate/up the MLP input) share one dropped-out copy instead of drawing a mask
each. Every branch still sees dropout p on its input; the masks of those branches are the
same. That is 3 masks per layer instead of 7, and 3 saved copies instead of 7: measured +7%
tokens/s, and less activation memory.
"""

from __future__ import annotations

import weakref

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


class _LastDrop:
    """The last input and its dropped-out version, held weakly (no tensor outlives its step)."""

    def __init__(self) -> None:
        self.input = self.output = None

    def get(self, x, p):
        if self.input is not None and self.input() is x and self.p == p and self.output() is not None:
            return self.output()
        return None

    def put(self, x, p, out) -> None:
        self.input, self.p, self.output = weakref.ref(x), p, weakref.ref(out)


_last = _LastDrop()


class FastDropout(torch.nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.keep_lanes = round((1.0 - p) * LANES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        out = _last.get(x, self.p)
        if out is None:
            keep = keep_mask(x.shape, self.keep_lanes, x.device)
            out = _MaskedScale.apply(x, keep, LANES / self.keep_lanes)
            _last.put(x, self.p, out)
        return out

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
