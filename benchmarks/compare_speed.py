"""Comparison speed: qwentune's batch mode vs the naive way, same questions and settings, in one run.

    python benchmarks/compare_speed.py                       # embedded SmolLM2-135M-Instruct, test_questions.json
    python benchmarks/compare_speed.py --base-model ./models/Qwen2-0.5B --max-new-tokens 128
    python benchmarks/compare_speed.py --batch-size 8 16 32     # qwentune at several batch sizes, one naive run

naive:    the way a comparison script is usually written: load the base model, load a second
          copy of it and attach the adapter, then answer each question one at a time on each
          model with plain `from_pretrained` defaults.
qwentune: `compare_batch`: one copy of the base weights (adapter switched off for the base
          side), batched generation, the precision qwentune picks for the device.
Each mode runs in its own process, so its peak memory is its own: allocated (CUDA), or PSS and RSS (CPU),
with the CPU time the process used (less sensitive than seconds to other programs on a shared machine).
The adapter is a LoRA (r 8, every linear layer) with random weights, so both sides do real work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Peak memory. CUDA: peak allocated. CPU: both peak RSS and peak PSS, because they disagree here:
# from_pretrained maps a safetensors file whose dtype already fits, so two models loaded from one
# file share the same physical pages, which RSS counts twice and PSS once. PSS is sampled every
# 0.2 s: reading smaps_rollup took 3.8 ms for a 0.5 GB process here and would slow a 2-core machine if done more often.
MEMORY = r"""
import resource, threading, time, torch

class PeakMemory:
    def __init__(self):
        self.pss = 0
        self.running = not torch.cuda.is_available()  # on CUDA the allocator keeps its own peak
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _read_pss(self):
        with open("/proc/self/smaps_rollup") as f:
            self.pss = max(self.pss, 1024 * next(int(l.split()[1]) for l in f if l.startswith("Pss:")))

    def _sample(self):
        while self.running:
            self._read_pss()
            time.sleep(0.2)

    def report(self):
        if torch.cuda.is_available():
            return {"peak_bytes": torch.cuda.max_memory_allocated()}
        self.running = False
        self.thread.join()
        self._read_pss()  # the end state, which the last 0.2 s gap may have missed
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"peak_bytes": self.pss, "peak_rss_bytes": usage.ru_maxrss * 1024,
                "cpu_seconds": usage.ru_utime + usage.ru_stime}
"""

NAIVE = MEMORY + r"""
import json, sys
memory = PeakMemory()
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base_dir, adapter_dir, questions_file, max_new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
start = time.perf_counter()
tokenizer = AutoTokenizer.from_pretrained(base_dir)
base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
questions = [q if isinstance(q, str) else q["question"] for q in json.load(open(questions_file, encoding="utf-8"))]
tokens = 0
stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
for model in (base, tuned):
    for question in questions:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)
        tokens += out.shape[1] - ids["input_ids"].shape[1]
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "new_tokens": tokens, "dtype": str(base.dtype)} | memory.report()))
"""

OURS = MEMORY + r"""
import json, sys
memory = PeakMemory()
from qwentune.apps.compare import compare_batch, load_pair
from qwentune.inference.prompts import read_questions
from qwentune.config import GenerationConfig
base_dir, adapter_dir, questions_file, max_new, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
start = time.perf_counter()
pair = load_pair(base_dir, adapter_dir, log=lambda *a: None)
settings = GenerationConfig(max_new_tokens=max_new, do_sample=False, repetition_penalty=1.0)
report = compare_batch(pair, read_questions(questions_file), settings, batch_size=batch)
seconds = time.perf_counter() - start
tokens = sum(report["timing"][side]["new_tokens"] for side in ("base", "finetuned"))
print(json.dumps({"seconds": seconds, "new_tokens": tokens, "dtype": report["models"]["dtype"]} | memory.report()))
"""


def random_adapter(base_dir: str, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)


def run(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", help="a local model directory (default: the embedded SmolLM2, converted)")
    parser.add_argument("--questions-file", default=str(REPO / "test_questions.json"))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32],
                        help="qwentune's questions per generate call; several values run one after another")
    args = parser.parse_args()

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base_model
        if base is None:
            from qwentune.models.gguf_source import converted_model_dir, embedded_demo_gguf

            # A private copy: PSS divides a file page among every process that maps it, so another program
            # using the shared converted model (a demo, an export) would otherwise lower the figures here.
            base = str(shutil.copytree(converted_model_dir(embedded_demo_gguf()), Path(tmp) / "base"))
        adapter = Path(tmp) / "adapter"
        random_adapter(base, adapter)
        arguments = (base, str(adapter), args.questions_file, str(args.max_new_tokens))
        runs["naive"] = run(NAIVE, *arguments)
        for batch in args.batch_size:
            runs[f"qwentune, batch {batch}"] = run(OURS, *arguments, str(batch))

    questions = len(json.loads(Path(args.questions_file).read_text(encoding="utf-8")))
    cpu = "peak_rss_bytes" in runs["naive"]
    print(f"model {base}; {questions} questions x 2 sides, up to {args.max_new_tokens} new tokens, greedy")
    print(f"{'mode':<22}{'dtype':>9}{'seconds':>9}{'new tokens':>12}{'tokens/s':>10}"
          f"{'peak PSS' if cpu else 'peak allocated':>16}" + (f"{'peak RSS':>11}{'CPU s':>8}" if cpu else ""))
    for name, r in runs.items():
        print(f"{name:<22}{r['dtype'].replace('torch.', ''):>9}{r['seconds']:>9.1f}{r['new_tokens']:>12}"
              f"{r['new_tokens'] / r['seconds']:>10.1f}{r['peak_bytes'] / 1e9:>13.2f} GB"
              + (f"{r['peak_rss_bytes'] / 1e9:>8.2f} GB{r['cpu_seconds']:>8.1f}" if cpu else ""))
    naive = runs.pop("naive")
    print()
    for name, r in runs.items():
        line = (f"{name}: {naive['seconds'] / r['seconds']:.1f}x faster, "
                f"{100 * r['peak_bytes'] / naive['peak_bytes']:.0f}% of the naive peak "
                + ("physical memory (PSS)" if cpu else "allocated memory"))
        if cpu:
            line += f", {100 * r['peak_rss_bytes'] / naive['peak_rss_bytes']:.0f}% of its peak RSS"
        print(line)


if __name__ == "__main__":
    main()
