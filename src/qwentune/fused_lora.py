"""A LoRA linear layer computed as one autograd node.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as separate ops: two elementwise
passes over the layer's output in forward (the scaling and the add) and one more in backward,
plus an autograd node for each. Here the low-rank product is accumulated into the base output
by the matrix multiply itself (`addmm_` with alpha = scaling), and the backward pass computes
the same gradients with the scaling applied to the rank-r factors, which are tiny. The LoRA
weights stay PEFT's own parameters, so saving, loading and merging are unchanged.

The fast path is taken only for plain LoRA on an nn.Linear with one active adapter, unmerged,
with frozen base weights and matching dtypes; anything else (DoRA, several adapters, disabled
adapters, 4-bit layers, mixed-batch inference) runs PEFT's forward. Outputs and gradients equal
PEFT's up to float rounding (tests/test_fused_lora.py).
"""

from __future__ import annotations

from types import MethodType

import torch


class LoraLinearFunction(torch.autograd.Function):
    """x @ W.T + b + scaling * (dropped @ A.T) @ B.T, where dropped is x after LoRA dropout."""

    @staticmethod
    def forward(ctx, x, dropped, weight, bias, lora_a, lora_b, scaling: float):
        rows = x.reshape(-1, x.shape[-1])
        dropped_rows = rows if dropped is x else dropped.reshape(-1, dropped.shape[-1])
        down = dropped_rows @ lora_a.T  # rows x r
        out = torch.nn.functional.linear(rows, weight, bias)
        out.addmm_(down, lora_b.T, alpha=scaling)
        ctx.save_for_backward(weight, lora_a, lora_b, dropped_rows, down)
        ctx.scaling, ctx.same_input, ctx.x_shape = scaling, dropped is x, x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        weight, lora_a, lora_b, dropped_rows, down = ctx.saved_tensors
        need_x, need_dropped, _, need_bias, need_a, need_b = ctx.needs_input_grad[:6]
        g = grad.reshape(-1, grad.shape[-1])
        up = (g @ lora_b).mul_(ctx.scaling)  # rows x r: d loss / d down, scaled
        grad_a = up.T @ dropped_rows if need_a else None
        grad_b = g.T @ (down * ctx.scaling) if need_b else None
        grad_x = grad_dropped = None
        if need_x:
            grad_x = g @ weight
            if ctx.same_input:  # no dropout: both paths end at x, so add in the multiply
                grad_x.addmm_(up, lora_a)
            grad_x = grad_x.view(ctx.x_shape)
        if need_dropped and not ctx.same_input:
            grad_dropped = (up @ lora_a).view(ctx.x_shape)
        grad_bias = g.sum(0) if need_bias else None
        return grad_x, grad_dropped, None, grad_bias, grad_a, grad_b, None


def _fast_path_adapter(layer, x: torch.Tensor, args, kwargs) -> str | None:
    """The active adapter when `layer` can take the fused path for this call, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    base, a, b = layer.base_layer, layer.lora_A[name], layer.lora_B[name]
    if type(base) is not torch.nn.Linear or base.weight.requires_grad or b.bias is not None or a.bias is not None:
        return None
    if not (x.dtype == base.weight.dtype == a.weight.dtype == b.weight.dtype):
        return None
    return name


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _fast_path_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    return LoraLinearFunction.apply(x, self.lora_dropout[name](x), base.weight, base.bias,
                                    self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name])


def use_fused_lora(model) -> int:
    """Route every PEFT LoRA Linear of `model` through LoraLinearFunction where it can; returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = MethodType(_fused_forward, module)
            count += 1
    return count
