"""Padding-free packing: examples packed in one row see nothing of each other."""

import pytest
import torch

from qwentune.data.collate import pack_batch
from qwentune.training.speedups import attention_implementation
from qwentune.training.speedups.packed_attention import NAME as PACKED
from tests.helpers import examples_of


@pytest.mark.parametrize("attention", ["packed", "sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(tiny_model_dir, attention, per_example_attention_calls):
    """Per-example attention (qwentune's), and transformers' own mask from position ids (sdpa, eager)."""
    from contextlib import nullcontext

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa" if attention == "packed"
                                                 else attention).eval()
    examples = examples_of([9, 4, 1, 13, 6, 2], vocab=model.config.vocab_size)
    batch = pack_batch(examples)
    with torch.no_grad(), attention_implementation(model, PACKED) if attention == "packed" else nullcontext():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
    assert model.config._attn_implementation == ("sdpa" if attention == "packed" else attention)  # restored
    # qwentune's kernel ran, in both layers, rather than a fallback to sdpa (that one is tested apart)
    assert len(per_example_attention_calls) == (2 if attention == "packed" else 0)
    start = 0
    with torch.no_grad():
        for example in examples:
            end = start + len(example["input_ids"])
            alone = model(input_ids=torch.tensor([example["input_ids"]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:end], alone, rtol=1e-5, atol=1e-5)
            start = end


def test_packed_gradients_equal_the_sum_over_examples_alone(tiny_model_dir):
    """Isolation holds in backward too: no example's loss moves another example's gradient."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").train()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped key/value heads
    examples = examples_of([9, 4, 1, 13, 6, 2], vocab=model.config.vocab_size)
    batch = pack_batch(examples)
    torch.manual_seed(0)
    weights = torch.randn(batch["input_ids"].shape[1], model.config.vocab_size)

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    with attention_implementation(model, PACKED):
        packed = gradients((model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                  use_cache=False).logits[0] * weights).sum())
    alone = {name: torch.zeros_like(g) for name, g in packed.items()}
    start = 0
    for example in examples:
        end = start + len(example["input_ids"])
        logits = model(input_ids=torch.tensor([example["input_ids"]]), use_cache=False).logits[0]
        for name, g in gradients((logits * weights[start:end]).sum()).items():
            alone[name] += g
        start = end
    for name, g in packed.items():
        torch.testing.assert_close(g, alone[name], rtol=1e-5, atol=1e-5 * g.abs().max().item(), msg=name)


def test_packed_attention_leaves_padded_batches_to_sdpa(tiny_model_dir):
    """With an attention mask (padding) the packed implementation must give sdpa's answer."""
    from transformers import AutoModelForCausalLM

    from qwentune.data.collate import pad_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    padded = pad_batch(examples_of([9, 4, 6], vocab=model.config.vocab_size), pad_token_id=0)
    left = {"input_ids": padded["input_ids"].flip(1), "attention_mask": padded["attention_mask"].flip(1)}
    for batch in (padded, left):  # right padding (training) and left padding (generation)
        with torch.no_grad():
            plain = model(**batch).logits
            with attention_implementation(model, PACKED):
                switched = model(**batch).logits
        keep = batch["attention_mask"].bool()
        torch.testing.assert_close(switched[keep], plain[keep])
