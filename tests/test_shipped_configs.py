"""Every YAML in config/ loads and starts with the command that runs it (torchtune's rule)."""

from pathlib import Path

import pytest

from qwentune.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_shipped_configs():
    assert {p.name for p in SHIPPED} >= {"training_config.yaml", "eval_config.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_and_names_its_command(path):
    load_config(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and ("python " in first or "qwentune " in first), first
