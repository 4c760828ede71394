"""Batch tokenized examples: padding-free packing, or dynamic padding to the longest row.

Packing puts several examples in one row with position ids that restart at 0 for each example
and no attention mask; transformers 5 then builds a block-diagonal causal mask from the position
ids, so no example attends to another (tests/test_packing.py checks the logits). Rows hold at most
`row_tokens` tokens, so attention never spans more than one max_length window.

Labels are padded with -100 by position, never by comparing ids with pad_token_id:
for some tokenizers pad and the end-of-turn token are the same id, and the
end-of-turn token must keep its label so the model learns to stop.
"""

from __future__ import annotations

from typing import Any

import torch

from .tokenize import IGNORE_INDEX


def pad_batch(examples: list[dict[str, Any]], pad_token_id: int, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad input_ids, labels and attention_mask of `examples` into tensors."""
    longest = max(len(e["input_ids"]) for e in examples)
    longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.as_tensor(example["input_ids"])
        labels[row, :n] = torch.as_tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def pack_batch(examples: list[dict[str, Any]], pad_token_id: int, row_tokens: int) -> dict[str, torch.Tensor]:
    """Pack `examples` into as few rows of at most `row_tokens` tokens as first-fit decreasing finds.

    Returns input_ids, position_ids, labels and shift_labels (the target of each position: the
    next token's label within the same example, IGNORE_INDEX at each example's last token, so no
    example learns to predict the start of the next one). The tail of a short row is filled with
    pad tokens forming their own segment, without labels.
    """
    row_tokens = max(row_tokens, max(len(e["input_ids"]) for e in examples))
    rows: list[list[int]] = []  # example indices per row
    room: list[int] = []
    for index in sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"])):
        n = len(examples[index]["input_ids"])
        row = next((r for r, free in enumerate(room) if free >= n), None)
        if row is None:
            rows.append([])
            room.append(row_tokens)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= n
    width = row_tokens - min(room)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    shift_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, members in enumerate(rows):
        start = 0
        for index in members:
            ids, example_labels = examples[index]["input_ids"], examples[index]["labels"]
            end = start + len(ids)
            input_ids[r, start:end] = torch.as_tensor(ids)
            labels[r, start:end] = torch.as_tensor(example_labels)
            shift_labels[r, start:end - 1] = torch.as_tensor(example_labels[1:])
            position_ids[r, start:end] = torch.arange(len(ids))
            start = end
        position_ids[r, start:] = torch.arange(width - start)
    return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "shift_labels": shift_labels}
