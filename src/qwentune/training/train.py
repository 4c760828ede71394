"""LoRA / QLoRA training, top to bottom: data -> model -> speed-ups -> Trainer -> memory probe (on a GPU:
one measured step at the data's longest batch, memory_probe.py) -> training -> final adapter and summary.

The loop itself is transformers' Trainer (gradient accumulation, fused AdamW, cosine schedule,
checkpoints with optimizer / scheduler / RNG / data position). What qwentune adds is around
it: the data pipeline, precision per device, the device's speed-ups (speedups/), safe checkpoints
(a marker says a checkpoint is complete; resume skips half-written ones), a graceful Ctrl-C /
SIGTERM, and an output directory a person can read (outputs.py).
"""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import library_versions
from ..config import Config, save_config
from ..errors import UserError
from ..fsutil import check_directory_path, hold_output, write_json
from ..models.hub import select_hub
from .callbacks import (
    CurrentRunSettings,
    GracefulStop,
    LiveProgress,
    MarkCheckpointComplete,
    ProgressLog,
    ThroughputAndPerplexity,
)
from .outputs import (
    RUN_CONFIG,
    RUN_DATA_STATS,
    RUN_SUMMARY,
    check_output_dir,
    checkpoint_to_resume,
    loss_summary,
    plot_loss,
    resolve_resume,
    save_final,
)
from .processes import check_launcher_fits_device, main_process_first
from .trackers import check_tracker, report_to


@dataclass
class TrainResult:
    output_dir: Path
    interrupted_by: int | None  # signal number when stopped early, else None
    summary: dict[str, Any]
    model: Any = None  # the trained PeftModel, for callers that go on to evaluate it


def peak_memory_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    try:
        import resource

        scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except ImportError:  # Windows
        import psutil

        return getattr(psutil.Process().memory_info(), "peak_wset", 0)


def training_arguments(cfg: Config, precision, packing: bool, has_validation: bool):
    """transformers TrainingArguments for cfg; precision: models.precision.Precision."""
    from transformers import TrainingArguments

    t = cfg.training
    return TrainingArguments(
        output_dir=t.output_dir,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        bf16=precision.bf16,
        fp16=precision.fp16,
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        # Padding only: similar lengths in one batch waste less on padding.
        train_sampling_strategy="random" if packing else "group_by_length",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=t.eval_steps if has_validation else None,
        metric_for_best_model="eval_loss" if has_validation else None,
        greater_is_better=False if has_validation else None,
        seed=t.seed,
        data_seed=t.seed,
        report_to=report_to(t.report_to),  # TensorBoard is added explicitly, writing to training.logging_dir
        disable_tqdm=True,  # LiveProgress draws one bar with loss, lr and tokens/s
        include_num_input_tokens_seen="non_padding",
        prediction_loss_only=True,  # evaluation needs the loss only, never the full logits
        remove_unused_columns=False,
        dataloader_num_workers=0,  # workers fork on POSIX and spawn slowly on Windows; tokenized data is cheap
        use_cpu=precision.device == "cpu",
    )


def _quiet(*args, **kwargs) -> None:
    """The log of processes other than the main one."""


def _max_token_id(dataset) -> int | None:
    """The largest input id in a tokenized datasets.Dataset (pyarrow, without copying it into Python lists)."""
    import pyarrow.compute as pc

    ids = dataset.data.column("input_ids").combine_chunks() if len(dataset) else None
    return None if ids is None else pc.max(pc.list_flatten(ids)).as_py()


def train(cfg: Config, log=print, callbacks: tuple = (), measure_peak=None) -> TrainResult:
    """Train a LoRA adapter as `cfg` says; `callbacks` are extra transformers TrainerCallbacks.

    measure_peak: how the memory probe measures a step (memory_probe.py; default: CUDA's counters, on CUDA
    only); one passed here runs the probe on any device, as the tests do on CPU.

    The run holds its output directory from the start to the end (fsutil.hold_output): a second run into the
    same directory meanwhile stops at once with UserError, having written nothing.
    """
    from accelerate.utils import get_int_from_env

    check_tracker(cfg.training.report_to)  # a missing package: one sentence, nothing written yet
    select_hub(cfg.model.hub)
    # Under torchrun / accelerate launch only the main process writes the directory, so only it holds it
    # (the rank variables are accelerate's own; the process group is not joined yet).
    rank = get_int_from_env(["RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"], 0)
    with hold_output(cfg.training.output_dir) if rank == 0 else contextlib.nullcontext():
        return _train(cfg, log, callbacks, measure_peak)


def _train(cfg: Config, log, callbacks: tuple, measure_peak) -> TrainResult:
    from accelerate import PartialState
    from transformers import AutoConfig, PrinterCallback, set_seed
    from transformers.integrations import TensorBoardCallback

    from ..data.preprocess import load_or_preprocess
    from ..models.load import load_model, quantization_config
    from ..models.lora import apply_lora, count_parameters
    from ..models.precision import choose_precision
    from ..models.source import resolve_model_source
    from ..models.tokenizer import align_special_tokens, check_tokenizer_fits, load_tokenizer
    from .memory import GB, ModelShape, Plan, check_fits, estimate_for, plan_for
    from .memory_probe import (
        RUN_MEMORY_PROBE,
        adopt_recorded_plan,
        cuda_peak,
        fit_to_memory,
        four_bit_possible,
        probe_wanted,
    )
    from .speedups import attention_implementation, choose_speedups
    from .trainer import QwentuneTrainer, make_collator

    # Everything a user can get wrong is checked before the model is loaded.
    check_directory_path(cfg.training.output_dir, "--output_dir")  # a file there: one line, before tokenizing
    source = resolve_model_source(cfg.model.model_name_or_path)  # a wrong path or offline hub id fails first
    tokenizer_name = cfg.model.tokenizer_name or source
    precision = choose_precision(cfg.training.bf16, cfg.training.fp16)
    check_launcher_fits_device(precision.device)
    # Under torchrun / accelerate launch this joins the process group (gloo on CPU); alone it is a
    # no-op. It must say cpu=True on CPU, as the Trainer's own state will, or several CPU processes
    # would each train alone. Only the main process prints and writes files.
    process = PartialState(cpu=precision.device == "cpu")
    main = process.is_main_process
    if not main:
        log = _quiet
    tokenizer = load_tokenizer(tokenizer_name, cfg.model.trust_remote_code)
    with main_process_first(process):  # the main process tokenizes and caches; the others load its cache
        splits, data_stats = load_or_preprocess(cfg.data, tokenizer_name, tokenizer, cfg.training.seed, log)
    train_set = splits["train"].select_columns(["input_ids", "labels"])
    eval_set = splits["validation"].select_columns(["input_ids", "labels"]) if "validation" in splits else None

    model_config = AutoConfig.from_pretrained(source, trust_remote_code=cfg.model.trust_remote_code)
    shape = ModelShape.from_config(model_config)
    # Before minutes of loading: ids beyond the embedding would fail deep inside the first forward pass.
    check_tokenizer_fits(tokenizer, tokenizer_name, model_config.get_text_config().vocab_size, source,
                         _max_token_id(train_set))
    longest = min(cfg.data.max_length, data_stats["tokens"]["length"]["max"])
    cfg = plan_for(cfg, shape, precision.device, precision.bytes_per_value, longest, log)
    out = Path(cfg.training.output_dir)
    configured, checkpoint = Plan.of(cfg), checkpoint_to_resume(cfg)
    cfg = adopt_recorded_plan(cfg, checkpoint.parent if checkpoint else out, log)  # what the memory probe chose
    check_output_dir(cfg, data_stats, log)  # also: a resume with values its checkpoint was not trained with
    if len(train_set) < cfg.training.per_device_train_batch_size:
        raise UserError(
            f"the training split has {len(train_set)} examples, fewer than one batch "
            f"({cfg.training.per_device_train_batch_size}); lower per_device_train_batch_size or add data."
        )
    estimate = check_fits(cfg, shape, precision.device, precision.bytes_per_value, longest, log)

    stop = GracefulStop()

    def build_trainer(cfg: Config, reused=None):
        """The Trainer for cfg, around reused = (LoRA model, its speed-ups), or a model loaded now."""
        if reused is None:
            set_seed(cfg.training.seed)  # the adapter's random init, too, must repeat for a given seed
            base = load_model(source, precision, quantization=quantization_config(cfg.model.use_4bit, precision),
                              trust_remote_code=cfg.model.trust_remote_code)
            base.config.use_cache = False  # no KV cache while training (and padding-free packing needs it off)
            align_special_tokens(base, tokenizer)
            model = apply_lora(base, cfg)
            reused = model, choose_speedups(cfg.training, precision.device, model, cfg.data.max_length)
        model, speedups = reused
        trainer = QwentuneTrainer(
            model=model,
            args=training_arguments(cfg, precision, speedups.packing, eval_set is not None),
            train_dataset=train_set,
            eval_dataset=eval_set,
            data_collator=make_collator(speedups.packing, tokenizer.pad_token_id),
            processing_class=tokenizer,
            speedups=speedups,
            # TensorBoard is added once the probe has settled the run (nothing is written before).
            # ProgressLog after ThroughputAndPerplexity, so its lines carry tokens/s and perplexity too.
            callbacks=[ThroughputAndPerplexity(), LiveProgress(), ProgressLog(), MarkCheckpointComplete(),
                       CurrentRunSettings(), stop, *callbacks],
        )
        trainer.remove_callback(PrinterCallback)  # LiveProgress shows the logs
        return trainer

    def estimate_of(cfg: Config) -> float | None:
        if shape is None:
            return None
        return sum(estimate_for(cfg, shape, precision.device, precision.bytes_per_value, longest).values())

    # A single process on a machine with several GPUs trains on all of them (transformers' DataParallel).
    devices = max(process.num_processes, torch.cuda.device_count() if precision.device == "cuda" else 1)
    if probe_wanted(cfg.training.memory_probe, precision.device, devices, measure_given=measure_peak is not None):
        # probe: what the memory probe measured and chose, kept in the run directory and the summary
        cfg, trainer, probe = fit_to_memory(cfg, build_trainer, train_set, measure_peak or cuda_peak, estimate_of,
                                            configured, four_bit_possible(precision.device),
                                            resuming=checkpoint is not None, log=log)
        estimate = estimate_of(cfg)
    else:
        trainer, probe = build_trainer(cfg), None
    model, speedups = trainer.model, trainer.speedups
    trainable, total = count_parameters(model)
    log(f"model {cfg.model.model_name_or_path}: {total / 1e6:.1f}M parameters, {trainable / 1e6:.2f}M trainable "
        f"(LoRA r={cfg.lora.lora_r}), {precision.name} on {precision.device}"
        + (", 4-bit NF4 base" if cfg.model.use_4bit else ""))
    log(f"speed-ups: {speedups.describe()}")
    log(f"data: {len(train_set)} training examples"
        + (f", {len(eval_set)} validation" if eval_set is not None else "")
        + f"; {cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps * process.num_processes}"
        f" examples per optimizer step")

    from torch.utils.tensorboard import SummaryWriter

    writer = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / RUN_CONFIG)
        write_json(out / RUN_DATA_STATS, data_stats)
        if probe is not None:
            write_json(out / RUN_MEMORY_PROBE, probe)
        writer = SummaryWriter(log_dir=cfg.training.logging_dir)
        trainer.add_callback(TensorBoardCallback(writer))  # after ThroughputAndPerplexity, which adds to the logs
    with main_process_first(process):  # the main process removes half-written checkpoints first
        resume = resolve_resume(cfg, log)
    started = time.perf_counter()
    stop.install()
    try:
        with attention_implementation(model.get_base_model(), speedups.attn_implementation):
            trainer.train(resume_from_checkpoint=resume)
    finally:
        stop.uninstall()
        if writer is not None:
            writer.close()
        if trainer.lean_loss is not None:
            trainer.lean_loss.remove()  # the returned model goes on to evaluate and generate without it
    seconds = time.perf_counter() - started

    state = trainer.state
    summary = {
        "status": "interrupted" if stop.received else "finished",
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "seconds": round(seconds, 1),
        "tokens_seen": int(state.num_input_tokens_seen),
        "tokens_per_second": round(state.num_input_tokens_seen / seconds, 1) if seconds else None,
        "peak_memory_gb": round(peak_memory_bytes(precision.device) / GB, 2),
        "estimated_peak_memory_gb": round(estimate / GB, 2) if estimate else None,
        "memory_probe": probe,
        **loss_summary(state.log_history),
        # By name, relative to the run directory: true from wherever the run is read (models.load.find_adapter).
        "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
        "precision": precision.name,
        "speedups": speedups.as_dict(),
        "device": precision.device,
        "parameters": {"total": total, "trainable": trainable},
        "data": {"train_examples": len(train_set), "validation_examples": len(eval_set) if eval_set else 0,
                 "source": data_stats["settings"].get("source")},
        "versions": library_versions(),
    }
    if not main:
        return TrainResult(out, stop.received, summary, trainer.model)
    plot_loss(state.log_history, out / "loss_curve.png")
    if stop.received:
        log(f"stopped at step {state.global_step}; checkpoint saved in {out}. Run the same command to resume.")
        write_json(out / RUN_SUMMARY, summary)
        return TrainResult(out, stop.received, summary, trainer.model)
    save_final(trainer, tokenizer, out, summary)
    log(
        f"done in {seconds / 60:.1f} min: {state.global_step} steps, {summary['tokens_seen']} tokens "
        f"({summary['tokens_per_second']} tokens/s), peak memory {summary['peak_memory_gb']} GB"
        + (f" (estimated {summary['estimated_peak_memory_gb']} GB)" if estimate else "")
    )
    if summary["best_checkpoint"] is not None and summary["best_eval_loss"] is not None:
        log(f"best eval loss {summary['best_eval_loss']:.4f} at {out / summary['best_checkpoint']}")
    log(f"adapter saved in {out}; loss curve {out / 'loss_curve.png'}; TensorBoard: "
        f"tensorboard --logdir {cfg.training.logging_dir}")
    return TrainResult(out, None, summary, trainer.model)
