"""LoRA on 16-bit base weights: the adapter's output is added inside the base multiply, not after it.

PEFT computes `result = base_layer(x)` and then `result + lora_B(lora_A(dropout(x))) * scaling`.
With bf16 base weights `base_layer(x)` is already rounded to bf16 (8 significant bits), so the
sum is round(round(x W^T) + delta): wherever the adapter's contribution delta is smaller than half
a bf16 step of the output, which is most of it early in training and much of it after, it is
rounded away — exactly, not as noise. Measured on the training benchmark's job (SmolLM2-135M,
an adapter trained in fp32, 16 held-out rows, bf16 GEMMs accumulating in fp32 as native bf16
hardware does): held-out loss 2.1800 in fp32, 2.1915 with PEFT's order in bf16 — the bf16 forward
lost 0.0115 of the 0.0295 the fine-tuning had gained — and 2.1829 with the order here, where the
base model alone moves by 0.0018 between fp32 and bf16.

Here delta is computed first and the base product accumulates onto it in one `addmm`: BLAS and
oneDNN / cuBLAS bf16 GEMMs add C to their fp32 accumulator before the one rounding, so the output
is round(x W^T + delta) and delta survives in expectation (tests/models/test_lora_precision.py).
The bias, when there is one, is added afterwards (adding it to delta first would round delta away
against the bias). Same FLOPs as PEFT's order; in fp32 the two orders differ by float rounding
only, so layers with fp32 base weights keep PEFT's own forward.

Only plain LoRA on an nn.Linear with one active, unmerged adapter takes this path; DoRA, several
adapters, mixed-batch `adapter_names`, disabled adapters and 4-bit base layers run PEFT's forward.
"""

from __future__ import annotations

from types import MethodType

import torch

SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def active_plain_adapter(layer, args=(), kwargs=None) -> str | None:
    """The one active plain-LoRA adapter of PEFT LoRA `layer` when it can run as base multiply + LoRA branch:
    one active, unmerged adapter, no DoRA or other variant, bias-free LoRA factors, a plain nn.Linear base,
    and no extra forward arguments (`args`, `kwargs`: PEFT's adapter_names and the like); else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if type(layer.base_layer) is not torch.nn.Linear or layer.lora_A[name].bias is not None \
            or layer.lora_B[name].bias is not None:
        return None
    return name


def lora_forward_in_accumulator(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """PEFT LoRA Linear `layer` on x (..., in_features): round(x W^T + delta) + bias, delta = the LoRA
    branch, when the base weight is bf16 / fp16 and the layer is plain LoRA; otherwise PEFT's own
    forward. Returns (..., out_features) in the base weight's dtype (the autocast dtype under autocast)."""
    base = layer.base_layer
    # The dtype first: with fp32 weights (CPU training and answering) this is the one check per call.
    name = active_plain_adapter(layer, args, kwargs) if base.weight.dtype in SIXTEEN_BIT else None
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
    # PEFT's own expression for the branch (its input cast, its dropout), in the adapter's dtype.
    delta = lora_b(lora_a(layer.lora_dropout[name](layer._cast_input_dtype(x, lora_a.weight.dtype))))
    delta = delta * layer.scaling[name]
    weight = base.weight
    rows = x.reshape(-1, x.shape[-1])
    if not torch.is_autocast_enabled(x.device.type):
        rows, delta = rows.to(weight.dtype), delta.to(weight.dtype)
    out = torch.addmm(delta.reshape(-1, weight.shape[0]), rows, weight.t())
    if base.bias is not None:
        out = out + base.bias
    return out.view(*x.shape[:-1], weight.shape[0])


def add_lora_inside_base_multiply(model) -> int:
    """Route every PEFT LoRA Linear of `model` (a PeftModel) through lora_forward_in_accumulator; returns
    how many. Layers whose base weights are fp32 (or that are not plain LoRA) keep PEFT's forward."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = MethodType(lora_forward_in_accumulator, module)
            count += 1
    return count
