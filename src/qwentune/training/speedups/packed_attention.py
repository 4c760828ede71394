"""Causal attention per packed example: no padding, no mask, no cross-example work.

A packed micro-batch is one row of concatenated examples whose position ids restart at 0.
transformers' sdpa path would build a row x row block-diagonal mask and compute attention over
the whole row (quadratic in the row, and the mask keeps torch off its fast causal kernels and
makes it copy the grouped key/value heads). Here each example's slice of the row is attended
on its own with `is_causal=True`, which is what flash-attention's varlen kernels do on GPUs.

Registered under NAME in transformers' AttentionInterface and AttentionMaskInterface. Without a
padding mask no 4D mask is built at all; with one (padded batches, generation) the mask is
sdpa's and so is the attention, so a model switched to NAME still answers padded batches right.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "qwentune_packed"


class _Segments:
    """Example boundaries of the current position ids, computed once per forward (not per layer)."""

    def __init__(self) -> None:
        self.position_ids: torch.Tensor | None = None
        self.bounds: list[list[tuple[int, int]]] = []

    def of(self, position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
        if position_ids is not self.position_ids:
            self.position_ids = position_ids
            self.bounds = [_row_bounds(row) for row in position_ids]
        return self.bounds


def _row_bounds(positions: torch.Tensor) -> list[tuple[int, int]]:
    starts = (positions[1:] != positions[:-1] + 1).nonzero().flatten().add(1).tolist()
    edges = [0, *starts, positions.shape[0]]
    return list(zip(edges, edges[1:]))


_segments = _Segments()


def packed_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs):
    """query (batch, heads, tokens, dim), key/value (batch, kv_heads, tokens, dim) -> (batch, tokens, heads, dim)."""
    position_ids = kwargs.get("position_ids")
    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    per_row = _segments.of(position_ids)  # the same tensor in every layer: computed once
    if len(per_row) != query.shape[0]:  # position ids shared by the whole batch
        per_row = per_row * query.shape[0]
    grouped = query.shape[1] != key.shape[1]
    rows = []
    # split(), not slicing: its backward is one cat per tensor, where each slice's backward would
    # fill a zero tensor of the whole row and add it to the others (15 such per layer at 4 examples).
    # sdpa is called directly so that each output stays a transposed view until the one cat.
    for q_row, k_row, v_row, bounds in zip(query.split(1), key.split(1), value.split(1), per_row):
        lengths = [end - start for start, end in bounds]
        rows.append(torch.cat([
            torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True,
                                                             enable_gqa=grouped).transpose(1, 2)
            for q, k, v in zip(q_row.split(lengths, 2), k_row.split(lengths, 2), v_row.split(lengths, 2))], dim=1))
    return (torch.cat(rows) if len(rows) > 1 else rows[0]), None


def packed_attention_mask(*args, attention_mask=None, **kwargs):
    """No mask where there is no padding: causality is per example in packed_attention_forward."""
    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(NAME, packed_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, packed_attention_mask)


def supports_packed_attention(config) -> bool:
    """Full causal attention in every layer (no sliding windows, which per-example slices would ignore)."""
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    return layer_types == {"full_attention"} and not sliding
