"""What the chat, evaluate and export tab tests share: the page's settings pointed at the tiny model and the
adapter trained once per session (conftest's `trained`), and a config file for the page's model row."""

from __future__ import annotations

from pathlib import Path

import yaml

from qwentune.apps.webui.common import WebuiSettings


def processed_dir(trained: Path) -> Path:
    """Where training prepared the run's data (with its validation split): a cached build, since the run's
    processed_dir did not exist."""
    return next((trained / "cache" / "processed").iterdir())


def page_config_file(folder: Path, trained: Path, **keys) -> Path:
    """A config file for the page: fp32 (exact on any CPU), short greedy replies without repetition penalty,
    the run's validation split, results under `folder`."""
    values = {"bf16": False, "max_new_tokens": 24, "repetition_penalty": 1.0, "processed_dir": str(processed_dir(trained)),
              "eval_output_dir": str(folder / "eval"), **keys}
    path = folder / "page.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def page_settings(tmp_path_factory, tiny_model_dir: Path, trained: Path, config: Path | None = None) -> WebuiSettings:
    """The page as `qwentune webui` would start it in the test run's base folder (which holds the tiny model,
    the trained run and every test's tmp_path)."""
    return WebuiSettings(model_name_or_path=str(tiny_model_dir), adapter_path=str(trained / "out"),
                         config_path=str(config) if config else None, workdir=tmp_path_factory.getbasetemp())
