"""--report_to: TensorBoard by default; swanlab / wandb / mlflow through transformers' integrations, refused in
one sentence before anything is written when the package is missing."""

import importlib.util

import pytest

from qwentune.config import load_config
from qwentune.errors import UserError
from qwentune.models.precision import choose_precision
from qwentune.training.trackers import TRACKERS
from qwentune.training.train import training_arguments
from tests.helpers import tiny_options
from tests.test_cli_train import as_argv, one_line_error


def missing_trackers():
    return [name for name, module in TRACKERS.items() if importlib.util.find_spec(module) is None]


@pytest.mark.parametrize("tracker", ["swanlab", "wandb", "mlflow"])
def test_a_tracker_without_its_package_is_one_line_and_nothing_is_written(tmp_path, tiny_model_dir, capsys, tracker):
    if tracker not in missing_trackers():
        pytest.skip(f"{tracker} is installed here")
    options = tiny_options(tmp_path, tiny_model_dir, report_to=tracker)
    err = one_line_error(capsys, ["train", "--config", "config/training_config.yaml", *as_argv(options)])
    assert err == (f"error: training.report_to {tracker}: the {tracker} package is not installed; "
                   f"pip install {tracker}, or drop --report_to (TensorBoard, the default, needs nothing more).")
    for written in ("out", "logs", "processed", "cache"):
        assert not (tmp_path / written).exists()


def test_tensorboard_stays_the_default_and_the_others_reach_transformers():
    precision = choose_precision(False, False)
    cfg = load_config("config/training_config.yaml")
    assert cfg.training.report_to == "tensorboard"
    assert training_arguments(cfg, precision, True, False).report_to == []  # its callback is added by train()
    cfg = load_config("config/training_config.yaml", [("report_to", "swanlab")])
    assert training_arguments(cfg, precision, True, False).report_to == ["swanlab"]
    with pytest.raises(UserError, match="report_to must be one of 'tensorboard', 'swanlab', 'wandb', 'mlflow'"):
        load_config(None, [("report_to", "comet")])


def test_the_tracker_names_are_transformers_integrations():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(TRACKERS) <= set(INTEGRATION_TO_CALLBACK)
