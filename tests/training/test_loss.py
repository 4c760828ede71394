"""The lean loss head: same loss and gradients as the naive full-logits path."""

import pytest
import torch

from qwentune.data.collate import pack_batch, pad_batch
from qwentune.data.tokenize import IGNORE_INDEX
from qwentune.training.loss import (
    LeanLoss,
    LinearCrossEntropySum,
    chunked_head,
    lean_head_supported,
    shifted_targets,
)
from qwentune.training.speedups import attention_implementation
from qwentune.training.speedups.packed_attention import NAME as PACKED
from tests.helpers import examples_of


# A trained head (weight and bias gradients), and the usual LoRA case: a frozen head, gradient
# for the hidden states only (which takes a path of its own).
@pytest.mark.parametrize("with_bias,train_head", [(False, True), (True, True), (False, False), (True, False)])
def test_chunked_cross_entropy_matches_naive_at_qwen_vocabulary(with_bias, train_head):
    torch.manual_seed(0)
    vocab, hidden_size, rows = 151_936, 32, 40
    hidden = torch.randn(rows, hidden_size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, dtype=torch.float64) * 0.3
    weight[-3000:] *= 3  # the largest logits come late: the frozen head's running sums must be rescaled
    weight.requires_grad_(train_head)
    bias = torch.randn(vocab, dtype=torch.float64, requires_grad=train_head) if with_bias else None
    targets = torch.randint(0, vocab, (rows,))
    wrt = [hidden] + ([weight] + ([bias] if with_bias else []) if train_head else [])

    naive = torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, weight, bias), targets,
                                              reduction="sum")
    naive_grads = torch.autograd.grad(naive * 0.5, wrt)
    # 6 chunks of rows (a trained head) or 6 x 38 blocks (a frozen one), the last ones short
    lean = LinearCrossEntropySum.apply(hidden, weight, bias, targets, 7, 4000)
    lean_grads = torch.autograd.grad(lean * 0.5, wrt)

    # The loss is accumulated in fp32 whatever the input dtype.
    torch.testing.assert_close(lean.double(), naive, rtol=1e-6, atol=1e-4)
    for a, b in zip(lean_grads, naive_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_frozen_head_in_bfloat16_follows_float32():
    torch.manual_seed(0)
    vocab, hidden_size, rows = 10_000, 64, 24
    hidden = torch.randn(rows, hidden_size, requires_grad=True)
    weight = torch.randn(vocab, hidden_size) * 0.3
    targets = torch.randint(0, vocab, (rows,))
    exact = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    (exact_grad,) = torch.autograd.grad(exact, hidden)
    low = hidden.detach().bfloat16().requires_grad_()
    lean = LinearCrossEntropySum.apply(low, weight.bfloat16(), None, targets, 7, 3000)
    (lean_grad,) = torch.autograd.grad(lean, low)
    assert lean.dtype == torch.float32 and lean_grad.dtype == torch.bfloat16
    torch.testing.assert_close(lean, exact, rtol=1e-2, atol=0)
    torch.testing.assert_close(lean_grad.float(), exact_grad, rtol=0, atol=0.05 * exact_grad.abs().max().item())


def test_no_gradient_work_without_grad():
    hidden, weight = torch.randn(5, 8), torch.randn(50, 8)
    with torch.no_grad():
        loss = LinearCrossEntropySum.apply(hidden, weight, None, torch.randint(0, 50, (5,)), 2, 16)
    assert loss.shape == () and not loss.requires_grad


def lora_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                             init_lora_weights=False))  # non-zero B: gradients reach A too
    return model


def lora_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_lean_loss_on_packed_rows_equals_naive_loss_on_padded_rows(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    causal_lm = model.get_base_model()
    assert lean_head_supported(causal_lm)
    examples = examples_of([9, 4, 13, 6, 2, 11], vocab=causal_lm.config.vocab_size)
    labelled = sum(sum(label != IGNORE_INDEX for label in e["labels"][1:]) for e in examples)

    padded = pad_batch(examples, pad_token_id=0)
    naive = model(**padded).loss  # transformers' own loss: mean over labelled tokens
    naive.backward()
    naive_grads = lora_grads(model)
    model.zero_grad()

    packed = pack_batch(examples)
    lean_loss = LeanLoss(causal_lm)
    with attention_implementation(causal_lm, PACKED):  # the training path: per-example attention
        total, outputs = lean_loss(model, packed["input_ids"], packed["shift_labels"],
                                   position_ids=packed["position_ids"])
    lean = total / labelled
    assert outputs.logits.shape[1] == 1  # the full logits were never computed
    lean.backward()
    lean_grads = lora_grads(model)

    torch.testing.assert_close(lean, naive, rtol=1e-5, atol=1e-6)
    assert naive_grads.keys() == lean_grads.keys() and len(naive_grads) > 0
    for name in naive_grads:
        torch.testing.assert_close(lean_grads[name], naive_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lean_loss_gives_its_kernel_the_labelled_rows_only(tiny_model_dir):
    """The contract another head kernel (Liger's fused linear cross-entropy on CUDA) is given: the hidden states
    and targets of the labelled positions, the head's weight and bias; what it returns is the summed loss."""
    model = lora_model(tiny_model_dir)
    causal_lm = model.get_base_model()
    packed = pack_batch(examples_of([9, 4, 13], vocab=causal_lm.config.vocab_size))
    labelled = int((packed["shift_labels"] != IGNORE_INDEX).sum())
    calls = []

    def recording_kernel(hidden, weight, bias, targets):
        calls.append((hidden.shape, weight, bias, targets))
        return chunked_head(hidden, weight, bias, targets)

    default = LeanLoss(causal_lm)
    expected, _ = default(model, packed["input_ids"], packed["shift_labels"], position_ids=packed["position_ids"])
    default.remove()
    total, _ = LeanLoss(causal_lm, recording_kernel)(model, packed["input_ids"], packed["shift_labels"],
                                                     position_ids=packed["position_ids"])
    ((shape, weight, bias, targets),) = calls
    assert shape == (labelled, causal_lm.config.hidden_size) and targets.shape == (labelled,)
    assert (targets != IGNORE_INDEX).all()
    assert weight is causal_lm.get_output_embeddings().weight and bias is causal_lm.get_output_embeddings().bias
    torch.testing.assert_close(total, expected)


def test_shifted_targets():
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, IGNORE_INDEX]])
    assert shifted_targets(labels).tolist() == [[5, 6, IGNORE_INDEX, IGNORE_INDEX]]
