"""Liger's kernels under qwentune: the LoRA adapters still train through the patched MLP, and Liger's fused
head gives the chunked head's loss and gradients. They need a CUDA GPU and liger-kernel, so they run on a GPU
machine (pip install -e '.[gpu,test]'; pytest tests/training/speedups/test_liger.py) and are skipped elsewhere."""

import pytest
import torch

from qwentune.training.loss import chunked_head
from qwentune.training.speedups.cuda_packages import LIGER_KERNEL, usable_packages

pytestmark = pytest.mark.skipif(LIGER_KERNEL not in usable_packages("cuda"), reason="needs CUDA and liger-kernel")


def test_fused_head_equals_the_chunked_head():
    from qwentune.training.speedups.liger import fused_linear_cross_entropy_sum

    torch.manual_seed(0)
    vocab, hidden_size, rows = 151_936, 64, 300
    weight = (torch.randn(vocab, hidden_size, device="cuda") * 0.3).bfloat16()
    targets = torch.randint(0, vocab, (rows,), device="cuda")
    hidden = torch.randn(rows, hidden_size, device="cuda").bfloat16().requires_grad_()
    results = []
    for kernel in (chunked_head, fused_linear_cross_entropy_sum):
        total = kernel(hidden, weight, None, targets)
        (grad,) = torch.autograd.grad(total, hidden)
        results.append((total.float(), grad.float()))
    (ours, our_grad), (liger, liger_grad) = results
    torch.testing.assert_close(liger, ours, rtol=2e-3, atol=0)
    torch.testing.assert_close(liger_grad, our_grad, rtol=0, atol=0.02 * our_grad.abs().max().item())
    empty = fused_linear_cross_entropy_sum(hidden[:0], weight, None, targets[:0])
    assert empty.item() == 0.0


def test_lora_trains_through_the_patched_model(tiny_model_dir):
    from qwentune.config import load_config
    from qwentune.models.load import load_model
    from qwentune.models.lora import apply_lora
    from qwentune.models.precision import choose_precision
    from qwentune.training.speedups.liger import FUSED_HEAD, use_liger_kernels

    cfg = load_config(None, [("model_name_or_path", str(tiny_model_dir)), ("lora_dropout", 0.0)])
    model = apply_lora(load_model(str(tiny_model_dir), choose_precision(device="cuda")), cfg)
    causal_lm = model.get_base_model()
    ids = torch.randint(0, causal_lm.config.vocab_size, (1, 24), device="cuda")
    with torch.autocast("cuda", dtype=causal_lm.dtype):
        before = model(input_ids=ids, use_cache=False).logits.float()
    names = use_liger_kernels(causal_lm, fused_head=True, insist=True)
    assert {"liger_rope", "liger_rms_norm", "liger_swiglu", FUSED_HEAD} <= set(names), names
    with torch.autocast("cuda", dtype=causal_lm.dtype):
        after = model(input_ids=ids, use_cache=False).logits.float()
    torch.testing.assert_close(after, before, rtol=0.05, atol=0.05)
    after.logsumexp(-1).mean().backward()
    # gate/up/down stay PEFT's LoRA layers under Liger's MLP forward: their adapters get gradients
    for name, parameter in model.named_parameters():
        if "mlp" in name and "lora_B" in name:  # B starts at zero, so A has no gradient yet
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
