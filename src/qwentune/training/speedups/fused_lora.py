"""LoRA linear layers computed as one autograd node per group of layers that read the same input.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` layer by layer, as separate ops:
for every layer a dropout pass, a scale and an add over the output in forward, and in backward
a mask pass plus the adds that sum the gradients of the layers sharing an input (q/k/v read the
attention input, gate/up the MLP input). Here such a group is one node:
- the base products are accumulated onto the low-rank products by the matrix multiply itself
  (`addmm_` with beta = scaling), so a 16-bit output is rounded once, with the adapter's part in it;
- the group's rank-r down projections are one multiply (the A matrices stacked), in both passes;
- the dropout mask is 0/1 from 16-bit random lanes (see lora_dropout.py), its 1/keep scale folded
  into the scaling, and only the lanes are kept for backward;
- the input gradient is accumulated in place: the base layers' products with `addmm_`, the LoRA
  part through the mask with one `addcmul_`.
Scalings are applied to the rank-r factors, which are tiny. The LoRA weights stay PEFT's own
parameters, so saving, loading and merging are unchanged.

The layers of a group share one dropout mask, as FastDropout's do on PEFT's path. The fast path
is taken only for plain LoRA on nn.Linear with one active adapter, unmerged, frozen base weights,
the adapter in the base's dtype or in fp32, and FastDropout (or no dropout); anything else (DoRA, several adapters, disabled
adapters, 4-bit layers, mixed-batch inference) runs PEFT's forward. Outputs and gradients equal
PEFT's up to float rounding (tests/training/speedups/test_fused_lora.py).
"""

from __future__ import annotations

import weakref
from types import MethodType

import torch

from ...models.lora_precision import active_plain_adapter, lora_forward_in_accumulator
from .lora_dropout import LANES, FastDropout, keep_mask, random_lanes

# Layers of one attention / MLP block that are called on the same tensor (Llama, Qwen2, Mistral...).
SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class LoraGroupFunction(torch.autograd.Function):
    """For each layer i: x @ W_i.T + b_i + s_i * ((x * mask) @ A_i.T) @ B_i.T, mask from `bits` (or none).

    `tensors` holds weight, bias, lora_A, lora_B for each layer in turn; `scalings` the s_i, with
    the dropout's 1/keep scale already folded in.
    """

    @staticmethod
    def forward(ctx, x, bits, threshold: int, scalings: tuple[float, ...], *tensors):
        weights, biases, lora_as, lora_bs = tensors[0::4], tensors[1::4], tensors[2::4], tensors[3::4]
        ctx.adapter_dtype = lora_as[0].dtype
        # fp32 adapters on 16-bit base weights run in the base's dtype, as under autocast (the factors are tiny).
        lora_as, lora_bs = [a.to(x.dtype) for a in lora_as], [b.to(x.dtype) for b in lora_bs]
        rows = x.reshape(-1, x.shape[-1])
        dropped = rows if bits is None else rows * keep_mask(bits, threshold, rows)
        stacked_a = torch.cat(lora_as) if len(lora_as) > 1 else lora_as[0]
        down = dropped @ stacked_a.T  # rows x (layers * r)
        outputs, start = [], 0
        for weight, bias, lora_a, lora_b, scaling in zip(weights, biases, lora_as, lora_bs, scalings):
            # The LoRA product first, then the base product accumulated onto it in the same multiply: one
            # rounding of base + LoRA, so a 16-bit output keeps the adapter's small contribution
            # (models/lora_precision.py has the measurement); the bias comes last for the same reason.
            out = down[:, start:start + lora_a.shape[0]] @ lora_b.T
            out.addmm_(rows, weight.T, beta=scaling)
            if bias is not None:
                out.add_(bias)
            outputs.append(out.view(*x.shape[:-1], out.shape[-1]))
            start += lora_a.shape[0]
        ctx.save_for_backward(dropped, down, bits, stacked_a, *weights, *lora_bs)
        ctx.scalings, ctx.threshold, ctx.x_shape = scalings, threshold, x.shape
        ctx.ranks = [a.shape[0] for a in lora_as]
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        dropped, down, bits, stacked_a, *rest = ctx.saved_tensors
        layers = len(ctx.scalings)
        weights, lora_bs = rest[:layers], rest[layers:]
        needs = ctx.needs_input_grad
        gs = [g.reshape(-1, g.shape[-1]) for g in grads]
        # d loss / d down, scaled, for all layers side by side: rows x (layers * r).
        up = torch.cat([(g @ lora_b).mul_(s) for g, lora_b, s in zip(gs, lora_bs, ctx.scalings)], dim=1)
        grad_stacked_a = up.T @ dropped if any(needs[6::4]) else None
        grad_x = None
        if needs[0]:
            grad_x = gs[0] @ weights[0]
            for g, weight in zip(gs[1:], weights[1:]):
                grad_x.addmm_(g, weight)
            if bits is None:  # no dropout: the LoRA path ends at x too, so add it in the multiply
                grad_x.addmm_(up, stacked_a)
            else:
                grad_x.addcmul_(up @ stacked_a, keep_mask(bits, ctx.threshold, grad_x))
            grad_x = grad_x.view(ctx.x_shape)
        per_layer, start = [], 0
        for i, (g, rank, scaling) in enumerate(zip(gs, ctx.ranks, ctx.scalings)):
            need_bias, need_a, need_b = needs[5 + 4 * i], needs[6 + 4 * i], needs[7 + 4 * i]
            grad_b = (g.T @ (down[:, start:start + rank] * scaling)).to(ctx.adapter_dtype) if need_b else None
            grad_a = grad_stacked_a[start:start + rank].to(ctx.adapter_dtype) if need_a else None
            per_layer += [None, g.sum(0) if need_bias else None, grad_a, grad_b]
            start += rank
        return (grad_x, None, None, None, *per_layer)


def _fast_path_adapter(layer, x: torch.Tensor, args, kwargs) -> str | None:
    """The active adapter when `layer` can take the fused path for this call, else None."""
    name = active_plain_adapter(layer, args, kwargs)
    if name is None or layer.base_layer.weight.requires_grad:
        return None
    weight, a, b = layer.base_layer.weight, layer.lora_A[name].weight, layer.lora_B[name].weight
    # The adapter in the base's dtype, or in fp32 on 16-bit base weights (PEFT keeps adapters in fp32).
    if x.dtype != weight.dtype or a.dtype != b.dtype or a.dtype not in (x.dtype, torch.float32):
        return None
    if _keep_lanes(layer.lora_dropout[name]) is None:
        return None
    return name


def _keep_lanes(dropout) -> int | None:
    """LANES when the branch has no dropout now, FastDropout's keep_lanes when it has; None for other dropouts."""
    if isinstance(dropout, torch.nn.Identity) or not dropout.training or getattr(dropout, "p", None) == 0.0:
        return LANES
    return dropout.keep_lanes if isinstance(dropout, FastDropout) else None


class _Group:
    """LoRA layers called on the same tensor: the first call computes every layer's output, the others take theirs."""

    def __init__(self, layers) -> None:
        self.layers = list(layers)
        self._input = None
        self._pending: dict = {}

    def forward(self, layer, x: torch.Tensor, args, kwargs) -> torch.Tensor | None:
        if self._input is not None and self._input() is x and layer in self._pending:
            return self._pending.pop(layer)
        name = _fast_path_adapter(layer, x, args, kwargs)
        if name is None:
            return None
        keep = _keep_lanes(layer.lora_dropout[name])
        members = self.layers if all(
            _fast_path_adapter(m, x, (), {}) == name and _keep_lanes(m.lora_dropout[name]) == keep
            for m in self.layers) else [layer]
        bits = None if keep == LANES else random_lanes(x.shape, x.device).view(-1, x.shape[-1])
        tensors = []
        for m in members:
            tensors += [m.base_layer.weight, m.base_layer.bias, m.lora_A[name].weight, m.lora_B[name].weight]
        scalings = tuple(m.scaling[name] * LANES / keep for m in members)
        outputs = LoraGroupFunction.apply(x, bits, keep - LANES // 2, scalings, *tensors)
        self._input = weakref.ref(x)
        self._pending = {m: out for m, out in zip(members, outputs) if m is not layer}
        return outputs[members.index(layer)]


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    out = self._qwentune_group.forward(self, x, args, kwargs)
    return lora_forward_in_accumulator(self, x, *args, **kwargs) if out is None else out


def use_fused_lora(model) -> int:
    """Route every PEFT LoRA Linear of `model` through LoraGroupFunction where it can; returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    grouped = {}
    for parent in model.modules():
        for names in SHARED_INPUT:
            layers = [getattr(parent, name, None) for name in names]
            if all(type(layer) is LoraLinear for layer in layers) and len({layer.in_features for layer in layers}) == 1:
                group = _Group(layers)
                grouped.update({layer: group for layer in layers})
    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module._qwentune_group = grouped.get(module) or _Group([module])
            module.forward = MethodType(_fused_forward, module)
            count += 1
    return count
