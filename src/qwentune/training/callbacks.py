"""Trainer callbacks: a live progress bar, throughput and perplexity logs, safe checkpoints, graceful stop."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from ..fsutil import give_umask_modes

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
    """Ctrl-C or SIGTERM: finish the current optimizer step, save a checkpoint, stop.

    A second Ctrl-C interrupts at once (the default handler is back after the first).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
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
