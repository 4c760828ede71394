"""The fused LoRA layer: PEFT's outputs and gradients, PEFT's own forward wherever it does not apply."""

import pytest
import torch

from qwentune.training.speedups.fused_lora import use_fused_lora
from qwentune.training.speedups.lora_dropout import use_fast_lora_dropout


def lora_model(model_dir, dropout: float):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout))
    with torch.no_grad():  # B starts at zero; give the branch something to contribute
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    use_fast_lora_dropout(model)
    return model


def loss_and_grads(model, ids, seed: int):
    model.zero_grad()
    torch.manual_seed(seed)  # the same dropout masks, drawn in the same order, on both paths
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_same_loss_and_gradients_as_peft(tiny_model_dir, dropout):
    ids = torch.randint(5, 200, (2, 24), generator=torch.Generator().manual_seed(3))
    peft_model = lora_model(tiny_model_dir, dropout)
    expected_loss, expected = loss_and_grads(peft_model, ids, seed=7)
    fused = lora_model(tiny_model_dir, dropout)
    assert use_fused_lora(fused) == 2 * 7
    layer = fused.get_base_model().model.layers[0]
    nodes = {}

    def record(name):
        def hook(module, args, out):
            nodes.setdefault(name, out.grad_fn)  # the node that made this layer's output, first call
        return hook

    for block, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                         (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
        for name in names:
            getattr(block, name).register_forward_hook(record(name))
    loss, grads = loss_and_grads(fused, ids, seed=7)
    assert {type(node).__name__ for node in nodes.values()} == {"LoraGroupFunctionBackward"}  # not PEFT's path
    # Layers reading the same input are one node (q/k/v, gate/up); o and down one each.
    assert nodes["q_proj"] is nodes["k_proj"] is nodes["v_proj"] and nodes["gate_proj"] is nodes["up_proj"]
    assert len({id(node) for node in nodes.values()}) == 4
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == expected.keys() and len(grads) == 2 * 2 * 7
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_disabled_adapter_and_eval_mode_follow_peft(tiny_model_dir):
    model = lora_model(tiny_model_dir, 0.1)
    ids = torch.randint(5, 200, (1, 16), generator=torch.Generator().manual_seed(4))
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        use_fused_lora(model)
        torch.testing.assert_close(model(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():  # the base side of a comparison: PEFT's path, adapter off
            torch.testing.assert_close(model(input_ids=ids).logits, base, rtol=0, atol=0)
    assert not torch.allclose(adapted, base)  # the adapter does change the answer


def test_a_layer_off_the_fast_path_leaves_its_group_mates_on_it(tiny_model_dir):
    def with_k_bias(model):  # a bias on lora_B is beyond the fused path: k_proj must run PEFT's forward
        with torch.no_grad():
            for layer in model.get_base_model().model.layers:
                k_proj = layer.self_attn.k_proj
                k_proj.lora_B["default"].bias = torch.nn.Parameter(torch.full((k_proj.out_features,), 0.01))
        return model

    ids = torch.randint(5, 200, (2, 24), generator=torch.Generator().manual_seed(3))
    expected_loss, expected = loss_and_grads(with_k_bias(lora_model(tiny_model_dir, 0.0)), ids, seed=7)
    fused = with_k_bias(lora_model(tiny_model_dir, 0.0))
    use_fused_lora(fused)
    attention = fused.get_base_model().model.layers[0].self_attn
    nodes = {}
    for name in ("q_proj", "k_proj", "v_proj"):
        getattr(attention, name).register_forward_hook(
            lambda module, args, out, name=name: nodes.__setitem__(name, type(out.grad_fn).__name__))
    loss, grads = loss_and_grads(fused, ids, seed=7)
    assert nodes == {"q_proj": "LoraGroupFunctionBackward", "k_proj": "AddBackward0",
                     "v_proj": "LoraGroupFunctionBackward"}
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_checkpointing_recomputes_the_same_groups_and_masks(tiny_model_dir):
    """Checkpointing re-runs each layer in backward: the groups and their dropout masks must come out the same."""
    ids = torch.randint(5, 200, (2, 24), generator=torch.Generator().manual_seed(3))
    plain = lora_model(tiny_model_dir, 0.1).train()  # from_pretrained leaves the base in eval mode
    use_fused_lora(plain)
    expected_loss, expected = loss_and_grads(plain, ids, seed=7)
    checkpointed = lora_model(tiny_model_dir, 0.1).train()  # layers checkpoint only in training mode
    use_fused_lora(checkpointed)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed.enable_input_require_grads()
    calls = []
    q_proj = checkpointed.get_base_model().model.layers[0].self_attn.q_proj
    q_proj.register_forward_hook(lambda module, args, out: calls.append(type(out.grad_fn).__name__))
    loss, grads = loss_and_grads(checkpointed, ids, seed=7)
    assert calls == ["LoraGroupFunctionBackward"] * 2  # forward, then again in backward: checkpointing ran
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
