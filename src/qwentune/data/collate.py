"""Batch tokenized examples: padding-free packing, or dynamic padding to the longest row.

Packing puts the examples of a batch in one row with position ids that restart at 0 for each
example and no attention mask; attention then runs per example (training/speedups/packed_attention.py), or, under
plain sdpa, over a block-diagonal mask transformers builds from the position ids. Either way no
example attends to another (tests/training/speedups/test_packed_attention.py checks the logits).

Labels are padded with -100 by position, never by comparing ids with pad_token_id:
for some tokenizers pad and the end-of-turn token are the same id, and the
end-of-turn token must keep its label so the model learns to stop.
"""

from __future__ import annotations

from typing import Any

import torch

from .tokenize import IGNORE_INDEX


def pad_batch(examples: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad input_ids, labels and attention_mask of `examples` into (examples, longest) int64 tensors."""
    longest = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.as_tensor(example["input_ids"])
        labels[row, :n] = torch.as_tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def pack_batch(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Concatenate `examples` into one row: no padding at all.

    Returns input_ids, position_ids (restarting at 0 for each example), labels, and shift_labels:
    the target of each position, i.e. the next token's label within the same example and
    IGNORE_INDEX at each example's last token, so no example learns to predict the next one's start.
    """
    input_ids, labels, shift_labels, position_ids = [], [], [], []
    for example in examples:
        ids, example_labels = example["input_ids"], example["labels"]
        input_ids.extend(ids)
        labels.extend(example_labels)
        shift_labels.extend(example_labels[1:])
        shift_labels.append(IGNORE_INDEX)
        position_ids.extend(range(len(ids)))
    return {name: torch.tensor([values], dtype=torch.long) for name, values in (
        ("input_ids", input_ids), ("position_ids", position_ids), ("labels", labels), ("shift_labels", shift_labels))}
