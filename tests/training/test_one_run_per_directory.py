"""One run per output directory, with real processes: a second training into a directory that another run is
writing stops at once (exit 2, one line, nothing written); a run killed with SIGKILL leaves a stale lock that the
next start simply takes."""

import subprocess
import sys
import time

from qwentune.fsutil import output_lock_path
from qwentune.training.callbacks import PROGRESS_LOG
from tests.helpers import REPO, tiny_options


def train_command(options):
    return [sys.executable, "scripts/train.py", "--config", "config/training_config.yaml",
            *[item for key, value in options.items() for item in (f"--{key}", value)]]


def tree(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def test_second_run_stops_at_once_and_a_killed_runs_lock_is_stale(tmp_path, tiny_model_dir):
    work = tmp_path / "work"
    work.mkdir()
    # Long enough to be still running when the second start is refused; no checkpoints, no evaluation.
    options = tiny_options(work, tiny_model_dir, max_steps=100000, save_steps=100000, eval_steps=100000, val_size=0)
    out = work / "out"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(train_command(options), cwd=REPO, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while not (out / PROGRESS_LOG).exists():  # begun when training begins, after data and model loading
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.5)
        before = tree(work)
        second = subprocess.run(train_command(options), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert second.stderr.strip().splitlines() == [
            f"error: {out} is being written by another qwentune process (pid {first.pid}); wait for it to finish "
            f"or choose another --output_dir."]
        assert tree(work) == before and first.poll() is None
    finally:
        first.kill()  # SIGKILL: no handler runs, the lock file stays behind
        first.wait()
    assert output_lock_path(out).is_file()
    third = subprocess.run(train_command({**options, "max_steps": "2"}), cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and not output_lock_path(out).exists()
