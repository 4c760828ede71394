"""The output directory of a training run: who may use it, where to resume, and what it holds at the end.

A run's directory holds the final adapter (standard PEFT files), the tokenizer, a generation config
that stops at the end-of-turn token, the resolved config, the stats of the tokenized data it trained
on, what the memory probe measured and chose (memory_probe.py), a summary and a loss curve, a progress
log appended while it trains (training_log.jsonl: callbacks.ProgressLog, read by read_progress), and
checkpoint-N/ directories; a marker file says a checkpoint was completely written. Paths saved in these
files are relative to the run directory.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import KEY_TO_SECTION, Config, load_config
from ..errors import UserError
from ..fsutil import check_directory_path, give_umask_modes, numbered_checkpoints, write_json
from ..models.tokenizer import save_generation_config
from .callbacks import COMPLETE_MARKER, PROGRESS_LOG

RUN_CONFIG = "qwentune_config.yaml"
RUN_DATA_STATS = "data_stats.json"  # stats.json of the tokenized data the run trains on: its settings and counts
RUN_SUMMARY = "run_summary.json"
# What makes two runs the same run: starting again into a directory with other values would mix them.
IDENTITY_KEYS = {"model": ["model_name_or_path", "use_4bit"], "data": ["dataset_name", "max_length"],
                 "lora": ["lora_r", "lora_alpha", "lora_target_modules", "use_rslora", "use_dora"]}
# What a resumed run may change. transformers' Trainer restores the optimizer (with its learning rate),
# the schedule, the RNG and the data position from the checkpoint and skips the batches already seen by
# counting them, so another value of a key that shapes the weights could not be applied as a new run
# would apply it. These keys only say where files go, what is logged, saved and kept: none of them draws
# a random number or changes a sum. Not eval_steps: every evaluation's DataLoader draws its base seed
# from the global RNG (torch.utils.data), which moves every later dropout mask; nor the speed-up
# switches, which sum in another order or draw dropout differently. logging/save_steps come back from
# the checkpoint's TrainerState too: callbacks.CurrentRunSettings applies the new ones. The data is
# compared by the tokenized data's settings, its content included, so a dataset or tokenizer named from
# another directory is the same data.
RESUME_MAY_CHANGE = {
    "tokenizer_name", "trust_remote_code", "dataset_name", "dataset_registry", "num_proc", "cache_dir",
    "processed_dir", "output_dir", "logging_dir", "per_device_eval_batch_size", "logging_steps", "save_steps",
    "save_total_limit", "resume_from_checkpoint", "hardware", "memory_probe", "report_to", "hub",
    *(key for key, section in KEY_TO_SECTION.items() if section in ("eval", "generation")),
}
# The settings of the tokenized data (data_stats.json) that no config key shows, as a message names them.
DATA_CONTENT_KEYS = {"tokenizer_sha256": "the tokenizer", "chat_template_sha256": "the chat template",
                     "vocab_size": "the tokenizer's vocabulary size", "end_of_turn_token": "the end-of-turn token"}


def newest_complete_checkpoint(output_dir: Path, log=print, remove_incomplete: bool = True) -> Path | None:
    """The newest checkpoint that was completely written; half-written newer ones are removed
    (remove_incomplete=False only looks)."""
    for checkpoint in reversed(numbered_checkpoints(output_dir)):
        if (checkpoint / COMPLETE_MARKER).is_file():
            return checkpoint
        if remove_incomplete:
            log(f"warning: {checkpoint} was not completely written (interrupted while saving); removing it")
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def _resume_checkpoint(cfg: Config, log=print, remove_incomplete: bool = False) -> Path | None:
    value = cfg.training.resume_from_checkpoint
    out = Path(cfg.training.output_dir)
    if value in (None, "", "false", "no"):
        return None
    if value == "auto":
        return newest_complete_checkpoint(out, log, remove_incomplete) if out.is_dir() else None
    path = Path(value)
    if not (path / COMPLETE_MARKER).is_file() and not (path / "trainer_state.json").is_file():
        raise UserError(f"training.resume_from_checkpoint: {value} is not a complete checkpoint directory.")
    return path


def checkpoint_to_resume(cfg: Config) -> Path | None:
    """The checkpoint this run would resume from; only looks (resolve_resume removes half-written ones)."""
    return _resume_checkpoint(cfg)


def resume_differences(previous: Config, cfg: Config, old_data: dict | None,
                       new_data: dict) -> tuple[list[str], list[str]]:
    """(refused, accepted): "section.key old -> new" for every key whose value differs between the run's
    saved config and this one, split by RESUME_MAY_CHANGE; then what differs in the tokenized data's
    settings (old_data, new_data: stats.json contents; old_data None for a run that did not keep them,
    whose dataset_name must then stay as it was)."""
    refused, accepted = [], []
    for key, section in KEY_TO_SECTION.items():
        old, new = getattr(getattr(previous, section), key), getattr(getattr(cfg, section), key)
        if old != new:
            may_change = key in RESUME_MAY_CHANGE and not (key == "dataset_name" and old_data is None)
            (accepted if may_change else refused).append(f"{section}.{key} {old!r} -> {new!r}")
    if old_data is None:
        return refused, accepted
    old_settings, new_settings = old_data.get("settings", {}), new_data.get("settings", {})
    if old_settings.get("source_sha256") != new_settings.get("source_sha256"):
        refused.append(f"the content of {new_settings.get('source')} ({old_data.get('records_in')} -> "
                       f"{new_data.get('records_in')} records)")
    for key, what in DATA_CONTENT_KEYS.items():
        old, new = old_settings.get(key), new_settings.get(key)
        if old != new:
            refused.append(f"{what} {_short(old)} -> {_short(new)}")
    return refused, accepted


def _short(value: Any) -> str:
    return f"{value[:12]}..." if isinstance(value, str) and len(value) == 64 else repr(value)  # a sha256


def check_output_dir(cfg: Config, data_stats: dict, log=print) -> None:
    """Refuse an output directory holding something other than this same run, and a resume with values
    other than those its checkpoint was trained with (see RESUME_MAY_CHANGE). Nothing is written.

    data_stats: stats.json of the tokenized data this run would train on (data.preprocess).
    """
    out = Path(cfg.training.output_dir)
    check_directory_path(out, "--output_dir")  # a file there: one line, not mkdir's NotADirectoryError later
    holds_files = out.is_dir() and any(out.iterdir())
    if holds_files and not (out / RUN_CONFIG).is_file():
        raise UserError(
            f"{out}: the output directory already holds files that are not a qwentune run; "
            f"choose another --output_dir or empty it."
        )
    checkpoint = _resume_checkpoint(cfg)
    if checkpoint is not None:
        _check_resume(cfg, checkpoint, data_stats, log)
    if holds_files and (checkpoint is None or checkpoint.parent.resolve() != out.resolve()):
        _check_same_run(cfg, out)


def _check_resume(cfg: Config, checkpoint: Path, data_stats: dict, log) -> None:
    run = checkpoint.parent
    if not (run / RUN_CONFIG).is_file():
        log(f"warning: {run} has no {RUN_CONFIG}, so the settings {checkpoint} was trained with cannot be checked")
        return
    old_data_file = run / RUN_DATA_STATS
    old_data = json.loads(old_data_file.read_text(encoding="utf-8")) if old_data_file.is_file() else None
    refused, accepted = resume_differences(load_config(run / RUN_CONFIG), cfg, old_data, data_stats)
    if refused:
        raise UserError(
            f"{run}: cannot resume from {checkpoint.name} with values other than it was trained with "
            f"({'; '.join(refused)}), as the checkpoint's optimizer, schedule and data position belong to the "
            f"old ones; run with the checkpoint's values, or choose another --output_dir to start a new run."
        )
    if accepted:
        log(f"resuming with {', '.join(accepted)} (these do not change the training)")


def _check_same_run(cfg: Config, out: Path) -> None:
    """A start into a directory holding a run without resuming from its checkpoints: only the same run may go on there."""
    previous = load_config(out / RUN_CONFIG)
    for section, keys in IDENTITY_KEYS.items():
        for key in keys:
            old, new = getattr(getattr(previous, section), key), getattr(getattr(cfg, section), key)
            if old != new:
                raise UserError(
                    f"{out}: holds a run with {section}.{key} = {old!r}, not {new!r}; choose another --output_dir "
                    f"to start a new run (or delete that directory)."
                )


def resolve_resume(cfg: Config, log=print) -> str | None:
    """The checkpoint to resume from (training.resume_from_checkpoint: auto, a path, or off), or None.
    With auto, half-written checkpoints newer than the newest complete one are removed."""
    checkpoint = _resume_checkpoint(cfg, log, remove_incomplete=True)
    if checkpoint is not None:
        log(f"resuming from {checkpoint}")
    return str(checkpoint) if checkpoint else None


def save_final(trainer, tokenizer, out: Path, summary: dict[str, Any]) -> None:
    """Adapter (standard PEFT files), tokenizer, generation config with the end-of-turn stop, summary."""
    model = trainer.model
    staging = out / ".final-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    save_generation_config(model, tokenizer, staging)
    give_umask_modes(staging)  # safetensors writes the adapter 0600
    # Weights first, adapter_config.json last: its presence is what makes the directory an adapter.
    names = sorted((p.name for p in staging.iterdir()), key=lambda name: name == "adapter_config.json")
    for name in names:
        (staging / name).replace(out / name)
    staging.rmdir()
    write_json(out / RUN_SUMMARY, summary)


def plot_loss(log_history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (reply tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def loss_summary(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """first_train_loss, final_train_loss and best_eval_loss of a run's Trainer log history, for run_summary.json.

    A diverged run logs NaN or infinite losses; strict JSON cannot hold them (and min() over NaN is
    meaningless), so such a loss is null and `non_finite_losses` says how many there were and why."""
    train = [e["loss"] for e in log_history if "loss" in e]
    evals = [e["eval_loss"] for e in log_history if "eval_loss" in e]
    finite_evals = [x for x in evals if math.isfinite(x)]
    summary: dict[str, Any] = {
        "first_train_loss": train[0] if train and math.isfinite(train[0]) else None,
        "final_train_loss": train[-1] if train and math.isfinite(train[-1]) else None,
        "best_eval_loss": min(finite_evals) if finite_evals else None,
    }
    bad = sum(not math.isfinite(x) for x in train + evals)
    if bad:
        summary["non_finite_losses"] = (f"{bad} of {len(train) + len(evals)} logged losses were NaN or infinite "
                                        f"(shown as null): training diverged; lower learning_rate, or use bf16 "
                                        f"rather than fp16")
    return summary


@dataclass
class Progress:
    """What a run's progress log (callbacks.ProgressLog) says so far. Steps are optimizer steps."""

    step: int = 0  # the latest step reached
    max_steps: int | None = None  # None before training has begun
    epoch: float | None = None
    losses: list[tuple[int, float | None]] = field(default_factory=list)  # (step, training loss), by step
    eval_losses: list[tuple[int, float | None]] = field(default_factory=list)  # (step, validation loss)
    latest: dict[str, Any] = field(default_factory=dict)  # the last training log: learning_rate, tokens_per_second
    ended: bool = False  # the last line says training ended (finished, or stopped gracefully)
    updated: float | None = None  # time.time() of the last line


def read_progress(output_dir: str | Path) -> Progress:
    """The progress of the run in `output_dir`, from its training_log.jsonl (an empty Progress when there is none).

    A resumed run logs again the steps after its checkpoint that the stopped or killed run had already logged:
    at each "begin" line, what was logged after the step it begins at is dropped, and of two entries for one
    step the later one is kept, so the curve is the one the latest run trained. A cut last line (a line being
    written) is skipped. A loss that was NaN or infinite is None."""
    progress = Progress()
    path = Path(output_dir) / PROGRESS_LOG
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return progress
    losses: dict[int, float | None] = {}
    evals: dict[int, float | None] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            step = int(entry["step"])
        except (ValueError, KeyError, TypeError):  # a cut line, or not one of ours
            continue
        event = entry.get("event")
        if event == "begin":
            losses = {s: v for s, v in losses.items() if s <= step}
            evals = {s: v for s, v in evals.items() if s <= step}
        if event == "log" and "loss" in entry:
            losses[step] = entry["loss"]
            progress.latest = entry
        if event == "log" and "eval_loss" in entry:
            evals[step] = entry["eval_loss"]
        progress.step, progress.max_steps = step, entry.get("max_steps", progress.max_steps)
        progress.epoch, progress.updated = entry.get("epoch", progress.epoch), entry.get("time", progress.updated)
        progress.ended = event == "end"
    progress.losses, progress.eval_losses = sorted(losses.items()), sorted(evals.items())
    return progress
