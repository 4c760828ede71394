"""Interrupted runs resume to exactly the adapter an uninterrupted run ends with (CPU, fp32, 1e-6).

The interruptions are real signals sent to a real training process: a callback in the child
process signals itself at a chosen step, which makes the test deterministic.
"""

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from qwentune.training.callbacks import COMPLETE_MARKER
from qwentune.training.train import train
from tests.helpers import REPO, silent, tiny_config, tiny_options

DRIVER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from qwentune.config import load_config, parse_override_args
    from qwentune.training.train import train

    signal_name, at_step, config, *options = sys.argv[1:]

    class SignalSelf(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(at_step):
                os.kill(os.getpid(), getattr(signal, signal_name))

    result = train(load_config(config, parse_override_args(options)), callbacks=(SignalSelf(),))
    sys.exit(128 + result.interrupted_by if result.interrupted_by else 0)
""")

# 28 training examples, batch 2 x accumulation 2: 7 optimizer steps an epoch, 14 in all; dropout on.
SETTINGS = dict(num_train_epochs=2, per_device_train_batch_size=2, gradient_accumulation_steps=2, save_steps=4,
                eval_steps=4, lora_dropout=0.1)


def run(args, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          **kwargs)


@pytest.fixture(scope="module")
def reference_adapter(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("reference")
    train(tiny_config(tmp, tiny_model_dir, **SETTINGS), log=silent)
    return load_file(tmp / "out" / "adapter_model.safetensors")


def interrupted_then_resumed(tmp_path, tiny_model_dir, signal_name, at_step):
    """Run training in a child process that sends itself `signal_name` at `at_step`; return (out, result, argv)."""
    options = [item for key, value in tiny_options(tmp_path, tiny_model_dir, **SETTINGS).items()
               for item in (f"--{key}", value)]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    first = run([driver, signal_name, at_step, "config/training_config.yaml", *options])
    return tmp_path / "out", first, ["scripts/train.py", "--config", "config/training_config.yaml", *options]


def assert_same_adapter(out: Path, reference):
    resumed = load_file(out / "adapter_model.safetensors")
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert (resumed[name] - tensor).abs().max().item() <= 1e-6, name


def test_sigterm_saves_a_checkpoint_and_resume_is_exact(tmp_path, tiny_model_dir, reference_adapter):
    out, first, same_command = interrupted_then_resumed(tmp_path, tiny_model_dir, "SIGTERM", 5)
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-2000:]
    assert "SIGTERM received" in first.stderr + first.stdout
    # The signal arrives in step 5; step 6 finishes and is saved (between the regular saves at 4 and 8).
    assert (out / "checkpoint-6" / COMPLETE_MARKER).is_file()
    assert not (out / "adapter_model.safetensors").exists()

    second = run(same_command)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout and "checkpoint-6" in second.stdout
    assert_same_adapter(out, reference_adapter)


def test_sigkill_loses_only_steps_since_the_last_checkpoint(tmp_path, tiny_model_dir, reference_adapter):
    out, first, same_command = interrupted_then_resumed(tmp_path, tiny_model_dir, "SIGKILL", 11)
    assert first.returncode == -signal.SIGKILL
    assert (out / "checkpoint-8" / COMPLETE_MARKER).is_file()
    # A newer checkpoint that was being written when the machine died: no marker, files missing.
    half = out / "checkpoint-12"
    shutil.copytree(out / "checkpoint-8", half)
    (half / COMPLETE_MARKER).unlink()
    (half / "optimizer.pt").unlink()

    second = run(same_command)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "checkpoint-12 was not completely written" in second.stdout
    assert "resuming from" in second.stdout and "checkpoint-8" in second.stdout
    assert_same_adapter(out, reference_adapter)
