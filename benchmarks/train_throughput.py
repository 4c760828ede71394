"""Training throughput: the seed's naive recipe vs qwentune's defaults, same job, in one run.

    python benchmarks/train_throughput.py                      # embedded SmolLM2-135M-Instruct, 64 rows, cutoff 512
    python benchmarks/train_throughput.py --max-length 1024    # the seed's cutoff
    python benchmarks/train_throughput.py --model ./models/Qwen2-0.5B --rows 256
    python benchmarks/train_throughput.py --shape-of Qwen2-0.5B --modes qwentune   # offline: speed and MFU only

naive:    what the seed's recipe does: every example padded to max_length, plain transformers
          Trainer + PEFT LoRA, the model's own loss over full logits, torch's dropout.
qwentune: `qwentune.train.train` with the same model, rows, LoRA settings and hyper-parameters
          (its defaults: packed rows, the lean loss head, the CPU LoRA dropout).
Both tokenize the same rows with qwentune's pipeline (so the token ids and labels are identical),
each runs in its own process (peak memory is its own: RSS on CPU, max allocated on CUDA), and
after training both compute the loss on held-out rows with one shared function, in fp32 (a 16-bit
run: also in its own precision, the `16-bit` column).

Real tokens are non-padding tokens (prompt and reply). MFU counts 4 N + 6 N_trainable FLOPs per
real token (N = frozen parameters; no credit for recomputation or skipped work) against the peak
of a large matmul measured just before and just after each run, in the precision the run used (the higher of the two).
--shape-of trains a randomly initialised model with a published model's architecture and sizes
(and the demo model's tokenizer), for when the model itself cannot be downloaded: its speed and
MFU are the real model's, its losses mean nothing.
Data: the first --rows records of Stanford Alpaca (../shared/data/real/, not shipped) with the next
--eval-rows held out; without that file, data/demo/train.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANFORD = REPO.parent / "shared" / "data" / "real" / "stanford_alpaca_first200.json"


def peak_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def flops_per_token(model) -> tuple[int, int, int]:
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * frozen + 6 * trainable, frozen, trainable


def held_out_losses(model, examples) -> dict:
    """{"eval_loss": held-out loss in fp32, "eval_loss_16bit": in the model's 16-bit dtype, or None}.

    The fp32 figure measures the adapter, whatever precision trained it, and is the one compared
    across tools (llamafactory_job.py evaluates its adapter on an fp32 base); the 16-bit one is what
    answering on the same hardware gives (a bf16 forward loses some of any adapter's effect:
    src/qwentune/models/lora_precision.py). Upcasts `model` in place.
    """
    import torch

    sixteen = held_out_loss(model, examples) if next(model.parameters()).dtype != torch.float32 else None
    return {"eval_loss": held_out_loss(model.float(), examples), "eval_loss_16bit": sixteen}


def held_out_loss(model, examples) -> float:
    """Mean cross-entropy per labelled token, one example at a time, full logits: the same code for both."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor([example["input_ids"]], device=device)
            labels = torch.tensor([example["labels"]], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            targets = labels[0, 1:]
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


def job_config(job: dict, work: Path):
    from qwentune.config import load_config

    options = {
        "model_name_or_path": job["model"], "dataset_name": job["train_file"], "val_size": "0",
        "max_length": job["max_length"], "per_device_train_batch_size": job["batch"],
        "gradient_accumulation_steps": job["accumulation"], "num_train_epochs": job["epochs"],
        "learning_rate": job["learning_rate"], "output_dir": str(work / "out"), "logging_dir": str(work / "logs"),
        "processed_dir": str(work / "processed"), "cache_dir": str(work / "cache"), "save_steps": "100000",
        "logging_steps": "1", "seed": "42", "resume_from_checkpoint": "null",
    }
    return load_config(REPO / "config" / "training_config.yaml", [(k, str(v)) for k, v in options.items()])


def tokenized(cfg, path: str):
    """(examples, tokenizer) of a data file, through qwentune's preprocessing."""
    from dataclasses import replace

    from qwentune.data.preprocess import load_or_preprocess
    from qwentune.models.source import resolve_model_source
    from qwentune.models.tokenizer import load_tokenizer

    source = resolve_model_source(cfg.model.model_name_or_path)
    tokenizer = load_tokenizer(source)
    data = replace(cfg.data, dataset_name=path)
    splits, _ = load_or_preprocess(data, source, tokenizer, cfg.training.seed, lambda *a: None)
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in splits["train"]], tokenizer


def run_naive(job: dict, work: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from qwentune.models.precision import choose_precision
    from qwentune.models.source import resolve_model_source

    cfg = job_config(job, work)
    precision = choose_precision(cfg.training.bf16, cfg.training.fp16)
    train_examples, tokenizer = tokenized(cfg, job["train_file"])
    eval_examples, _ = tokenized(cfg, job["eval_file"])
    length = cfg.data.max_length

    def pad_to_max_length(batch):
        ids = torch.full((len(batch), length), tokenizer.pad_token_id)
        labels = torch.full((len(batch), length), -100)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, e in enumerate(batch):
            n = len(e["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    torch.manual_seed(42)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(cfg.model.model_name_or_path),
                                                 dtype=precision.dtype).to(precision.device)
    lora = cfg.lora
    model = get_peft_model(model, LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    t = cfg.training
    args = TrainingArguments(
        output_dir=str(work / "naive"), num_train_epochs=t.num_train_epochs, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_ratio, optim=t.optim, bf16=precision.bf16,
        fp16=precision.fp16, logging_steps=1, save_strategy="no", report_to="none", seed=t.seed,
        remove_unused_columns=False, disable_tqdm=True, use_cpu=precision.device == "cpu",
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_examples, data_collator=pad_to_max_length)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    flops, frozen, trainable = flops_per_token(model)
    return {"seconds": seconds, "real_tokens": int(t.num_train_epochs * sum(len(e["input_ids"]) for e in train_examples)),
            "final_train_loss": sum(losses[-4:]) / len(losses[-4:]), **held_out_losses(model, eval_examples),
            "peak_bytes": peak_bytes(), "flops_per_token": flops, "frozen": frozen, "trainable": trainable,
            "precision": precision.name}


def run_qwentune(job: dict, work: Path) -> dict:
    from transformers import TrainerCallback

    from qwentune.training.train import train

    class KeepLosses(TrainerCallback):
        losses: list[float] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    cfg = job_config(job, work)
    result = train(cfg, log=lambda *a: None, callbacks=(KeepLosses(),))
    eval_examples, _ = tokenized(cfg, job["eval_file"])
    losses = KeepLosses.losses
    flops, frozen, trainable = flops_per_token(result.model)
    return {"seconds": result.summary["seconds"], "real_tokens": result.summary["tokens_seen"],
            "final_train_loss": sum(losses[-4:]) / len(losses[-4:]), **held_out_losses(result.model, eval_examples),
            "peak_bytes": peak_bytes(), "flops_per_token": flops, "frozen": frozen, "trainable": trainable,
            "precision": result.summary["precision"]}


def matmul_peak(precision: str, device: str | None = None, n: int | None = None) -> float:
    """FLOP/s of a large square matmul in the run's precision (the denominator of MFU) on `device` (default: cuda
    when there is one, else cpu); n: its size (default 4096 on CUDA, 2048 on CPU)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    n = n or (4096 if device == "cuda" else 2048)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - started) / 5)
    return 2 * n ** 3 / best


# Published configurations (config.json of each model on the Hugging Face hub).
SHAPES = {
    "Qwen2-0.5B": dict(vocab_size=151_936, hidden_size=896, intermediate_size=4_864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "Qwen2-1.5B": dict(vocab_size=151_936, hidden_size=1_536, intermediate_size=8_960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "Qwen2-7B": dict(vocab_size=152_064, hidden_size=3_584, intermediate_size=18_944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}


def shape_config(shape: dict):
    """A Qwen2Config of `shape` (a SHAPES entry, or any dict of the same keys) with Qwen2's published RoPE and norm."""
    from transformers import Qwen2Config

    return Qwen2Config(**shape, max_position_embeddings=32_768, rope_theta=1_000_000.0, rms_norm_eps=1e-6)


def random_model_of_shape(name: str, target: Path) -> str:
    """A Qwen2 model of SHAPES[name] with random weights, saved with the demo model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from qwentune.models.gguf_source import EMBEDDED_MODEL, materialize

    torch.manual_seed(0)
    Qwen2ForCausalLM(shape_config(SHAPES[name])).save_pretrained(target)
    AutoTokenizer.from_pretrained(materialize(EMBEDDED_MODEL)).save_pretrained(target)
    return str(target)


def write_rows(rows: list[dict], path: Path) -> None:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")


def prepare_data(args, work: Path) -> tuple[str, str, str]:
    if STANFORD.is_file() and not args.data:
        records, name = json.loads(STANFORD.read_text(encoding="utf-8")), f"Stanford Alpaca ({STANFORD.name})"
    else:
        path = Path(args.data or REPO / "data" / "demo" / "train.jsonl")
        from qwentune.data.readers import read_records

        records, name = list(read_records(path)), str(path)
    train, held_out = records[: args.rows], records[args.rows: args.rows + args.eval_rows]
    write_rows(train, work / "train.jsonl")
    write_rows(held_out, work / "eval.jsonl")
    return str(work / "train.jsonl"), str(work / "eval.jsonl"), name


def child(mode: str, job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    work = Path(job["work"]) / mode
    work.mkdir(parents=True, exist_ok=True)
    from qwentune.models.precision import choose_precision

    cfg = job_config(job, work)
    precision = choose_precision(cfg.training.bf16, cfg.training.fp16).name
    before = matmul_peak(precision)
    result = (run_naive if mode == "naive" else run_qwentune)(job, work)
    after = matmul_peak(precision)
    # The higher of two measurements, just before and just after the run: on a shared machine whose
    # speed drifts, a peak taken at a slow moment would flatter the MFU.
    result["matmul_peaks"] = [before, after]
    result["matmul_peak_flops"] = max(before, after)
    print("RESULT " + json.dumps(result))


def run_child(mode: str, job_file: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(job_file)], capture_output=True, text=True,
                          cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _or_dash(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--shape-of", choices=sorted(SHAPES),
                        help="instead of --model: random weights in this model's shape (speed and MFU only)")
    parser.add_argument("--data", help="a data file instead of the Stanford Alpaca sample")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--modes", nargs="+", choices=("naive", "qwentune"), default=["naive", "qwentune"],
                        help="run only some modes (the ratio needs both)")
    parser.add_argument("--output", default="results/benchmarks/train_throughput.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)

    with tempfile.TemporaryDirectory(prefix="qwentune-bench-") as tmp:
        work = Path(tmp)
        train_file, eval_file, data_name = prepare_data(args, work)
        if args.shape_of:
            args.model = f"random weights in {args.shape_of}'s shape"
        model = random_model_of_shape(args.shape_of, work / "model") if args.shape_of else args.model
        job = {"model": model, "train_file": train_file, "eval_file": eval_file, "max_length": args.max_length,
               "batch": args.batch, "accumulation": args.accumulation, "epochs": args.epochs,
               "learning_rate": args.learning_rate, "work": str(work)}
        (work / "job.json").write_text(json.dumps(job))
        results = {mode: run_child(mode, work / "job.json") for mode in ("naive", "qwentune") if mode in args.modes}
        job["model"] = args.model  # not the temporary directory of --shape-of

    import torch

    print(f"\n{args.model}, {data_name}: {args.rows} rows (+{args.eval_rows} held out), cutoff {args.max_length}, "
          f"batch {args.batch} x {args.accumulation}, {args.epochs:g} epoch(s); {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'mode':10} {'seconds':>8} {'real tok/s':>10} {'peak GB':>8} {'train loss':>10} {'eval loss':>9} {'16-bit':>7} {'MFU':>6}")
    for mode, r in results.items():
        r["real_tokens_per_second"] = r["real_tokens"] / r["seconds"]
        r["mfu"] = r["flops_per_token"] * r["real_tokens_per_second"] / r["matmul_peak_flops"]
        print(f"{mode:10} {r['seconds']:8.1f} {r['real_tokens_per_second']:10.1f} {r['peak_bytes'] / 1e9:8.2f} "
              f"{r['final_train_loss']:10.4f} {r['eval_loss']:9.4f} {_or_dash(r.get('eval_loss_16bit')):>7} {r['mfu']:6.1%}")
    ratio = memory = None
    if len(results) == 2:
        ratio = results["qwentune"]["real_tokens_per_second"] / results["naive"]["real_tokens_per_second"]
        memory = results["qwentune"]["peak_bytes"] / results["naive"]["peak_bytes"]
        print(f"qwentune / naive: {ratio:.2f}x the real-token throughput at {memory:.0%} of the peak memory")
    for mode, r in results.items():
        print(f"matmul peak ({r['precision']}) around the {mode} run: "
              + " and ".join(f"{peak / 1e9:.0f}" for peak in r["matmul_peaks"]) + " GFLOP/s (MFU uses the higher)")
    out = REPO / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"job": {k: v for k, v in job.items() if k not in ("work", "train_file", "eval_file")},
                               "data": data_name, "results": results, "ratio": ratio, "memory_ratio": memory}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
