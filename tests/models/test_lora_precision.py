"""LoRA on bf16 base weights: the adapter's small contribution must survive the 16-bit output.

PEFT's order, round(round(x W^T) + delta), rounds a delta below half a bf16 step away exactly; the
order of models/lora_precision.py, round(x W^T + delta), keeps it in expectation. The first test
shows PEFT's order failing; the fused CPU training kernel failed the same check before it took this order."""

import torch

from qwentune.models.lora_precision import lora_forward_in_accumulator


def lora_layer(dtype, delta_over_output=5e-4):
    """A PEFT LoRA Linear on a 256 -> 128 base whose branch adds delta_over_output of the outputs' mean size.

    5e-4 is about a seventh of a bf16 step: the median of a real adapter (SmolLM2-135M after the
    benchmark job's 16 steps, every projection, 128 tokens), where 80% of the outputs' LoRA parts
    were below half a step."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    net = get_peft_model(torch.nn.Sequential(torch.nn.Linear(256, 128, bias=True)),
                         LoraConfig(r=8, lora_alpha=16, target_modules=["0"], lora_dropout=0.0))
    layer = net.base_model.model[0]
    probe = torch.randn(64, 256)
    with torch.no_grad():
        torch.nn.init.normal_(layer.lora_B["default"].weight)
        ratio = _exact_delta(layer, probe).abs().mean() / layer.base_layer(probe).abs().mean()
        layer.lora_B["default"].weight.mul_(delta_over_output / ratio.item())
    layer.base_layer.to(dtype)
    return layer


def adapter_shift(layer, forward, x):
    """Mean change the adapter makes to the outputs (in the direction of its exact change), as a fraction of
    the mean exact change computed in float64."""
    with torch.no_grad():
        base = layer.base_layer(x).double()
        shifted = forward(layer, x).double()
        exact = _exact_delta(layer, x)
    return ((shifted - base) * exact.sign()).mean().item() / exact.abs().mean().item()


def _exact_delta(layer, x):
    a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
    return (x.double() @ a.T @ b.T) * layer.scaling["default"]


def test_peft_order_rounds_a_small_adapter_away_and_ours_keeps_it():
    layer = lora_layer(torch.bfloat16)
    x = torch.randn(64, 256).to(torch.bfloat16)
    peft_order = adapter_shift(layer, lambda layer, x: type(layer).forward(layer, x), x)
    ours = adapter_shift(layer, lora_forward_in_accumulator, x)
    assert peft_order < 0.5, peft_order  # PEFT's forward on bf16 weights: most of the adapter's part is gone
    assert 0.8 < ours < 1.2, ours  # kept in expectation


def test_fp32_base_weights_keep_peft_forward_exactly():
    layer = lora_layer(torch.float32, delta_over_output=0.1)
    x = torch.randn(16, 256)
    with torch.no_grad():
        assert torch.equal(lora_forward_in_accumulator(layer, x), type(layer).forward(layer, x))


def test_the_fused_cpu_training_kernel_keeps_it_too_and_runs_fp32_adapters_on_bf16_weights():
    from qwentune.training.speedups.fused_lora import LoraGroupFunction, _fast_path_adapter

    layer = lora_layer(torch.bfloat16)
    x = torch.randn(64, 256).to(torch.bfloat16)
    assert layer.lora_A["default"].weight.dtype == torch.float32  # PEFT's adapter dtype on 16-bit weights
    assert _fast_path_adapter(layer, x, (), {}) == "default"  # the fused kernel runs on bf16 CPUs

    def fused(layer, x):
        base = layer.base_layer
        return LoraGroupFunction.apply(x, None, 0, (layer.scaling["default"],), base.weight, base.bias,
                                       layer.lora_A["default"].weight, layer.lora_B["default"].weight)[0]

    assert 0.8 < adapter_shift(layer, fused, x) < 1.2
