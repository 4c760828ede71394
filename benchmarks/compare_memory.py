"""Where the batch comparison's memory goes on a CPU: physical memory (PSS, split into anonymous and file-backed
pages) after the imports, after loading one base + adapter, and at the peak of answering both sides.

    python benchmarks/compare_memory.py                          # embedded SmolLM2-135M-Instruct, random LoRA
    python benchmarks/compare_memory.py --adapter results/checkpoints --batch-size 32 --max-new-tokens 64
    QWENTUNE_CPU_BF16=1 python benchmarks/compare_memory.py      # the weights held in bf16 (emulated without native bf16)

File-backed pages are the mmapped fp32 safetensors (loaded as they are touched: from_pretrained keeps weights whose
dtype already fits in the file's pages); anonymous pages are copies (bf16 weights), the KV cache and activations.
PSS is sampled every 0.1 s (smaps_rollup) in a thread; one run per process, so run it again to see the spread.
compare_speed.py gives the naive way's peak and the speed ratio side by side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pss_mb() -> dict[str, int]:
    """This process's Rss, Pss, Pss_Anon and Pss_File in MB (Linux: /proc/self/smaps_rollup)."""
    values = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, *rest = line.split()
            if key in ("Rss:", "Pss:", "Pss_Anon:", "Pss_File:"):
                values[key[:-1]] = int(rest[0]) // 1024
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", help="a local model directory (default: the embedded SmolLM2, converted)")
    parser.add_argument("--adapter", help="a LoRA adapter directory (default: a random r 8 LoRA on every linear layer)")
    parser.add_argument("--questions-file", default=str(REPO / "test_questions.json"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    stages = {"start": pss_mb()}

    import torch  # noqa: F401  (counted under "imports")

    from qwentune.apps.compare import compare_batch, load_pair
    from qwentune.config import GenerationConfig
    from qwentune.inference.prompts import read_questions

    stages["imports"] = pss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base_model
        if base is None:
            from qwentune.models.gguf_source import converted_model_dir, embedded_demo_gguf

            # A private copy: PSS divides a file page among every process that maps it.
            base = str(shutil.copytree(converted_model_dir(embedded_demo_gguf()), Path(tmp) / "base"))
        adapter = args.adapter
        if adapter is None:
            sys.path.insert(0, str(Path(__file__).parent))
            from compare_speed import random_adapter

            adapter = str(Path(tmp) / "adapter")
            random_adapter(base, Path(adapter))
            stages["imports"] = pss_mb()  # random_adapter loaded a model of its own and dropped it
        pair = load_pair(base, adapter, log=lambda *a: None)
        stages["loaded"] = pss_mb()
        peak, running = dict(stages["loaded"]), True

        def sample() -> None:
            while running:
                now = pss_mb()
                if now["Pss"] > peak["Pss"]:
                    peak.update(now)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        settings = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False, repetition_penalty=1.0)
        started = time.perf_counter()
        report = compare_batch(pair, read_questions(args.questions_file), settings, batch_size=args.batch_size)
        seconds = time.perf_counter() - started
        running = False
        sampler.join()
        stages["generation peak"] = peak
    print(f"dtype {report['models']['dtype']}, batch {args.batch_size}, up to {args.max_new_tokens} new tokens, "
          f"{seconds:.1f} s answering both sides")
    print(f"{'stage':<18}{'PSS MB':>8}{'anon':>8}{'file':>8}")
    for name, values in stages.items():
        print(f"{name:<18}{values['Pss']:>8}{values['Pss_Anon']:>8}{values['Pss_File']:>8}")
    print(json.dumps({"seconds": seconds, **{k: v["Pss"] for k, v in stages.items()}}))


if __name__ == "__main__":
    main()
