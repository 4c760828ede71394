"""LLaMA-Factory on the training benchmark's job, on this machine, for a side-by-side figure.

    python -m venv ../lf && ../lf/bin/pip install torch==2.13.0 llamafactory==0.9.5   # its own versions
    python benchmarks/llamafactory_job.py --cli ../lf/bin/llamafactory-cli            # fp32
    python benchmarks/llamafactory_job.py --cli ../lf/bin/llamafactory-cli --bf16     # bf16 (slow without native bf16)

The job is train_throughput.py's: the embedded SmolLM2-135M-Instruct, the first 64 Stanford Alpaca
rows, LoRA r 8 / alpha 16 / dropout 0.1 on every linear layer, cutoff 512, batch 4 x 1, lr 2e-4
cosine with 3% warmup, fused AdamW, 1 epoch, seed 42, its smollm2 chat template. Reported: its
own train_runtime (the Trainer's, as qwentune's training seconds are), the peak RSS of its
process tree, and the loss of its adapter on the same 32 held-out rows through the same function
as train_throughput.py. LLaMA-Factory keeps the one `<nooutput>` row that qwentune skips (64
examples against 63).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as job_of  # noqa: E402  (the same data, tokenization and held-out loss)

SETTINGS = """stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_alpha: 16
lora_dropout: 0.1
lora_target: all
dataset: bench
template: smollm2
cutoff_len: {max_length}
overwrite_cache: true
preprocessing_num_workers: 1
overwrite_output_dir: true
logging_steps: 1
save_strategy: "no"
per_device_train_batch_size: 4
gradient_accumulation_steps: 1
learning_rate: 2.0e-4
num_train_epochs: 1.0
lr_scheduler_type: cosine
warmup_ratio: 0.03
optim: adamw_torch_fused
seed: 42
report_to: none
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", required=True, help="llamafactory-cli of an environment with LLaMA-Factory installed")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    args.data = None
    if not job_of.STANFORD.is_file():
        sys.exit(f"this job needs {job_of.STANFORD} (the Stanford Alpaca sample beside the repository).")

    import torch

    from qwentune.models.source import resolve_model_source

    with tempfile.TemporaryDirectory(prefix="qwentune-lf-") as tmp:
        work = Path(tmp)
        _, eval_file, _ = job_of.prepare_data(args, work)
        rows = json.loads(job_of.STANFORD.read_text(encoding="utf-8"))[: args.rows]
        (work / "train.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        (work / "dataset_info.json").write_text(json.dumps({"bench": {"file_name": "train.json"}}))
        job = {"model": "embedded:SmolLM2-135M-Instruct", "train_file": str(work / "train.jsonl"), "eval_file": eval_file,
               "max_length": args.max_length, "batch": 4, "accumulation": 1, "epochs": 1, "learning_rate": 2e-4,
               "work": str(work)}
        cfg = job_of.job_config(job, work)
        model_dir = resolve_model_source(cfg.model.model_name_or_path)
        out = work / "out"
        (work / "job.yaml").write_text(
            SETTINGS.format(max_length=args.max_length)
            + f"model_name_or_path: {model_dir}\ndataset_dir: {work}\noutput_dir: {out}\nbf16: {str(args.bf16).lower()}\n"
            + f"use_cpu: {str(not torch.cuda.is_available()).lower()}\n")  # transformers wants it said for bf16 on CPU
        done = subprocess.run([args.cli, "train", str(work / "job.yaml")], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"LLaMA-Factory failed:\n{done.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        runtime = json.loads((out / "all_results.json").read_text())["train_runtime"]

        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        examples, _ = job_of.tokenized(cfg, eval_file)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(out))
        loss = job_of.held_out_loss(model, examples)
    print(f"LLaMA-Factory ({'bf16' if args.bf16 else 'fp32'}): training {runtime:.1f} s, "
          f"peak RSS {peak / 1e9:.2f} GB, held-out loss {loss:.4f}")


if __name__ == "__main__":
    main()
