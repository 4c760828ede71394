"""GPU acceptance run (issue 18, item 5): one command, one table, no network.

    python benchmarks/gpu_check.py                        # one CUDA GPU: under 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny    # the same checks at toy sizes (the CI smoke test)

1. speed: Qwen2-0.5B's shape (train_throughput.SHAPES), random weights, LoRA r 8 on every linear layer, bf16
   where the device has it, the same random token rows for each path (log-normal lengths, median max_length / 6,
   second half labelled): real tokens/s over the steps after warm-up, MFU (train_throughput.flops_per_token)
   against the best matmul peak measured before and after, for qwentune's trainer path (packed rows, per-example
   attention, lean loss head), plain Trainer + PEFT with batches padded to their longest example, and the naive
   recipe (the same, padded to max_length).
2. QLoRA memory: Qwen2-7B's shape, NF4 (qwentune's quantization_config), gradient checkpointing, one 2,048-token
   example per step: peak allocated / reserved, the planner's estimate, and whether 16 GB / 12 GB cards hold it.
3-5. A tiny Qwen2 with a ChatML tokenizer whose eos is <|endoftext|> (as base Qwen2's), built in the run
   (tests/helpers.py) and trained through qwentune's trainer path to answer four questions. resume: a run stopped
   half-way by qwentune's graceful stop and resumed from its checkpoint equals an uninterrupted run (losses,
   adapter weights); merge: qwentune's merge (fp32, as `qwentune infer --merge`) gives the logits of base +
   adapter; stop: qwentune's generate_batch ends every reply at the end-of-turn token, with the trained reply.
A FAIL makes the exit code 1; the table is also written as JSON (--output).

The GPU machine needs torch, transformers, peft, accelerate and this repository, run from its root (src/ is put
on the path, so qwentune need not be installed; tests/helpers.py and train_throughput.py come from it too).
Nothing here imports datasets, gguf, jieba, tensorboard, pyarrow or pytest: qwentune's trainer is fed token rows
(tests/test_gpu_check.py runs this with none of them). Row 2 needs bitsandbytes, else it reads SKIPPED: fetch it
where there is a network, `pip download bitsandbytes==0.50.2 --no-deps -d wheels/` (the manylinux x86_64 wheel,
43.1 MB with its CUDA kernels; numpy and packaging come with torch), then `pip install --no-deps wheels/*.whl`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO), str(REPO / "benchmarks")]  # this checkout's qwentune and test helpers
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub: fail at once rather than wait on a network

import torch
import transformers
from peft import LoraConfig, get_peft_model
from train_throughput import SHAPES, flops_per_token, matmul_peak, shape_config
from transformers import (
    AutoModelForCausalLM,
    PrinterCallback,
    Qwen2ForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from qwentune.config import GenerationConfig, load_config
from qwentune.data.collate import pad_batch
from qwentune.data.convert import conversation
from qwentune.data.tokenize import tokenize_batch
from qwentune.errors import UserError
from qwentune.export.merge import merge_adapter
from qwentune.fsutil import check_output_file
from qwentune.inference.generate import generate_batch, prompt_text
from qwentune.models.load import load_for_inference, load_model, quantization_config
from qwentune.models.lora import apply_lora
from qwentune.models.precision import choose_precision
from qwentune.models.tokenizer import align_special_tokens, control_tokens, end_of_turn_token, load_tokenizer
from qwentune.training.callbacks import CurrentRunSettings, GracefulStop, MarkCheckpointComplete
from qwentune.training.memory import GB, ModelShape, estimate_bytes
from qwentune.training.outputs import resolve_resume, save_final
from qwentune.training.speedups import attention_implementation, choose_speedups
from qwentune.training.train import training_arguments
from qwentune.training.trainer import QwentuneTrainer, make_collator
from tests.helpers import QA, build_tiny_qwen2, build_tiny_tokenizer, examples_of

# --tiny: the same architectures at toy sizes (bitsandbytes quantizes blocks of 64 values).
TINY = {"Qwen2-0.5B": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
        "Qwen2-7B": dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)}
SIZES = {False: dict(max_length=1024, batch=8, warmup=3, timed=20, peak_n=None, qlora_tokens=2048, qlora_steps=3),
         True: dict(max_length=128, batch=4, warmup=1, timed=3, peak_n=512, qlora_tokens=256, qlora_steps=2)}
# Total memory of the cards as nvidia-smi reports it (RTX 4060 Ti 16GB, 4080: 16,376 MiB; RTX 3060: 12,288 MiB).
CARDS_MIB = {"16 GB": 16_376, "12 GB": 12_288}
MIB, GIB = 2 ** 20, 2 ** 30
STEPS, STOP_AT = 24, 10  # the small job: 6 epochs of 16 QA rows in batches of 4, stopped in the 3rd and resumed


@dataclass
class Row:
    check: str
    result: str  # PASS, FAIL, SKIPPED: why, or a figure
    detail: str
    precision: str


def fits(peak_reserved: int, outside_allocator: int, card_mib: int) -> bool:
    """Whether a run whose allocator reserved at most `peak_reserved` bytes, in a process holding `outside_allocator`
    more bytes of GPU memory (CUDA context, libraries), fits a card of `card_mib` MiB (nothing else on it)."""
    return peak_reserved + outside_allocator <= card_mib * MIB


def machine(device: str) -> str:
    import peft

    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else [platform.machine()]
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"{names[0]}, {torch.get_num_threads()} threads"
    return f"{name}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"


def config_for(output_dir: Path, **options):
    """The shipped training config with `options`, writing under `output_dir`."""
    defaults = {"output_dir": output_dir, "logging_dir": output_dir / "logs", "save_steps": 100_000, "seed": 42,
                "logging_steps": 5, "warmup_ratio": 0.0, "resume_from_checkpoint": "null"}
    return load_config(REPO / "config" / "training_config.yaml",
                       [(key, str(value)) for key, value in {**defaults, **options}.items()])


def random_model(shape: dict, precision):
    """A Qwen2 of `shape` with random weights, made on the device in its precision (on a GPU: no copy in host RAM)."""
    torch.manual_seed(0)
    with torch.device(precision.device):
        return AutoModelForCausalLM.from_config(shape_config(shape), dtype=precision.dtype)


def qwentune_trainer(cfg, base, precision, rows, tokenizer=None, callbacks=()):
    """What qwentune.training.train does once the model is loaded, fed token rows (no datasets, no TensorBoard)."""
    base.config.use_cache = False
    if tokenizer is not None:
        align_special_tokens(base, tokenizer)
    set_seed(cfg.training.seed)  # the adapter's initial weights
    model = apply_lora(base, cfg)
    speedups = choose_speedups(cfg.training, precision.device, model, cfg.data.max_length)
    trainer = QwentuneTrainer(model=model, args=training_arguments(cfg, precision, speedups.packing, False),
                              train_dataset=rows, data_collator=make_collator(speedups.packing, 0),
                              processing_class=tokenizer, speedups=speedups,
                              callbacks=[MarkCheckpointComplete(), CurrentRunSettings(), *callbacks])
    trainer.remove_callback(PrinterCallback)
    trainer.attention = speedups.attn_implementation
    return trainer


def run(trainer, resume: str | None = None):
    with attention_implementation(trainer.model.get_base_model(), trainer.attention):
        trainer.train(resume_from_checkpoint=resume)
    return trainer


def baseline_trainer(cfg, model_dir: Path, precision, rows, pad_to: int | None, callbacks):
    """transformers Trainer + PEFT LoRA (cfg's settings), batches right-padded to `pad_to` or to their longest."""

    def collate(batch):
        padded = pad_batch(batch, 0)
        extra = max(0, (pad_to or 0) - padded["input_ids"].shape[1])
        return {k: torch.nn.functional.pad(v, (0, extra), value=-100 if k == "labels" else 0)
                for k, v in padded.items()}

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=precision.dtype).to(precision.device)
    lora, t = cfg.lora, cfg.training
    model = get_peft_model(model, LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(model_dir.parent / "baseline"), max_steps=t.max_steps, learning_rate=t.learning_rate,
        per_device_train_batch_size=t.per_device_train_batch_size, lr_scheduler_type=t.lr_scheduler_type,
        optim=t.optim, bf16=precision.bf16, logging_steps=t.logging_steps, save_strategy="no", report_to="none",
        seed=t.seed, remove_unused_columns=False, disable_tqdm=True, use_cpu=precision.device == "cpu",
        include_num_input_tokens_seen="non_padding")
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer


class StepTimer(TrainerCallback):
    """Real tokens and seconds from the end of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device, self.marks = warmup, device, []

    def on_step_end(self, args, state, control, **kwargs):
        if self.device == "cuda":
            torch.cuda.synchronize()
        if state.global_step >= self.warmup:
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    def tokens_per_second(self) -> float:
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / (t1 - t0)


def check_speed(work: Path, precision, tiny: bool) -> list[Row]:
    size, shape = SIZES[tiny], (TINY if tiny else SHAPES)["Qwen2-0.5B"]
    steps, length = size["warmup"] + size["timed"], size["max_length"]
    draw = random.Random(0)  # log-normal lengths, median max_length / 6
    lengths = [min(length, max(8, round(draw.lognormvariate(math.log(length / 6), 0.6))))
               for _ in range(size["batch"] * steps)]
    rows = examples_of(lengths, vocab=shape["vocab_size"])
    random_model(shape, precision).save_pretrained(work / "speed" / "model")
    cfg = config_for(work / "speed" / "qwentune", max_length=length, per_device_train_batch_size=size["batch"],
                     gradient_accumulation_steps=1, max_steps=steps, bf16=precision.bf16)
    peaks, speed, flops = [matmul_peak(precision.name, precision.device, size["peak_n"])], {}, 0
    for mode in ("naive", "plain", "qwentune"):  # qwentune last: its CPU kernels set process-wide malloc options
        timer = StepTimer(size["warmup"], precision.device)
        if mode == "qwentune":
            base = load_model(str(work / "speed" / "model"), precision)
            trainer = run(qwentune_trainer(cfg, base, precision, rows, callbacks=[timer]))
        else:
            trainer = baseline_trainer(cfg, work / "speed" / "model", precision, rows,
                                       length if mode == "naive" else None, [timer])
            trainer.train()
        speed[mode], flops = timer.tokens_per_second(), flops_per_token(trainer.model)[0]
        del trainer
        gc.collect()
        torch.cuda.empty_cache() if precision.device == "cuda" else None
    peak = max(peaks + [matmul_peak(precision.name, precision.device, size["peak_n"])])
    setting = (f"{'tiny' if tiny else 'Qwen2-0.5B'} shape, random weights, LoRA r {cfg.lora.lora_r}, {size['batch']} "
               f"examples/step, cutoff {length}, {size['timed']} steps timed after {size['warmup']}; "
               f"matmul peak {peak / 1e12:.3g} TFLOP/s" + ("; toy sizes: these figures mean nothing" if tiny else ""))
    labels = {"qwentune": "packed, lean head", "plain": "Trainer + PEFT, padded to the batch's longest",
              "naive": "Trainer + PEFT, padded to max_length"}
    return [Row(f"speed: {mode} ({label})", f"{speed[mode]:,.0f} real tok/s, MFU {speed[mode] * flops / peak:.1%}",
                setting + ("" if mode == "qwentune" else f"; qwentune: {speed['qwentune'] / speed[mode]:.2f}x"),
                precision.name) for mode, label in labels.items()]


def check_qlora_memory(work: Path, precision, tiny: bool) -> Row:
    size, shape = SIZES[tiny], (TINY if tiny else SHAPES)["Qwen2-7B"]
    tokens, cuda = size["qlora_tokens"], precision.device == "cuda"
    name = f"QLoRA memory: {'tiny' if tiny else 'Qwen2-7B'} shape, NF4, {tokens} tokens, checkpointing"
    try:
        quantization = quantization_config(True, precision)
    except UserError:
        return Row(name, "SKIPPED: bitsandbytes not importable", "", precision.name)
    # The 16-bit model is made on the device and handed to transformers' own 4-bit loading as a state dict:
    # no checkpoint on disk (15 GB for 7B), no copy in host memory.
    state = random_model(shape, precision).state_dict()
    config = shape_config(shape)
    config.save_pretrained(work / "qlora")  # a local name for the model, so that peft looks nowhere else for it
    base = Qwen2ForCausalLM.from_pretrained(None, config=config, state_dict=state, quantization_config=quantization,
                                            dtype=precision.dtype, device_map={"": precision.device})
    base.name_or_path = base.config.name_or_path = str(work / "qlora")
    del state
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = config_for(work / "qlora", use_4bit=True, gradient_checkpointing=True, max_length=tokens,
                     per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=size["qlora_steps"],
                     bf16=precision.bf16)
    run(qwentune_trainer(cfg, base, precision, examples_of([tokens] * size["qlora_steps"], vocab=shape["vocab_size"])))
    estimate = sum(estimate_bytes(ModelShape.from_config(config), 1, tokens, cfg.lora.lora_r,
                                  precision.bytes_per_value, True, True).values())
    if not cuda:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return Row(name, f"peak RSS {rss / GIB:.2f} GiB (whole process)",
                   f"planner's estimate {estimate / GB:.2f} GB; fitting a card is judged on CUDA", precision.name)
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    free, total = torch.cuda.mem_get_info()
    outside = max(0, total - free - torch.cuda.memory_reserved())
    fit = {card: "yes" if fits(reserved, outside, mib) else "no" for card, mib in CARDS_MIB.items()}
    return Row(name, "PASS" if fit["16 GB"] == "yes" else "FAIL",
               f"peak allocated {allocated / GIB:.2f} GiB, reserved {reserved / GIB:.2f} GiB, outside PyTorch "
               f"{outside / GIB:.2f} GiB (planner's estimate {estimate / GB:.2f} GB); fits 16 GB: {fit['16 GB']}, "
               f"12 GB: {fit['12 GB']}", precision.name)


def small_job(work: Path):
    """The tiny model (saved in work/tiny) with its tokenizer (eos <|endoftext|>), and the QA rows tokenized."""
    build_tiny_qwen2(work / "tiny", build_tiny_tokenizer(eos_token="<|endoftext|>"))
    tokenizer = load_tokenizer(str(work / "tiny"))
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in QA] * 4
    tokens = tokenize_batch({"messages": conversations}, tokenizer, 128, end_of_turn_token(tokenizer),
                            control_tokens(tokenizer))
    return tokenizer, [{"input_ids": i, "labels": labels} for i, labels in zip(tokens["input_ids"], tokens["labels"])]


def train_small(work: Path, name: str, precision, tokenizer, rows, stop_at: int | None = None):
    """Train the small job into work/name from its newest complete checkpoint, if any; stop_at: stop after that
    step the way Ctrl-C does (qwentune's GracefulStop saves a checkpoint, then stops)."""
    cfg = config_for(work / name, max_length=128, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                     max_steps=STEPS, learning_rate=0.01, logging_steps=1, bf16=precision.bf16,
                     resume_from_checkpoint="auto")
    stop = GracefulStop()

    class StopAt(TrainerCallback):
        steps = 0  # run in this call

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            if state.global_step == stop_at:
                stop.received = signal.SIGINT  # as its signal handler records a Ctrl-C

    counter = StopAt()
    trainer = qwentune_trainer(cfg, load_model(str(work / "tiny"), precision), precision, rows, tokenizer,
                               callbacks=[counter, stop])
    run(trainer, resolve_resume(cfg, log=lambda *a: None))
    return trainer, counter.steps


def check_resume(work: Path, precision) -> Row:
    tokenizer, rows = small_job(work)
    straight, _ = train_small(work, "straight", precision, tokenizer, rows)
    save_final(straight, tokenizer, work / "straight", {})  # the adapter the merge and stop checks load
    stopped_at = train_small(work, "resumed", precision, tokenizer, rows, stop_at=STOP_AT)[0].state.global_step
    resumed, steps_after = train_small(work, "resumed", precision, tokenizer, rows)

    def losses(trainer):
        return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e and e["step"] > STOP_AT}

    def adapter(trainer):
        return {n: p.detach().float().cpu() for n, p in trainer.model.named_parameters() if p.requires_grad}

    a, b, wa, wb = losses(straight), losses(resumed), adapter(straight), adapter(resumed)
    loss_gap = max(abs(a[s] - b[s]) / abs(a[s]) for s in a) if a.keys() == b.keys() and a else math.inf
    weight_gap = max((wa[n] - wb[n]).abs().max().item() for n in wa) / max(w.abs().max().item() for w in wa.values())
    tolerance = 1e-5 if precision.name == "fp32" else 1e-3
    ok = (stopped_at, steps_after) == (STOP_AT, STEPS - STOP_AT) and loss_gap <= tolerance and weight_gap <= tolerance
    return Row(f"resume: stopped at step {stopped_at} of {STEPS}, resumed, vs uninterrupted", "PASS" if ok else "FAIL",
               f"{steps_after} steps after resuming; steps {STOP_AT + 1}-{STEPS}: largest relative loss difference "
               f"{loss_gap:.2g}, adapter weights {weight_gap:.2g} of their largest (tolerance {tolerance:g}; LoRA "
               f"dropout 0.1)", precision.name)


def check_merge(work: Path, precision) -> Row:
    fp32 = choose_precision(bf16=False, fp16=False, device=precision.device)  # as `qwentune infer --merge` merges
    loaded = load_for_inference(str(work / "tiny"), str(work / "straight"), fp32, log=lambda *a: None)
    texts = [prompt_text(loaded.tokenizer, conversation(q)) + a for q, a in QA]
    ids = [loaded.tokenizer(t, return_tensors="pt", add_special_tokens=False).input_ids.to(loaded.model.device)
           for t in texts]
    with torch.no_grad():
        adapted = [loaded.model(input_ids=i).logits for i in ids]
        with loaded.adapter(False):
            base = [loaded.model(input_ids=i).logits for i in ids]
        merge_adapter(loaded, work / "merged", dtype=torch.float32)
        merged_model = load_for_inference(str(work / "merged"), None, fp32, log=lambda *a: None).model
        merged = [merged_model(input_ids=i).logits for i in ids]
    gap = max((m - a).abs().max().item() for m, a in zip(merged, adapted))
    effect = max((a - b).abs().max().item() for a, b in zip(adapted, base))
    tolerance = 1e-4 * max(a.abs().max().item() for a in adapted)
    ok = gap <= tolerance < effect / 100  # the adapter must move the logits far more than the merge may
    return Row("merge: merged model vs base + adapter", "PASS" if ok else "FAIL",
               f"largest logit difference {gap:.2g} (tolerance {tolerance:.2g}, 1e-4 of the largest logit); the "
               f"adapter moves logits by up to {effect:.3g}", fp32.name)


def check_stop(work: Path, precision) -> Row:
    loaded = load_for_inference(str(work / "tiny"), str(work / "straight"), precision, log=lambda *a: None)
    settings = GenerationConfig(max_new_tokens=40, do_sample=False, repetition_penalty=1.0)
    answers = generate_batch(loaded, [conversation(q) for q, _ in QA], settings)
    stopped = sum(a.stopped and a.new_tokens < settings.max_new_tokens for a in answers)
    same = sum(a.text == reply for a, (_, reply) in zip(answers, QA))
    stops = ", ".join(loaded.tokenizer.convert_ids_to_tokens(loaded.stop_ids))
    return Row("stop: generation ends at the end-of-turn token", "PASS" if stopped == same == len(QA) else "FAIL",
               f"{stopped}/{len(QA)} replies ended by themselves, {same}/{len(QA)} equal the trained reply "
               f"(eos is <|endoftext|>; stop ids: {stops})", precision.name)


def guarded(name: str, check, *args) -> list[Row]:
    """A check's rows; a check that raises is one FAIL row (traceback on stderr), and the others still run."""
    started = time.perf_counter()
    try:
        rows = check(*args)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        rows = Row(name, "FAIL", f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}", "")
    print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows if isinstance(rows, list) else [rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy shapes: the CI smoke test of this script")
    parser.add_argument("--output", default="results/benchmarks/gpu_check.json", help="the table as JSON")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; on a CPU run the smoke test: --device cpu --tiny", file=sys.stderr)
        return 2
    out = REPO / args.output  # relative to the repository, as the other benchmarks' --output
    try:
        check_output_file(out)  # before minutes of checks, not after
    except UserError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    transformers.utils.logging.disable_progress_bar()
    if args.tiny:  # toy tensors gain nothing from threads, and on a shared CPU their synchronization costs 2x
        torch.set_num_threads(1)
    precision = choose_precision(bf16=True, fp16=False, device=args.device)
    started, done = time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="qwentune-gpu-check-") as tmp:
        work = Path(tmp)
        # QLoRA first: its peak memory is read in a process that has held nothing else yet.
        for name, check, *extra in (("QLoRA memory", check_qlora_memory, args.tiny), ("speed", check_speed, args.tiny),
                                    ("resume", check_resume), ("merge", check_merge), ("stop", check_stop)):
            done[name] = guarded(name, check, work, precision, *extra)
    rows = [row for name in ("speed", "QLoRA memory", "resume", "merge", "stop") for row in done[name]]
    seconds, where = time.perf_counter() - started, machine(args.device)
    print(f"\ngpu_check{' --tiny' if args.tiny else ''} on {where}: {seconds:.0f} s\n\n"
          "| check | result | detail | precision |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row.check} | {row.result} | {row.detail} | {row.precision} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": where, "device": args.device, "tiny": args.tiny, "seconds": round(seconds, 1),
                               "date": time.strftime("%Y-%m-%d"), "rows": [asdict(r) for r in rows]},
                              ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")
    return 1 if any(row.result == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
