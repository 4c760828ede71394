"""Interrupted runs resume to exactly the adapter an uninterrupted run ends with (CPU, fp32, 1e-6).

The interruptions are real signals sent to a real training process: a callback in the child
process signals itself at a chosen step, which makes the test deterministic.
"""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from qwentune.errors import UserError
from qwentune.fsutil import numbered_checkpoints
from qwentune.training.callbacks import COMPLETE_MARKER
from qwentune.training.train import RUN_CONFIG, train
from tests.helpers import QA, REPO, signal_self_at, silent, tiny_config, tiny_options

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


@pytest.fixture
def interrupted(tmp_path, tiny_model_dir):
    """A run at learning rate 0.01 stopped by SIGTERM after step 3 of 4: checkpoint-3 to resume from."""
    result = train(tiny_config(tmp_path, tiny_model_dir, learning_rate=0.01, save_steps=100, eval_steps=100),
                   log=silent, callbacks=(signal_self_at(2),))
    out = tmp_path / "out"
    assert result.interrupted_by == signal.SIGTERM and [p.name for p in numbered_checkpoints(out)] == ["checkpoint-3"]
    return out


def test_resume_with_other_values_is_refused_and_nothing_recorded(interrupted, tmp_path, tiny_model_dir):
    saved = (interrupted / RUN_CONFIG).read_bytes()
    before = sorted(p.name for p in interrupted.iterdir())

    def resume(**changes):
        settings = dict(learning_rate=0.01, save_steps=100, eval_steps=100) | changes
        with pytest.raises(UserError) as refused:
            train(tiny_config(tmp_path, tiny_model_dir, **settings), log=silent)
        assert (interrupted / RUN_CONFIG).read_bytes() == saved  # no value that was not used is recorded
        assert sorted(p.name for p in interrupted.iterdir()) == before
        message = str(refused.value)
        assert "\n" not in message and message.endswith(
            "run with the checkpoint's values, or choose another --output_dir to start a new run.")
        return message

    assert "training.learning_rate 0.01 -> 0.5" in resume(learning_rate=0.5)
    assert "training.per_device_train_batch_size 4 -> 2" in resume(per_device_train_batch_size=2)
    assert "training.num_train_epochs 1.0 -> 2.0" in resume(num_train_epochs=2)
    # Several at once: one sentence names every one of them.
    message = resume(learning_rate=0.5, gradient_accumulation_steps=1, lora_dropout=0.0, max_length=96, eval_steps=1)
    for named in ("training.learning_rate 0.01 -> 0.5", "training.gradient_accumulation_steps 2 -> 1",
                  "lora.lora_dropout 0.1 -> 0.0", "data.max_length 128 -> 96", "training.eval_steps 100 -> 1"):
        assert named in message, message


def test_resume_applies_what_does_not_change_the_training(tmp_path, tiny_model_dir, reference_adapter, monkeypatch):
    """Logging and saving intervals, how many checkpoints are kept, the evaluation batch size and the output
    directory's spelling may change on resume: they are applied, said and recorded, and the adapter is still
    exactly the uninterrupted run's."""
    result = train(tiny_config(tmp_path, tiny_model_dir, **SETTINGS), log=silent, callbacks=(signal_self_at(5),))
    assert result.interrupted_by == signal.SIGTERM
    monkeypatch.chdir(tmp_path)  # the same run, its directory now spelled "out"
    lines = []
    train(tiny_config(tmp_path, tiny_model_dir, **SETTINGS | dict(logging_steps=3, save_steps=3, save_total_limit=2,
                                                                   per_device_eval_batch_size=3, output_dir="out")),
          log=lines.append)
    assert any(line.startswith("resuming with ") and "training.logging_steps 1 -> 3" in line
               and "training.output_dir" in line for line in lines), lines
    out = tmp_path / "out"
    assert_same_adapter(out, reference_adapter)
    history = json.loads((out / "checkpoint-14" / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in history if "loss" in e and e["step"] > 6] == [9, 12]  # the new logging interval
    assert "logging_steps: 3" in (out / RUN_CONFIG).read_text()


def test_grown_data_is_tokenized_again_for_a_new_run_and_refused_on_resume(tmp_path, tiny_model_dir):
    """Issue 17 case 1: 12 records trained, 12 added to the same file."""
    source = tmp_path / "grown.jsonl"

    def write(count):
        rows = [{"instruction": QA[i % 4][0], "input": "", "output": f"{QA[i % 4][1]} ({i})"} for i in range(count)]
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    settings = dict(dataset_name=source, val_size=0, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                    save_steps=1)
    write(12)
    assert train(tiny_config(tmp_path, tiny_model_dir, **settings), log=silent).summary["data"]["train_examples"] == 12
    write(24)
    lines = []
    train(tiny_config(tmp_path, tiny_model_dir, **settings, output_dir=tmp_path / "new"), log=lines.append)
    assert any(f"{source} changed since it was tokenized" in line and "(12 records then)" in line
               for line in lines), lines
    assert any(line.startswith("data: 24 training examples") for line in lines), lines
    # Resuming the first run: it would see 24 examples, so the checkpoint's data position means nothing.
    with pytest.raises(UserError, match=rf"the content of {source} \(12 -> 24 records\).*another --output_dir"):
        train(tiny_config(tmp_path, tiny_model_dir, **settings), log=silent)
