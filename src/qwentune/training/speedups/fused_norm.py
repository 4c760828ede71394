"""RMSNorm as one autograd node with a hand-written backward.

transformers' Llama-style RMSNorm (Qwen2, Qwen3, Llama, Mistral, SmolLM2) is five tensor ops,
each recorded by autograd; its backward replays them, about ten passes over the hidden states.
The backward here is four: with r = rsqrt(mean(x^2) + eps) and y = w * x * r,
dL/dx = r * (g*w) - x * r^3 * mean(g*w*x). The forward computes exactly what transformers does;
the gradients equal autograd's up to float rounding (tests/training/speedups/test_fused_norm.py). Measured on
a 2-core CPU at 450 x 576: forward + backward 0.49 ms instead of 1.07 ms.

Only modules whose forward is byte-for-byte Llama's are switched (compared by bytecode, so
variants such as Gemma's `1 + weight` keep their own), and only when weight and input share a
dtype (the in-place multiply would otherwise change the result's dtype).
"""

from __future__ import annotations

from types import MethodType

import torch


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps: float):
        xf = x.float()
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, r)
        return (xf * r).to(x.dtype).mul_(weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight, r = ctx.saved_tensors
        xf = x.float()
        gw = (grad * weight).float()
        mean_gwx = torch.linalg.vecdot(gw, xf, dim=-1).unsqueeze(-1).div_(x.shape[-1])
        grad_x = gw.mul_(r).addcmul_(xf, mean_gwx.mul_(r.pow(3)), value=-1.0).to(x.dtype)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad.float() * (xf * r)).flatten(0, -2).sum(0).to(weight.dtype)
        return grad_x, grad_weight, None


def _code_key(function) -> tuple:
    code = function.__code__
    return code.co_code, code.co_names, code.co_consts, code.co_varnames


def _fused_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if hidden_states.dtype != self.weight.dtype:
        return type(self).forward(self, hidden_states)
    return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


def use_fused_rms_norm(model) -> int:
    """Switch every Llama-style RMSNorm in `model` to RMSNormFunction; returns how many."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    reference = _code_key(LlamaRMSNorm.forward)
    count = 0
    for module in model.modules():
        forward = getattr(type(module), "forward", None)
        if hasattr(module, "variance_epsilon") and forward is not None and hasattr(forward, "__code__") \
                and _code_key(forward) == reference:
            module.forward = MethodType(_fused_forward, module)
            count += 1
    return count
