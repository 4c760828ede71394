"""The fused RMSNorm: transformers' forward exactly, autograd's gradients, only where the formula is Llama's."""

import torch

from qwentune.training.speedups.fused_norm import RMSNormFunction, use_fused_rms_norm


def reference(x, weight, eps):  # transformers' LlamaRMSNorm.forward
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def test_same_output_and_gradients_as_autograd():
    torch.manual_seed(0)
    x = (torch.randn(3, 17, 64) * 3).requires_grad_()
    weight = (torch.randn(64) + 1).requires_grad_()
    grad = torch.randn(3, 17, 64)
    expected = reference(x, weight, 1e-6)
    expected_x, expected_w = torch.autograd.grad(expected, (x, weight), grad)
    out = RMSNormFunction.apply(x, weight, 1e-6)
    got_x, got_w = torch.autograd.grad(out, (x, weight), grad)
    assert torch.equal(out, expected)
    torch.testing.assert_close(got_x, expected_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_w, expected_w, rtol=1e-5, atol=1e-5)


def test_switches_llama_style_norms_only(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    class OnePlusWeightNorm(torch.nn.Module):  # Gemma's formula: must keep its own forward
        variance_epsilon = 1e-6

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(8))

        def forward(self, x):
            return x * (1 + self.weight)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.randint(5, 200, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        assert use_fused_rms_norm(model) == 2 * 2 + 1  # two per layer and the final one
        assert torch.equal(model(input_ids=ids).logits, before)
    assert use_fused_rms_norm(OnePlusWeightNorm()) == 0
