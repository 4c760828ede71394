"""Two training processes on CPU (torchrun or accelerate launch, gloo): the same adapter as one process with the same global batch."""

import subprocess
import sys

import pytest
import torch

from qwentune.training.train import train
from tests.helpers import REPO, qa_file, silent, tiny_config, tiny_options

LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # The shipped DDP config; accelerate's own launcher starts the processes through torchrun.
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "config/accelerate/ddp.yaml",
                   "--num_processes", "2"],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, tiny_model_dir, launcher):
    from safetensors.torch import load_file

    common = {"lora_dropout": 0.0, "gradient_accumulation_steps": 1, "max_steps": 4, "val_size": 0,
              "save_steps": 2, "dataset_name": qa_file(tmp_path)}
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    options = tiny_options(two, tiny_model_dir, per_device_train_batch_size=2, **common)
    args = [f"--{key}={value}" for key, value in options.items()]
    done = subprocess.run([*LAUNCHERS[launcher], "scripts/train.py", "--config", "config/training_config.yaml", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # One process printed and wrote: one summary, one preprocessing, a global batch of 2 x 2.
    assert done.stdout.count("done in") == 1 and done.stdout.count("wrote ") == 1, done.stdout
    assert "4 examples per optimizer step" in done.stdout
    checkpoint = two / "out" / "checkpoint-2"
    assert {"rng_state_0.pth", "rng_state_1.pth", "qwentune_complete"} <= {p.name for p in checkpoint.iterdir()}

    train(tiny_config(one, tiny_model_dir, per_device_train_batch_size=4, **common), log=silent)

    expected = load_file(one / "out" / "adapter_model.safetensors")
    got = load_file(two / "out" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow  # CI's 15 minutes; `pytest -m slow` runs it
def test_fsdp_config_on_cpu_stops_with_one_sentence(tmp_path, tiny_model_dir):
    """accelerate runs FSDP on GPUs only; on CPU it would quietly fall back to plain data parallel."""
    options = tiny_options(tmp_path, tiny_model_dir, max_steps=2, dataset_name=qa_file(tmp_path))
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           "config/accelerate/fsdp.yaml", "--num_processes", "2", "scripts/train.py", "--config",
                           "config/training_config.yaml", *[f"--{key}={value}" for key, value in options.items()]],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "error: the accelerate config asks for FSDP, which accelerate runs on GPUs only" in done.stderr
    assert "config/accelerate/ddp.yaml" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "processed").exists()  # nothing written


def test_bad_data_ends_the_whole_job_with_one_sentence_per_process(tmp_path, tiny_model_dir):
    """The main process stops on a malformed line while the other waits for its cache: no hang, no traceback of ours."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "hello"}\n{"instruction": broken\n', encoding="utf-8")
    options = tiny_options(tmp_path, tiny_model_dir, dataset_name=bad)
    done = subprocess.run([*LAUNCHERS["torchrun"], "scripts/train.py", "--config", "config/training_config.yaml",
                           *[f"--{key}={value}" for key, value in options.items()]],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    expected = [f"error: {bad}:2: not valid JSON (Expecting value at column 17); fix or delete that line.",
                "error: another process of this job stopped (its message is above); this one stops too."]
    assert sorted(ours) == sorted(expected), ours  # the two processes write in either order
    assert "[rank1]" not in done.stderr  # no traceback from the waiting process
    assert not (tmp_path / "out").exists() and not (tmp_path / "processed").exists()


DRIVER = """
import os, signal, sys
from transformers import TrainerCallback
from qwentune.config import load_config, parse_override_args
from qwentune.training.train import train

class SignalRankOne(TrainerCallback):  # only one process gets the signal
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), getattr(signal, os.environ["QWENTUNE_TEST_SIGNAL"]))

result = train(load_config(sys.argv[1], parse_override_args(sys.argv[2:])), callbacks=(SignalRankOne(),))
sys.exit(128 + result.interrupted_by if result.interrupted_by else 0)
"""


def torchrun(script, *args, signal_name="SIGTERM"):
    import os

    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "QWENTUNE_TEST_SIGNAL": signal_name})


@pytest.mark.slow  # CI's 15 minutes; `pytest -m slow` runs it
def test_two_processes_resume_after_a_signal_to_one_of_them(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from qwentune.training.callbacks import COMPLETE_MARKER

    settings = {"num_train_epochs": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                "save_steps": 4, "eval_steps": 4, "lora_dropout": 0.1}  # 28 examples / 4 a step: 14 steps
    adapters = []
    for name in ("reference", "interrupted"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        args = ["--config", "config/training_config.yaml",
                *(f"--{k}={v}" for k, v in tiny_options(run_dir, tiny_model_dir, **settings).items())]
        if name == "interrupted":
            driver = run_dir / "driver.py"
            driver.write_text(DRIVER)
            first = torchrun(driver, *args[1:])
            assert first.returncode != 0 and "SIGTERM received" in first.stdout + first.stderr
            # Both processes finished step 6 and saved it; nothing final was written.
            assert (run_dir / "out" / "checkpoint-6" / COMPLETE_MARKER).is_file(), first.stderr[-3000:]
            assert not (run_dir / "out" / "adapter_model.safetensors").exists()
        done = torchrun("scripts/train.py", *args)
        assert done.returncode == 0, done.stderr[-3000:]
        assert ("resuming from" in done.stdout and "checkpoint-6" in done.stdout) == (name == "interrupted")
        adapters.append(load_file(run_dir / "out" / "adapter_model.safetensors"))
    reference, resumed = adapters
    for key in reference:
        assert (resumed[key] - reference[key]).abs().max().item() <= 1e-6, key


@pytest.mark.slow  # CI's 15 minutes; `pytest -m slow` runs it
def test_a_killed_process_ends_the_job_and_the_last_checkpoint_resumes(tmp_path, tiny_model_dir):
    """SIGKILL to one of two processes: the launcher stops the other (no hang); resume continues."""
    from qwentune.training.callbacks import COMPLETE_MARKER

    settings = {"num_train_epochs": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                "save_steps": 4, "eval_steps": 4}
    args = [f"--{k}={v}" for k, v in tiny_options(tmp_path, tiny_model_dir, **settings).items()]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    killed = torchrun(driver, "config/training_config.yaml", *args, signal_name="SIGKILL")
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr  # torchrun names the signal that ended rank 1
    assert (tmp_path / "out" / "checkpoint-4" / COMPLETE_MARKER).is_file()
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    done = torchrun("scripts/train.py", "--config", "config/training_config.yaml", *args)
    assert done.returncode == 0 and "resuming from" in done.stdout, done.stderr[-3000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
