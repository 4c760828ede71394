"""Shared fixtures: a tiny ChatML tokenizer and Qwen2 built in the test run, the real samples in ../shared,
and one small adapter trained once per session for the tests that need a fine-tuned model."""

from __future__ import annotations

import pytest

from tests.helpers import build_tiny_qwen2, build_tiny_tokenizer, real_sample, silent, tiny_config


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from qwentune.models.tokenizer import load_tokenizer

    return load_tokenizer(str(real_sample("qwen2_tokenizer")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"), tiny_tokenizer)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter that has memorized the QA pairs (and to end each reply with <|im_end|>)."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(tmp, tiny_model_dir, num_train_epochs=6, learning_rate=0.01, lora_dropout=0.0, save_steps=1000,
                      eval_steps=1000)
    from qwentune.training.train import train

    train(cfg, log=silent)
    return tmp




@pytest.fixture
def per_example_attention_calls(monkeypatch):
    """The forward passes in which qwentune's packed attention took its per-example path (not the sdpa fallback)."""
    from qwentune.training.speedups import packed_attention

    calls = []
    real = packed_attention._segments.of
    monkeypatch.setattr(packed_attention._segments, "of", lambda position_ids: calls.append(1) or real(position_ids))
    return calls
