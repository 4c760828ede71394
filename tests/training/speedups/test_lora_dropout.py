"""The CPU LoRA dropout: nn.Dropout's per-element semantics, fewer random draws, shared by q/k/v."""

import torch

from qwentune.training.speedups.lora_dropout import FastDropout, use_fast_lora_dropout


def test_drops_the_right_share_unbiased_and_only_in_training():
    torch.manual_seed(0)
    dropout = FastDropout(0.1)
    x = torch.rand(1000, 1000) + 0.5
    y = dropout(x) / x
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002  # 1M draws: the standard error is 0.0003
    assert abs(y.mean().item() - 1.0) < 0.003  # kept values are scaled up: the expectation is unchanged
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 65536 / 58982))
    # Elements are independent: neighbouring lanes of one 64-bit draw are uncorrelated.
    lanes = (y.flatten()[: 4 * 200_000].view(-1, 4) != 0).float()
    correlation = torch.corrcoef(lanes.T)
    assert (correlation - torch.eye(4)).abs().max() < 0.01
    dropout.eval()
    assert dropout(x) is x


def test_branches_reading_the_same_tensor_share_one_mask():
    torch.manual_seed(0)
    q, k = FastDropout(0.1), FastDropout(0.1)
    x, other = torch.randn(64, 32), torch.randn(64, 32)
    assert q(x) is k(x)  # q/k/v of one layer: one dropped-out copy
    assert not torch.equal(q(other) != 0, q(x.clone()) != 0)  # any other tensor: a fresh mask
    assert not torch.equal(q(x.clone()) != 0, k(x.clone()) != 0)


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    dropout = FastDropout(0.3)
    y = dropout(x)
    (y + dropout(x)).sum().backward()  # two branches on one input: both gradients arrive
    torch.testing.assert_close(x.grad, 2 * torch.where(y != 0, y / x, torch.zeros_like(y)).detach())


def test_lora_branches_get_it(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.1))
    assert use_fast_lora_dropout(model) == 2 * 7  # two layers, seven projections each
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
