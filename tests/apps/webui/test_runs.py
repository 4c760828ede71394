"""Training started from the page (runs.py): real `python -m qwentune train` processes on the tiny model, followed
through their output directory; one run per directory; stop as Ctrl-C leaves a checkpoint that resume continues."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from qwentune.apps.webui import runs
from qwentune.errors import UserError
from qwentune.fsutil import numbered_checkpoints
from qwentune.training.callbacks import COMPLETE_MARKER, PROGRESS_LOG
from tests.helpers import held_by_another_process, tiny_config


def wait_until(predicate, output_dir, timeout=240.0):
    """Poll runs.status until predicate(status) holds; the status then."""
    deadline = time.monotonic() + timeout
    while True:
        status = runs.status(output_dir)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"{status.state}: {status.describe()}\n{status.log_tail}"
        time.sleep(0.3)


def test_a_run_from_start_to_finish_with_its_progress_and_one_run_per_directory(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=4)  # 4 steps, a loss each, evaluations at 2 and 4
    out = tmp_path / "out"
    assert runs.status(out).state == "idle"
    first = runs.start(cfg, tmp_path)
    assert first.state == "starting" and first.pid is not None

    with pytest.raises(UserError) as refused:  # the same directory while it trains: refused, nothing started
        runs.start(cfg, tmp_path)
    assert str(refused.value) == (f"{out} is already being trained by process {first.pid}; wait for it to finish, "
                                  f"stop it, or choose another output_dir.")
    # break-it: Resume while it starts (no checkpoint yet) said "press Start", which is refused as above.
    with pytest.raises(UserError, match=f"is already being trained by process {first.pid}"):
        runs.start(cfg, tmp_path, resume=True)
    assert runs.status(out).pid == first.pid

    done = wait_until(lambda s: not s.active, out)
    assert done.state == "finished" and done.exit_code == 0, done.log_tail
    progress = done.progress
    assert (progress.step, progress.max_steps, progress.ended) == (4, 4, True)
    assert [step for step, _ in progress.losses] == [1, 2, 3, 4] and all(loss > 0 for _, loss in progress.losses)
    assert [step for step, _ in progress.eval_losses] == [2, 4]
    assert "step 4/4 (100%)" in done.describe() and f"eval loss {progress.eval_losses[-1][1]:.4f}" in done.describe()
    assert "adapter saved in" in done.log_tail and "\r" not in done.log_tail

    # The training wrote its own directory; the page's files lie beside it.
    lines = [json.loads(line) for line in (out / PROGRESS_LOG).read_text().splitlines()]
    assert lines[0]["event"] == "begin" and lines[-1]["event"] == "end"
    assert all(line["max_steps"] == 4 and line["time"] > 0 for line in lines)
    assert any("tokens_per_second" in line for line in lines)
    files = runs.RunFiles.of(out)
    assert files.log.parent == files.config.parent == files.record.parent == tmp_path
    assert not [p.name for p in out.iterdir() if "webui" in p.name]
    assert json.loads(files.record.read_text())["pid"] == first.pid

    # A page started later (the webui restarted) knows nothing of this process but finds the run all the same.
    runs._children.clear()
    again = runs.status(out)
    assert again.state == "finished" and again.exit_code is None and again.progress.losses == progress.losses


def test_a_start_into_a_directory_another_process_holds_is_refused_before_anything(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=4)
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    with held_by_another_process(out) as pid:
        with pytest.raises(UserError) as refused:
            runs.start(cfg, tmp_path)
        assert str(refused.value) == (f"{out} is being written by another qwentune process (pid {pid}); wait for it "
                                      f"to finish or choose another output_dir.")
        watched = runs.status(out)  # a CLI run holding it shows as running, with its pid
        assert (watched.state, watched.pid) == ("running", pid)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no log, no record, no config written


def test_resume_without_a_checkpoint_and_stop_without_a_run_are_refused(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=4)
    with pytest.raises(UserError, match="holds no complete checkpoint to resume from; press Start"):
        runs.start(cfg, tmp_path, resume=True)
    with pytest.raises(UserError, match="nothing is training into .*, so there is nothing to stop"):
        runs.stop(tmp_path / "out")


@pytest.mark.slow  # ~20 s: the child imports torch and transformers before it finds the file missing
def test_a_failed_start_says_why(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=4, dataset_name=tmp_path / "missing.jsonl")
    failed = wait_until(lambda s: not s.active, runs.start(cfg, tmp_path).output_dir)
    assert failed.state == "failed" and failed.exit_code == 2
    assert failed.reason.startswith("error: ") and "missing.jsonl" in failed.reason
    assert "exit code 2" in failed.describe()


@pytest.mark.slow
def test_stop_saves_a_checkpoint_and_resume_continues_to_the_end(tmp_path, tiny_model_dir):
    # Long enough to be stopped while it trains; a loss every step; no regular checkpoint or evaluation.
    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=40, per_device_train_batch_size=1,
                      gradient_accumulation_steps=1, save_steps=1000, eval_steps=1000, val_size=0)
    out = tmp_path / "out"
    runs.start(cfg, tmp_path)
    wait_until(lambda s: s.state == "running" and s.progress.step >= 2, out)
    stopping = runs.stop(out)
    assert stopping.state == "stopping"
    assert runs.stop(out).state == "stopping"  # pressed again while it saves: still the one graceful stop
    stopped = wait_until(lambda s: not s.active, out)
    assert stopped.state == "stopped" and stopped.exit_code == 128 + signal.SIGINT, stopped.log_tail
    assert "SIGINT received: saving a checkpoint" in stopped.log_tail
    (checkpoint,) = numbered_checkpoints(out)
    assert (checkpoint / COMPLETE_MARKER).is_file() and not (out / "adapter_model.safetensors").exists()
    reached = int(checkpoint.name.split("-")[1])
    assert 2 <= reached < 40 and stopped.progress.step == reached

    resumed = runs.start(cfg, tmp_path, resume=True)
    assert resumed.state == "starting"
    done = wait_until(lambda s: not s.active, out)
    assert done.state == "finished" and done.exit_code == 0, done.log_tail
    assert f"resuming from {checkpoint}" in runs.RunFiles.of(out).log.read_text()
    assert [step for step, _ in done.progress.losses] == list(range(1, 41))  # one curve across the stop
    assert (out / "adapter_model.safetensors").is_file()


def test_a_run_killed_by_sigkill_is_failed_with_the_reason_and_a_signal_stop_is_stopped(tmp_path):
    out = tmp_path / "out"
    killed = runs._ended_status(out, runs.read_progress(out), -signal.SIGKILL, "", since=None)
    assert killed.state == "failed" and killed.reason.startswith("killed by SIGKILL (out of memory, or kill -9)")
    assert runs._ended_status(out, runs.read_progress(out), -signal.SIGSEGV, "", since=None).reason == "killed by SIGSEGV"
    for code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        assert runs._ended_status(out, runs.read_progress(out), code, "", since=None).state == "stopped"


def test_stop_reaches_a_run_started_by_a_webui_that_ignores_ctrl_c(tmp_path, tiny_model_dir):
    """break-it: `qwentune webui &` from a script ignores SIGINT; its runs inherited that, so Stop pressed while the
    model loaded was lost and the run trained to its end."""
    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=100_000)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's `&` leaves it
    try:
        started = runs.start(cfg, tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    # Stop once the child runs its first line (the ~50 ms of interpreter start before it are the only window left),
    # long before training installs its own handler: while torch and the model load.
    status_file = Path(f"/proc/{started.pid}/status")
    if not status_file.exists():
        pytest.skip("needs /proc to see the child's ignored signals")
    ignores_sigint = lambda: int(re.search(r"SigIgn:\s*([0-9a-f]+)", status_file.read_text())[1], 16) & (1 << 1)  # noqa: E731
    deadline = time.monotonic() + 30
    while ignores_sigint():
        assert time.monotonic() < deadline, "the training process still ignores SIGINT"
        time.sleep(0.01)
    assert runs.status(tmp_path / "out").progress.max_steps is None  # not training yet
    runs.stop(tmp_path / "out")
    done = wait_until(lambda s: not s.active, tmp_path / "out", timeout=120)
    assert done.state == "stopped" and done.exit_code == 130, done.log_tail
    assert started.pid is not None
