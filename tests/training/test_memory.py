"""Memory estimates and hardware presets, on the real layer sizes of Qwen2 models (configs only, no weights)."""

import pytest
from transformers import Qwen2Config

from qwentune.config import load_config
from qwentune.errors import UserError
from qwentune.training.memory import ModelShape, check_fits, choose_plan, estimate_bytes, plan_for

QWEN2_05B = ModelShape.from_config(Qwen2Config(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, tie_word_embeddings=True))
QWEN2_7B = ModelShape.from_config(Qwen2Config(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, tie_word_embeddings=False))


def test_parameter_count_matches_the_published_sizes():
    linear, other = QWEN2_05B.parameters()
    assert abs((linear + other) / 1e6 - 494) < 3  # Qwen2-0.5B: 494M
    linear, other = QWEN2_7B.parameters()
    assert abs((linear + other) / 1e9 - 7.6) < 0.05  # Qwen2-7B: 7.6B


@pytest.mark.parametrize("gigabytes, batch", [(24, 8), (16, 4), (12, 2)])
def test_seed_table_for_qwen2_05b_keeps_the_effective_batch(gigabytes, batch):
    plan = choose_plan(QWEN2_05B, gigabytes, "cuda", 1024, 8, 2, effective_batch=16)
    assert plan.batch_size == batch and plan.batch_size * plan.gradient_accumulation_steps == 16
    assert not plan.use_4bit


def test_7b_on_a_12gb_card_needs_4bit_and_checkpointing():
    plan = choose_plan(QWEN2_7B, 12, "cuda", 1024, 8, 2, effective_batch=16)
    assert plan.use_4bit and plan.gradient_checkpointing and plan.batch_size * plan.gradient_accumulation_steps == 16


def test_the_lean_head_is_small_at_qwen_vocabulary_and_checkpointing_shrinks_activations():
    full = estimate_bytes(QWEN2_05B, 4, 1024, 8, 2, gradient_checkpointing=False, use_4bit=False)
    saved = estimate_bytes(QWEN2_05B, 4, 1024, 8, 2, gradient_checkpointing=True, use_4bit=False)
    naive_logits = 4 * 1024 * 151936 * 10  # bf16 logits + fp32 copy + its gradient
    assert full["loss_head"] < naive_logits / 10
    assert saved["activations"] < full["activations"] / 10


def test_presets_adjust_a_config_and_impossible_settings_are_refused():
    cfg = load_config("config/training_config.yaml", [("hardware", "rtx3060")])
    planned = plan_for(cfg, QWEN2_05B, "cuda", 2, 1024, log=lambda *a: None)
    assert (planned.training.per_device_train_batch_size, planned.training.gradient_accumulation_steps) == (2, 8)
    assert cfg.training.per_device_train_batch_size == 4  # the original is untouched
    huge = load_config(None, [("per_device_train_batch_size", "64")])
    with pytest.raises(UserError, match="clearly exceeds"):
        check_fits(huge, QWEN2_7B, "cpu", 4, 1024, log=lambda *a: None)
    with pytest.raises(UserError, match="must be one of"):
        load_config(None, [("hardware", "rtx9090")])
