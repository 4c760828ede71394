"""The published Qwen2.5 / Qwen3 shapes: parameter counts against the model cards and against the models
transformers builds from the same config (on the meta device: no weights), and what each preset chooses."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

from qwentune.training.known_models import KNOWN_SHAPES, known_shape, preset_table_rows
from qwentune.training.memory import ModelShape, choose_plan

ROOT = Path(__file__).resolve().parents[2]

# "Number of Parameters" and "(Non-Embedding)" from each model card (huggingface.co/Qwen/<name>), in billions,
# written as the cards write them: a figure given to two digits is checked to that precision.
PUBLISHED = {
    "Qwen2.5-0.5B": ("0.49", "0.36"), "Qwen2.5-1.5B": ("1.54", "1.31"), "Qwen2.5-3B": ("3.09", "2.77"),
    "Qwen2.5-7B": ("7.61", "6.53"), "Qwen2.5-14B": ("14.7", "13.1"),
    "Qwen3-0.6B": ("0.6", "0.44"), "Qwen3-1.7B": ("1.7", "1.4"), "Qwen3-4B": ("4.0", "3.6"),
    "Qwen3-8B": ("8.2", "6.95"), "Qwen3-14B": ("14.8", "13.2"),
}


def close_to_published(count: float, published: str) -> bool:
    """Within 1%, or within half a unit of the card's last digit where it gives fewer digits."""
    value = float(published)
    last_digit = 10 ** -len(published.split(".")[1])
    return abs(count / 1e9 - value) <= max(0.01 * value, last_digit / 2)


def transformers_config(shape: ModelShape):
    common = dict(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                  num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                  num_key_value_heads=shape.kv_heads, tie_word_embeddings=shape.tied_embeddings)
    if shape.qk_norm:
        return Qwen3Config(head_dim=shape.head_dim, **common)
    return Qwen2Config(**common)


@pytest.mark.parametrize("name", list(KNOWN_SHAPES))
def test_the_estimate_counts_the_published_parameters(name):
    shape = KNOWN_SHAPES[name]
    linear, other = shape.parameters()
    embedding = shape.vocab * shape.hidden * (1 if shape.tied_embeddings else 2)
    total, non_embedding = PUBLISHED[name]
    assert close_to_published(linear + other, total), (name, (linear + other) / 1e9)
    assert close_to_published(linear + other - embedding, non_embedding), (name, (linear + other - embedding) / 1e9)


@pytest.mark.parametrize("name", ["Qwen2.5-0.5B", "Qwen2.5-14B", "Qwen3-0.6B", "Qwen3-8B"])
def test_the_shape_read_from_a_config_is_the_model_transformers_builds(name):
    config = transformers_config(KNOWN_SHAPES[name])
    assert ModelShape.from_config(config) == KNOWN_SHAPES[name]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    built = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    assert sum(KNOWN_SHAPES[name].parameters()) == built


def test_qwen3_head_dim_widens_q_beyond_the_hidden_size():
    shape = KNOWN_SHAPES["Qwen3-0.6B"]
    assert shape.hidden // shape.heads == 64 and shape.q_dim == 16 * 128
    assert shape.linear_shapes()[0] == (1024, 2048) and shape.linear_shapes()[3] == (2048, 1024)


@pytest.mark.parametrize("name, expected", [
    ("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B"), ("Qwen3-8B", "Qwen3-8B"), ("Qwen/Qwen3-4B-Base", "Qwen3-4B"),
    ("Qwen/Qwen2-7B", None)])
def test_known_shape_by_hub_id(name, expected):
    assert known_shape(name) == (KNOWN_SHAPES[expected] if expected else None)


def test_presets_pick_sensible_settings_for_each_size():
    def plan(name, gigabytes):
        return choose_plan(KNOWN_SHAPES[name], gigabytes, "cuda", 1024, 8, 2, effective_batch=16)

    for name in KNOWN_SHAPES:
        for gigabytes in (12, 16, 24):
            chosen = plan(name, gigabytes)
            if chosen is not None:
                assert chosen.batch_size * chosen.gradient_accumulation_steps == 16
    for small in ("Qwen2.5-0.5B", "Qwen3-0.6B"):  # small models: the seed's batch, nothing traded away
        assert not plan(small, 12).gradient_checkpointing and not plan(small, 12).use_4bit
    for mid in ("Qwen2.5-1.5B", "Qwen2.5-3B", "Qwen3-1.7B", "Qwen3-4B"):  # 16-bit weights still fit
        assert not plan(mid, 12).use_4bit
    for large in ("Qwen2.5-7B", "Qwen3-8B"):  # 16-bit weights alone are 15-16 GB
        assert all(plan(large, gb).use_4bit for gb in (12, 16, 24))
    for largest in ("Qwen2.5-14B", "Qwen3-14B"):  # 4-bit linears plus 16-bit embeddings: over 12 GB
        assert plan(largest, 12) is None and plan(largest, 16).use_4bit
    # More memory never means a smaller batch.
    for name in KNOWN_SHAPES:
        batches = [plan(name, gb).batch_size for gb in (12, 16, 24) if plan(name, gb)]
        assert batches == sorted(batches)


@pytest.mark.parametrize("readme", ["README.md", "README_zh.md"])
def test_the_readme_model_table_is_what_the_planner_says(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    for row in preset_table_rows():
        assert row in text, f"{readme} lacks (or has a stale) row: {row}"
