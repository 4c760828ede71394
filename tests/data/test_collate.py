"""Batches: padding-free packing (one row, positions restarting per example) and padding to the longest row."""

import torch

from qwentune.data.collate import pack_batch, pad_batch
from qwentune.data.tokenize import IGNORE_INDEX
from tests.helpers import examples_of


def test_pack_batch_layout():
    examples = examples_of([7, 3, 5])
    batch = pack_batch(examples)
    assert batch["input_ids"].shape == (1, 15)
    assert batch["input_ids"][0].tolist() == sum((e["input_ids"] for e in examples), [])
    assert batch["position_ids"][0].tolist() == [*range(7), *range(3), *range(5)]
    for key in ("input_ids", "labels", "shift_labels", "position_ids"):
        assert batch[key].dtype == torch.long
    targets = batch["shift_labels"][0].tolist()
    assert targets[6] == targets[9] == targets[14] == IGNORE_INDEX  # no example predicts the next one's start
    assert targets[:6] == examples[0]["labels"][1:] and targets[7:9] == examples[1]["labels"][1:]
    assert batch["labels"][0].tolist() == sum((e["labels"] for e in examples), [])


def test_pad_batch_pads_right_and_never_labels_padding():
    examples = examples_of([5, 2])
    batch = pad_batch(examples, pad_token_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, 5)
    assert batch["attention_mask"][1].tolist() == [1, 1, 0, 0, 0]
    assert batch["labels"][1, 2:].tolist() == [IGNORE_INDEX] * 3 and batch["input_ids"][1, 2:].tolist() == [0] * 3
    assert all(t.dtype == torch.long for t in batch.values())
