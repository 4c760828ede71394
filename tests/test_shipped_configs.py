"""Every YAML in config/ loads and starts with the command that runs it (torchtune's rule)."""


import pytest

from qwentune.config import load_config
from tests.helpers import REPO

CONFIG_DIR = REPO / "config"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_shipped_configs():
    assert {p.name for p in SHIPPED} >= {"training_config.yaml", "eval_config.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_and_names_its_command(path):
    load_config(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and ("python " in first or "qwentune " in first), first


ACCELERATE = sorted((CONFIG_DIR / "accelerate").glob("*.yaml"))


def test_accelerate_configs_for_each_strategy():
    assert {p.name for p in ACCELERATE} == {"ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"}


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_loads_in_accelerate_and_shows_its_command(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # accelerate's own parser, as `accelerate launch` uses it
    assert config.num_processes == 2 and config.num_machines == 1
    assert f"accelerate launch --config_file config/accelerate/{path.name}" in path.read_text(encoding="utf-8")
