"""Shared fixtures: a tiny ChatML tokenizer built in the test run, and the real samples in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = Path(os.environ.get("QWENTUNE_SHARED_DATA", REPO.parent / "shared" / "data" / "real"))

CORPUS = [
    "You are a helpful assistant. Give three tips for staying healthy.",
    "Eat a balanced diet, exercise regularly and get enough sleep.",
    "What is the capital of France? The capital of France is Paris.",
    "保持健康的三个提示。均衡饮食，经常锻炼，保证充足的睡眠。",
    "法国的首都是哪里？法国的首都是巴黎。你好，我是一个乐于助人的助手。",
    "def add(a, b):\n    return a + b\n",
] * 4


def build_tiny_tokenizer(eos_token: str = "<|im_end|>", pad_token: str | None = "<|endoftext|>"):
    """A byte-level BPE tokenizer with Qwen's special tokens and ChatML template (vocab ~400)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from qwentune.tokenizer import CHATML_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos_token, pad_token=pad_token,
                                   chat_template=CHATML_TEMPLATE, additional_special_tokens=specials[1:])


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    tiny_tokenizer.save_pretrained(path)
    return path


def real_sample(name: str) -> Path:
    path = SHARED_REAL / name
    if not path.exists():
        pytest.skip(f"real data sample {name} not present (../shared is absent)")
    return path


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from qwentune.tokenizer import load_tokenizer

    return load_tokenizer(str(real_sample("qwen2_tokenizer")))


def build_tiny_qwen2(path, tokenizer, seed: int = 0):
    """A 2-layer Qwen2 with hidden size 64 (about 0.1M parameters), saved with its tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        # Wider than the usual 0.02: with a frozen tied head and a unit-scale final norm, tiny embeddings
        # cap the logits near uniform, and no adapter could make the model confident about anything.
        initializer_range=0.2,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"), tiny_tokenizer)


def examples_of(lengths, vocab=200, seed=0):
    """Random tokenized examples whose first half is an unlabelled prompt."""
    import torch

    from qwentune.data.tokenize import IGNORE_INDEX

    generator = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(5, vocab, (n,), generator=generator).tolist()
        labels = [IGNORE_INDEX] * (n // 2) + ids[n // 2:]  # a prompt half without labels
        out.append({"input_ids": ids, "labels": labels})
    return out
