"""Padding-free packing: examples packed in one row see nothing of each other."""

import pytest
import torch

from qwentune.data.collate import pack_batch
from qwentune.data.tokenize import IGNORE_INDEX

from .conftest import examples_of


def test_pack_batch_layout():
    examples = examples_of([7, 3, 5, 4])
    batch = pack_batch(examples, pad_token_id=0, row_tokens=10)
    # First-fit decreasing: [7, 3] and [5, 4] -> two rows of width 10 with one pad at the end of the second.
    assert batch["input_ids"].shape == (2, 10)
    assert batch["position_ids"].tolist() == [[*range(7), *range(3)], [*range(5), *range(4), 0]]
    for key in ("input_ids", "labels", "shift_labels", "position_ids"):
        assert batch[key].dtype == torch.long
    row = batch["shift_labels"][0].tolist()
    assert row[6] == IGNORE_INDEX and row[9] == IGNORE_INDEX  # each example's last token predicts nothing
    assert row[:6] == examples[0]["labels"][1:]
    assert batch["labels"][1, -1] == IGNORE_INDEX and batch["input_ids"][1, -1] == 0
    # Every labelled token survives exactly once.
    assert (batch["shift_labels"] != IGNORE_INDEX).sum() == sum(
        sum(label != IGNORE_INDEX for label in e["labels"][1:]) for e in examples)


def test_rows_widen_to_the_longest_example():
    batch = pack_batch(examples_of([12, 3]), pad_token_id=0, row_tokens=8)
    assert batch["input_ids"].shape == (2, 12)
    assert batch["position_ids"][1].tolist() == [0, 1, 2, *range(9)]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(tiny_model_dir, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention).eval()
    model.config.use_cache = False
    examples = examples_of([9, 4, 13, 6, 2], vocab=model.config.vocab_size)
    batch = pack_batch(examples, pad_token_id=0, row_tokens=20)
    assert batch["input_ids"].shape[0] < len(examples)  # really packed
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        found = 0
        for r in range(batch["input_ids"].shape[0]):
            starts = (batch["position_ids"][r] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
            for start, end in zip(starts, starts[1:]):
                ids = batch["input_ids"][r, start:end]
                match = [e for e in examples if e["input_ids"] == ids.tolist()]
                if not match:
                    continue  # the pad tail
                alone = model(input_ids=ids[None], use_cache=False).logits[0]
                torch.testing.assert_close(packed[r, start:end], alone, rtol=1e-5, atol=1e-5)
                found += 1
    assert found == len(examples)
