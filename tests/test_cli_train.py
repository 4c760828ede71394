"""The seed's train command as a user types it: offline and mistaken inputs end in one line and exit code 2."""

import os
import subprocess
import sys

from qwentune.cli import main
from tests.helpers import REPO, tiny_options


def test_seed_train_command_offline_says_what_to_do(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "scripts/train.py", "--config", "config/training_config.yaml",
                             "--output_dir", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the Hugging Face hub")
    assert "model 'Qwen/Qwen2-0.5B'" in result.stderr and "local model directory" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # progress bars of the work done before the mistake showed may precede it
    assert last.startswith("error: ") and "Traceback" not in err, err
    return last


def as_argv(options):
    return [item for key, value in options.items() for item in (f"--{key}", value)]


def test_train_option_mistakes(tmp_path, tiny_model_dir, capsys):
    base = ["train", "--config", "config/training_config.yaml"]
    options = tiny_options(tmp_path, tiny_model_dir)
    assert "did you mean --learning_rate" in one_line_error(capsys, base + as_argv(options) + ["--learnig_rate", "1"])
    assert "training.save_steps must be at least 1" in one_line_error(
        capsys, base + as_argv({**options, "save_steps": "0"}))
    err = one_line_error(capsys, base + as_argv({**options, "lora_target_modules": "qkv_proj"}))
    assert "qkv_proj not in this model" in err and "gate_proj" in err
    assert not (tmp_path / "out").exists()
