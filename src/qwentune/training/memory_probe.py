"""Memory planned from a measurement: one training step at the data's worst batch, before the first step.

The estimate (memory.py) is arithmetic over the model's shape. A real step also holds what that arithmetic
leaves out: autocast copies, attention and matmul workspaces, allocator rounding, the loss head's blocks.
So on a GPU, before the first step, the run builds the largest batch its data can produce, runs one forward
and backward on it (the Trainer's own training_step, on the model prepared the way trainer.train() prepares
it), and reads the peak: torch.cuda.max_memory_allocated after reset_peak_memory_stats. When that peak,
plus what one step cannot show, is above the usable memory, it steps down and probes again:

    1. gradient checkpointing on                     the same result, about a third more compute
    2. a smaller micro-batch (halved), more gradient  the same examples per optimizer step, the same loss
       accumulation
    3. 4-bit NF4 base weights (QLoRA; when            changes the numerics, so last; the micro-batch goes
       bitsandbytes is installed)                     back to the configured one, which 4-bit may now hold

Running out of memory during a probe (torch.cuda.OutOfMemoryError) is a measurement too: that step does not fit.
Nothing fitting, even at batch 1 with both, is a UserError. memory.choose_plan, the estimate's chooser for
--hardware, takes 4-bit before a smaller batch; here a measurement stands behind each step, so the steps that
keep the run's result come first. The probe only steps down: settings that fit are kept, even when a larger
batch would fit too. The log shows each probe (its batch, the measured peak beside the estimate and the usable
memory) and the decision; the run directory keeps them in memory_probe.json, and run_summary.json too.

The worst batch, and where an out-of-memory error late in an epoch can still come from:
- Packed rows (the default): a micro-batch is ONE row holding all its examples back to back, so it is up to
  per_device_train_batch_size x max_length tokens, not max_length. Every cost of a step grows with the row's
  tokens (activations, the loss head) or with each example's length (attention runs per example), so the
  worst row is the per_device_train_batch_size longest examples of the training set, packed: that is the
  probe's batch.
- Padded batches (packing false): a batch is (rows, its longest example), and padding costs what real tokens
  cost, so the worst batch is the longest examples padded to the longest. Batches are grouped by length, and
  transformers' LengthGroupedSampler puts the batch holding the longest example first, but with the
  neighbours of its megabatch, not the longest rows of all; the probe takes those.
- The last batch of an epoch can be smaller, never larger. No example is longer than max_length
  (data.tokenize truncates).
- Labels: every position of the probe's batch is labelled (labels = input ids). The lean loss head keeps one
  hidden-size row per labelled token, so this is the most the head can hold for those tokens; the probe's
  loss itself is thrown away.
- Not shown by one step, so added to its peak: the gradients that gradient accumulation keeps from one
  micro-batch to the next, and AdamW's two moments, created at the first optimizer step: 3 x the bytes of the
  trainable parameters (an 8-bit optimizer holds less; the figure is an upper bound).
- Left to the margin, usable = USABLE_FRACTION of what the GPU has free for this process: the caching
  allocator's fragmentation over many differently shaped steps (PYTORCH_CUDA_ALLOC_CONF=
  expandable_segments:True nearly removes it), other programs taking GPU memory later, and evaluation (no
  backward: per_device_eval_batch_size rows, far less than a training step).

The probe leaves no trace: its random draws (dropout) are undone (torch.random.fork_rng, on the CPU and every
CUDA device), its gradients are set to None as the Trainer has them before its first step, and the model's
train/eval mode is restored. A run with the probe trains exactly as one without it, and a run the probe
stepped down trains exactly as one configured with the chosen settings (tests/training/test_memory_probe.py,
bit for bit, on CPU).

Where it runs (training.memory_probe): `auto` probes on CUDA with one process. Not on CPU: RAM is large, and
a process's RSS is no clean peak (ru_maxrss is a lifetime high-water mark that cannot be reset, and malloc
keeps freed memory). Not on several GPUs (torchrun / accelerate launch, or the DataParallel transformers uses when one
process sees several GPUs): the probe prepares the model with the Trainer's accelerator before
trainer.train(), which under DDP would leave the model unwrapped, and every process would have to agree on
the decision; that is not built. `false` turns it off; `true` insists.
The step and the loop are the same on any device: tests pass their own measure_peak and run them on CPU.

Continuing a run: running the same command again adopts what the probe chose for that run (read from its
memory_probe.json) before the resume check, since a checkpoint's batch settings cannot change; when resuming,
the probe then only checks them, and stops with a UserError if they no longer fit.
"""

from __future__ import annotations

import gc
import importlib.util
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

from ..errors import UserError
from ..fsutil import read_json_object
from .memory import GB, USABLE_FRACTION, Plan, apply_plan
from .speedups import attention_implementation

RUN_MEMORY_PROBE = "memory_probe.json"  # in the run directory: what was probed, measured and chosen


class Measurement(NamedTuple):
    peak: float  # bytes allocated at the step's peak, everything the process held included
    usable: float  # bytes the run may hold at its peak on this device


def next_plan(peak: float | None, usable: float | None, plan: Plan, configured: Plan,
              four_bit_possible: bool) -> Plan | None:
    """What to probe after `plan` measured `peak` bytes (None: it ran out of memory) against `usable` bytes.

    `plan` itself when it fits; else the next step down (module docstring), keeping batch x accumulation;
    None when nothing is left. `configured`: the settings the run asked for, to which the batch returns
    when 4-bit weights come in.
    """
    if peak is not None and usable is not None and peak <= usable:
        return plan
    if not plan.gradient_checkpointing:
        return replace(plan, gradient_checkpointing=True)
    if plan.batch_size > 1:
        # The largest divisor of the batch up to its half: the effective batch stays exact (6 -> 3, 3 -> 1).
        smaller = next(d for d in range(plan.batch_size // 2, 0, -1) if plan.batch_size % d == 0)
        return replace(plan, batch_size=smaller,
                       gradient_accumulation_steps=plan.gradient_accumulation_steps * plan.batch_size // smaller)
    if not plan.use_4bit and four_bit_possible:
        return replace(configured, gradient_checkpointing=True, use_4bit=True)
    return None


def probe_wanted(switch, device: str, devices: int, measure_given: bool) -> bool:
    """Whether this run probes (training.memory_probe: auto / true / false); UserError for true where it cannot.

    devices: how many devices one step runs on: the processes, or the GPUs that transformers' Trainer spreads
    one process over with torch's DataParallel when it sees several.
    """
    if switch is False:
        return False
    possible = (device == "cuda" or measure_given) and devices == 1
    if switch is True and not possible:
        raise UserError(f"training.memory_probe is true, but this run is on {devices} {device} device(s); the probe "
                        f"reads CUDA's peak-memory counters for one GPU in one process: set it to auto.")
    return possible


def four_bit_possible(device: str) -> bool:
    """4-bit NF4 weights can be loaded here (bitsandbytes installed; not on Apple MPS: models.load)."""
    return device != "mps" and importlib.util.find_spec("bitsandbytes") is not None


def cuda_peak(step: Callable[[], Any]) -> Measurement:
    """The peak bytes torch allocates on the current CUDA device while step() runs (raising
    torch.cuda.OutOfMemoryError when it runs out), and the usable bytes: what the driver reports free plus what
    torch's caching allocator already holds, times USABLE_FRACTION. The peak counter is reset after, so the
    run's summary reports the training's own peak."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()  # blocks cached by an earlier probe are free for this one
    free, _total = torch.cuda.mem_get_info()
    usable = (free + torch.cuda.memory_reserved()) * USABLE_FRACTION
    torch.cuda.reset_peak_memory_stats()
    try:
        step()
        torch.cuda.synchronize()
        return Measurement(torch.cuda.max_memory_allocated(), usable)
    finally:
        torch.cuda.reset_peak_memory_stats()


def longest_rows(dataset, count: int) -> list[dict[str, list[int]]]:
    """The `count` examples of a tokenized datasets.Dataset with the most tokens (ties: the earlier one),
    every position labelled (labels = input_ids; see the module docstring)."""
    import numpy as np
    import pyarrow.compute as pc

    # Read through datasets (not dataset.data), so a split that is an index mapping reads its own rows only.
    ids = dataset.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
    lengths = pc.list_value_length(ids).to_numpy()
    order = np.argsort(-lengths, kind="stable")[:count]
    return [{"input_ids": row, "labels": row} for row in dataset.select(order.tolist())["input_ids"]]


def prepare_as_train_will(trainer) -> None:
    """Do to trainer.model what trainer.train() does before its first step, so that a probe step is a real step.

    transformers 5 (Trainer.train, Trainer._prepare_for_training): activation checkpointing with the run's
    kwargs, then accelerate's prepare_model, which wraps forward in the autocast of a bf16 / fp16 run. The
    Trainer's own prepare later finds the model prepared (accelerate marks it _is_accelerate_prepared) and
    keeps it as it is; with one process prepare_model does nothing else to it. Enabling checkpointing again
    is harmless (it sets the same function and adds one more input-requires-grad hook).
    """
    model, args = trainer.model, trainer.args
    if args.activation_checkpointing:
        kwargs = dict(args.activation_checkpointing_kwargs or {}) or None
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    trainer.accelerator.prepare_model(model)


def traceless_step(trainer, batch: dict, measure_peak: Callable[[Callable[[], Any]], Measurement]) -> Measurement:
    """measure_peak of one trainer.training_step on `batch`, undoing its random draws, gradients and mode."""
    import torch

    model = trainer.model
    was_training = model.training
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            return measure_peak(lambda: trainer.training_step(model, batch))
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)


def _optimizer_state_to_come(model) -> int:
    """Bytes one step does not show: gradients kept across accumulation and AdamW's two moments."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def _batch_words(batch: dict, rows: int, packing: bool) -> tuple[list[int], str]:
    shape = list(batch["input_ids"].shape)
    how = "packed" if packing else "padded"
    return shape, f"{shape[0]} x {shape[1]} tokens, the {rows} longest example{'s' * (rows != 1)} {how}"


def fit_to_memory(cfg, build: Callable, train_set, measure_peak: Callable, estimate: Callable, configured: Plan,
                  four_bit: bool, resuming: bool, log=print):
    """Probe cfg's settings at the worst batch of train_set and step down until they fit (module docstring).

    build(cfg, reused=None) -> a QwentuneTrainer for cfg, around reused = (model, speedups), or around a model
    it loads: at first, and when 4-bit comes in (the caller holds no trainer meanwhile, so the 16-bit weights
    can go before the 4-bit ones are loaded). measure_peak(step) -> Measurement
    (cuda_peak on a GPU). estimate(cfg) -> the estimated peak in bytes or None. configured: the settings the
    run was asked for (before a recorded choice was adopted), for the record. four_bit: 4-bit is possible.
    resuming: a checkpoint's settings cannot change, so a misfit is a UserError.
    Returns (cfg, trainer, record): the settings that fit, their trainer, and what to keep in RUN_MEMORY_PROBE.
    """
    import torch

    plan = Plan.of(cfg)
    trainer = build(cfg)
    packing = trainer.speedups.packing
    probes = []
    while True:
        prepare_as_train_will(trainer)
        rows = longest_rows(train_set, plan.batch_size)
        batch = trainer.data_collator(rows)
        shape, words = _batch_words(batch, len(rows), packing)
        try:
            with attention_implementation(trainer.model.get_base_model(), trainer.speedups.attn_implementation):
                measured = traceless_step(trainer, batch, measure_peak)  # under the attention training runs
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError since torch 2.5, the same class
            measured = None
        del batch
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # what the step left cached is the next probe's, or the run's
        to_come = _optimizer_state_to_come(trainer.model)
        peak = None if measured is None else measured.peak + to_come
        usable = None if measured is None else measured.usable
        estimated = estimate(cfg)
        following = next_plan(peak, usable, plan, configured, four_bit)
        probes.append({"settings": asdict(plan), "batch_shape": shape, "peak_gb": _gb(peak),
                       "optimizer_state_gb": _gb(to_come), "estimated_gb": _gb(estimated), "usable_gb": _gb(usable),
                       "fits": following == plan})
        figures = ("ran out of memory" if measured is None else
                   f"{peak / GB:.2f} GB measured (with {to_come / GB:.2f} GB of gradients and AdamW state to come), "
                   + (f"{estimated / GB:.2f} GB estimated, " if estimated else "")
                   + f"{usable / GB:.2f} GB usable: " + ("fits" if following == plan else "too much"))
        log(f"memory probe: {plan.describe()} at its longest batch ({words}): {figures}")
        if following == plan:
            break
        if following is None or resuming:
            raise UserError(_misfit(cfg, plan, resuming))
        cfg = apply_plan(cfg, following)
        if following.use_4bit != plan.use_4bit:  # the model is loaded again with 4-bit weights
            _discard(trainer)
            trainer = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the 16-bit weights go before the 4-bit ones come
            trainer = build(cfg)
        else:
            reused = trainer.model, trainer.speedups
            _discard(trainer)
            trainer = build(cfg, reused)
        plan = following
    log(f"memory probe: keeping {plan.describe()}" if plan == configured else
        f"memory probe: training with {plan.describe()} (configured: {configured.describe()})")
    return cfg, trainer, {"configured": asdict(configured), "chosen": asdict(plan), "probes": probes}


def _discard(trainer) -> None:
    """Let a trainer go: its lean loss head's hook would otherwise keep each forward's hidden states."""
    if trainer.lean_loss is not None:
        trainer.lean_loss.remove()


def _gb(value: float | None) -> float | None:
    return None if value is None else round(value / GB, 3)


def _misfit(cfg, plan: Plan, resuming: bool) -> str:
    if resuming:
        return (f"resuming {cfg.training.output_dir}: its checkpoint was trained with {plan.describe()}, which no "
                f"longer fits this GPU at the longest batch of the data (memory probe above); free GPU memory, or "
                f"start a new run in another --output_dir, where the probe chooses smaller settings.")
    return (f"{cfg.model.model_name_or_path} does not fit this GPU at the longest batch of the data even with "
            f"{plan.describe()} (memory probe above); lower max_length, or use a smaller model.")


def adopt_recorded_plan(cfg, run_dir: Path | None, log=print):
    """cfg with the settings the memory probe chose for the run in run_dir, when cfg asks for the settings that
    run was configured with (running the same command again); else cfg as it is."""
    path = None if run_dir is None else Path(run_dir) / RUN_MEMORY_PROBE
    if path is None or not path.is_file():
        return cfg
    fix = "restore it, or start a new run in another --output_dir."
    record = read_json_object(path, fix)
    try:
        configured, chosen = Plan(**record["configured"]), Plan(**record["chosen"])
    except (KeyError, TypeError):
        raise UserError(f"{path}: not a memory probe record (configured / chosen settings); {fix}") from None
    if Plan.of(cfg) != configured or chosen == configured:
        return cfg
    log(f"memory probe: continuing {run_dir} with the settings the probe chose for it: {chosen.describe()}")
    return apply_plan(cfg, chosen)
