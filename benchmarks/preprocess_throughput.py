"""Preprocessing throughput on alpaca-like data: examples/s and tokens/s, so later changes can be compared.

    python benchmarks/preprocess_throughput.py                       # Qwen2 tokenizer from ../shared
    python benchmarks/preprocess_throughput.py --tokenizer ./models/Qwen2-0.5B --examples 20000 --num_proc 2

Data: the real Chinese and English Alpaca samples in ../shared/data/real when present (repeated
to --examples records), else generated alpaca-like records. Three measurements in one run:
  convert     raw records -> {"messages": [...]}
  tokenize    qwentune's batched tokenize step (one fast-tokenizer call per batch, spans from offsets)
  naive       the common per-example way: apply_chat_template(tokenize=True) for the whole
              conversation and again for each prompt prefix to find where replies start
and the full `qwentune preprocess` into a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


def alpaca_like_records(n: int, seed: int = 0) -> list[dict]:
    files = ["alpaca_zh_machine_translated_first200.json", "stanford_alpaca_first200.json",
             "alpaca_gpt4_zh_llamafactory_demo_first200.json"]
    pool = []
    for name in files:
        if (SHARED_REAL / name).exists():
            pool += json.loads((SHARED_REAL / name).read_text(encoding="utf-8"))
    if not pool:  # no ../shared: generate records of a similar length mix
        rng = random.Random(seed)
        words = "the model data 模型 数据 训练 问题 回答 learning 中文 example 解释 summary".split()
        pool = [{"instruction": " ".join(rng.choices(words, k=rng.randint(5, 30))), "input": "",
                 "output": " ".join(rng.choices(words, k=rng.randint(20, 200)))} for _ in range(500)]
    return [pool[i % len(pool)] for i in range(n)]


def naive_tokenize(tokenizer, conversations: list[list[dict]]) -> int:
    """Per-example tokenization with prefix re-tokenization for the label mask; returns token count."""
    tokens = 0
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages)["input_ids"]
        labels = [-100] * len(ids)
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                start = len(tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)["input_ids"])
                end = len(tokenizer.apply_chat_template(messages[: i + 1])["input_ids"])
                labels[start:end] = ids[start:end]
        tokens += len(ids)
    return tokens


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=str(SHARED_REAL / "qwen2_tokenizer"))
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--num_proc", type=int, default=1)
    args = parser.parse_args()

    import datasets
    import torch

    from qwentune.config import DataConfig
    from qwentune.data.convert import convert_records
    from qwentune.data.preprocess import preprocess
    from qwentune.data.tokenize import tokenize_batch
    from qwentune.models.tokenizer import control_tokens, end_of_turn_token, load_tokenizer

    datasets.disable_progress_bars()
    records = alpaca_like_records(args.examples)
    tokenizer = load_tokenizer(args.tokenizer)
    eot = end_of_turn_token(tokenizer)

    converted, t_convert = timed(lambda: convert_records(records, source="bench"))
    conversations = [c["messages"] for c in converted.conversations]
    n = len(conversations)

    def ours():
        total = 0
        for start in range(0, n, 256):
            out = tokenize_batch({"messages": conversations[start:start + 256]}, tokenizer, 10**6, eot,
                                 control_tokens(tokenizer))
            total += sum(out["length"])
        return total

    tokens, t_ours = timed(ours)
    naive_tokens, t_naive = timed(lambda: naive_tokenize(tokenizer, conversations))
    assert naive_tokens == tokens, (naive_tokens, tokens)

    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        cfg = DataConfig(dataset_name=str(data_file), max_length=1024, num_proc=args.num_proc)
        stats, t_full = timed(lambda: preprocess(cfg, args.tokenizer, Path(tmp) / "out", log=lambda *_: None))

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"python {sys.version.split()[0]}, tokenizer {Path(args.tokenizer).name}")
    print(f"{n} examples, {tokens} tokens (mean {tokens / n:.0f} per example)\n")
    print(f"{'step':<34}{'seconds':>9}{'examples/s':>13}{'tokens/s':>12}")
    rows = [("convert", t_convert), ("tokenize (qwentune, batched)", t_ours), ("tokenize (naive per-example)", t_naive),
            (f"full preprocess (num_proc {args.num_proc})", t_full)]
    for name, seconds in rows:
        print(f"{name:<34}{seconds:>9.2f}{n / seconds:>13.0f}{tokens / seconds:>12.0f}")
    print(f"\nbatched / naive tokenize speed: {t_naive / t_ours:.2f}x")
    print(f"full preprocess wrote train {stats['splits']['train']}, validation {stats['splits'].get('validation', 0)}")


if __name__ == "__main__":
    main()
