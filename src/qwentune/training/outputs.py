"""The output directory of a training run: who may use it, where to resume, and what it holds at the end.

A run's directory holds the final adapter (standard PEFT files), the tokenizer, a generation config
that stops at the end-of-turn token, the resolved config, a summary and a loss curve, and
checkpoint-N/ directories; a marker file says a checkpoint was completely written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..errors import UserError
from ..fsutil import give_umask_modes, numbered_checkpoints, write_json
from ..models.tokenizer import save_generation_config
from .callbacks import COMPLETE_MARKER

RUN_CONFIG = "qwentune_config.yaml"
RUN_SUMMARY = "run_summary.json"
# What makes two runs the same run: resuming into a directory with other values would mix them.
IDENTITY_KEYS = {"model": ["model_name_or_path", "use_4bit"], "data": ["dataset_name", "max_length"],
                 "lora": ["lora_r", "lora_alpha", "lora_target_modules", "use_rslora", "use_dora"]}


def newest_complete_checkpoint(output_dir: Path, log=print) -> Path | None:
    """The newest checkpoint that was completely written; half-written newer ones are removed."""
    for checkpoint in reversed(numbered_checkpoints(output_dir)):
        if (checkpoint / COMPLETE_MARKER).is_file():
            return checkpoint
        log(f"warning: {checkpoint} was not completely written (interrupted while saving); removing it")
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def check_output_dir(cfg: Config) -> None:
    """Refuse an output directory holding something other than this same run."""
    out = Path(cfg.training.output_dir)
    if not out.exists() or not any(out.iterdir()):
        return
    previous_file = out / RUN_CONFIG
    if not previous_file.is_file():
        raise UserError(
            f"{out}: the output directory already holds files that are not a qwentune run; "
            f"choose another --output_dir or empty it."
        )
    previous = load_config(previous_file)
    for section, keys in IDENTITY_KEYS.items():
        for key in keys:
            old, new = getattr(getattr(previous, section), key), getattr(getattr(cfg, section), key)
            if old != new:
                raise UserError(
                    f"{out}: holds a run with {section}.{key} = {old!r}, not {new!r}; choose another --output_dir "
                    f"to start a new run (or delete that directory)."
                )


def resolve_resume(cfg: Config, log=print) -> str | None:
    """The checkpoint to resume from (training.resume_from_checkpoint: auto, a path, or off), or None."""
    value = cfg.training.resume_from_checkpoint
    out = Path(cfg.training.output_dir)
    if value in (None, "", "false", "no"):
        return None
    if value == "auto":
        checkpoint = newest_complete_checkpoint(out, log) if out.is_dir() else None
        if checkpoint is not None:
            log(f"resuming from {checkpoint}")
        return str(checkpoint) if checkpoint else None
    path = Path(value)
    if not (path / COMPLETE_MARKER).is_file() and not (path / "trainer_state.json").is_file():
        raise UserError(f"training.resume_from_checkpoint: {value} is not a complete checkpoint directory.")
    return str(path)


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
