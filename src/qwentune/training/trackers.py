"""Experiment trackers: TensorBoard always (event files in training.logging_dir), plus at most one of
transformers' own integrations (SwanLab, Weights & Biases, MLflow) named by training.report_to.

Only the standard library here: config/schema.py takes the allowed values from this module.
"""

from __future__ import annotations

import importlib.util

# report_to value -> the module its package installs (and transformers' integration of the same name:
# transformers.integrations.INTEGRATION_TO_CALLBACK). mlflow-skinny installs the mlflow module too.
TRACKERS = {"tensorboard": "tensorboard", "swanlab": "swanlab", "wandb": "wandb", "mlflow": "mlflow"}
TRACKER_CHOICES = tuple(TRACKERS)


def check_tracker(name: str) -> None:
    """UserError, before any work starts, when the tracker's package is not installed."""
    from ..errors import UserError

    module = TRACKERS[name]
    if importlib.util.find_spec(module) is None:
        raise UserError(f"training.report_to {name}: the {module} package is not installed; "
                        f"pip install {module}, or drop --report_to (TensorBoard, the default, needs nothing more).")


def report_to(name: str) -> list[str] | str:
    """TrainingArguments.report_to: the extra integration; TensorBoard's callback is added by train.py itself,
    writing to training.logging_dir once the memory probe has settled the run."""
    return "none" if name == "tensorboard" else [name]
