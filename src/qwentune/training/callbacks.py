"""Trainer callbacks: a live progress bar, a progress log other programs can follow, throughput and perplexity
logs, safe checkpoints, graceful stop."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from ..fsutil import give_umask_modes

# The progress log in the output directory: one JSON object a line (ProgressLog; outputs.read_progress reads it).
PROGRESS_LOG = "training_log.jsonl"

# Written into checkpoint-N after the Trainer has finished writing it: a checkpoint without
# it was interrupted while saving and must not be resumed from.
COMPLETE_MARKER = "qwentune_complete"


class ThroughputAndPerplexity(TrainerCallback):
    """Adds tokens/s (non-padding tokens) to training logs and perplexity to evaluation logs.

    Registered before the TensorBoard callback, so both values reach the event files.
    """

    def __init__(self) -> None:
        self._last_time: float | None = None
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time, self._last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        if "loss" in logs and self._last_time is not None:
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            if now > self._last_time and tokens > self._last_tokens:
                logs["tokens_per_second"] = round((tokens - self._last_tokens) / (now - self._last_time), 1)
            self._last_time, self._last_tokens = now, tokens


class LiveProgress(TrainerCallback):
    """One progress bar with ETA, loss, learning rate and tokens/s; evaluation results as lines."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # one bar per job, not one per process
            return
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                        dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            postfix = {"loss": f"{logs['loss']:.4f}", "lr": f"{logs.get('learning_rate', 0):.2e}"}
            if "tokens_per_second" in logs:
                postfix["tok/s"] = f"{logs['tokens_per_second']:.0f}"
            self.bar.set_postfix(postfix, refresh=True)
        if "eval_loss" in logs:
            self.bar.write(f"step {state.global_step}: eval loss {logs['eval_loss']:.4f}, "
                           f"perplexity {logs['eval_perplexity']:.2f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ProgressLog(TrainerCallback):
    """Appends the run's progress to OUTPUT_DIR/training_log.jsonl as it trains, one JSON object a line, so that
    another program can follow a run it did not start: the web page's Train tab (which starts training as its own
    process), or a CLI user with `tail -f results/checkpoints/training_log.jsonl` or a plotting script.

    Lines: {"event": "begin", "step", "max_steps", "epoch", "time"} when training (or a resume) starts, at the
    step it starts from; {"event": "log", ...} with every Trainer log (loss, learning_rate, grad_norm,
    tokens_per_second, epoch; eval_loss and eval_perplexity after an evaluation); {"event": "step", ...} at
    most once every `every_seconds` between logs, so a bar can move when logging_steps is large; {"event":
    "end", ...} when training ends (also after a graceful stop). step and max_steps count optimizer steps;
    time is seconds since the epoch (time.time()).

    The file is appended, never rewritten: a resumed run, or a run killed and started again, logs some steps
    a second time after its "begin" line; outputs.read_progress keeps what the latest run says. Written by the
    main process only (the one that holds the output directory), line by line with one write each, so a reader
    sees whole lines but perhaps a cut last one (read_progress skips it). The first line is written once
    training starts, after the run's qwentune_config.yaml: the directory is then a qwentune run for
    outputs.check_output_dir.
    """

    def __init__(self, every_seconds: float = 1.0) -> None:
        self.every_seconds = every_seconds
        self._last_written = 0.0

    def _write(self, args, state, event: str, values: dict | None = None) -> None:
        if not state.is_world_process_zero:
            return
        now = time.time()
        entry = {"event": event, "step": state.global_step, "max_steps": state.max_steps,
                 "epoch": round(state.epoch, 4) if state.epoch is not None else None, "time": round(now, 3)}
        for key, value in (values or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in entry:
                entry[key] = value if math.isfinite(value) else None  # strict JSON: a diverged loss is null
        path = Path(args.output_dir) / PROGRESS_LOG
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, allow_nan=False) + "\n")
        self._last_written = now

    def on_train_begin(self, args, state, control, **kwargs):
        self._write(args, state, "begin")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self._write(args, state, "log", logs)

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self._last_written >= self.every_seconds:
            self._write(args, state, "step")

    def on_train_end(self, args, state, control, **kwargs):
        self._write(args, state, "end")


class MarkCheckpointComplete(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            give_umask_modes(checkpoint)  # safetensors writes the adapter 0600
            (checkpoint / COMPLETE_MARKER).write_text(f"{state.global_step}\n")


class CurrentRunSettings(TrainerCallback):
    """On resume, what transformers' TrainerState brings back from the checkpoint is made true for this run.

    The restored state holds the logging and saving intervals of the run that saved it (transformers
    only warns when they differ), and its best checkpoint as a path spelled from the directory that run
    was started in, which transformers drops when it does not resolve from here. outputs.check_output_dir
    lets those intervals change, so they are applied; the best checkpoint is found again by its name in
    this run's output directory.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        state.compute_steps(args, state.max_steps)
        best_step = getattr(state, "best_global_step", None)
        if state.best_model_checkpoint is not None:
            name = Path(state.best_model_checkpoint).name
        elif best_step:  # dropped by transformers: spelled from another directory
            name = f"checkpoint-{best_step}"
        else:
            return
        best = Path(args.output_dir) / name
        state.best_model_checkpoint = str(best) if best.is_dir() else None


class GracefulStop(TrainerCallback):
    """Ctrl-C or SIGTERM (Ctrl-Break on Windows): finish the current optimizer step, save a checkpoint, stop.

    A second Ctrl-C interrupts at once (the default handler is back after the first).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        # SIGBREAK: Windows' Ctrl-Break, which is how the web page stops a run there (apps/webui/runs.py).
        for sig in (signal.SIGINT, signal.SIGTERM, *((signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ())):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        tqdm.write(f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step, then stopping")

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_process_received(args.device):
            self.received = self.received or signal.SIGTERM
            control.should_save = True
            control.should_training_stop = True
        return control

    def _any_process_received(self, device) -> bool:
        """Whether any training process got the signal: they must all stop after the same step,
        or the ones still training would wait forever for the others in the next all-reduce."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.received is not None
        flag = torch.tensor([0 if self.received is None else 1], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
