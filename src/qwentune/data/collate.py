"""Batch tokenized examples with dynamic padding (to the longest row in the batch).

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
