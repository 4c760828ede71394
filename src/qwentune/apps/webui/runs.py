"""Training runs started from the page: each is its own process, found again through its output directory.

A run is the CLI's own command, `qwentune train --config FILE` (qwentune.cli.main with Ctrl-C restored: _TRAIN),
started in a new session: it goes on when the browser closes or the webui server stops, a Ctrl-C in the webui's terminal does not reach it, and the
page cannot block on it. Stop sends it SIGINT, which the training takes as Ctrl-C (callbacks.GracefulStop: it
finishes the step, saves a checkpoint and stops); resume starts it again with resume_from_checkpoint auto. The
training process holds its output directory (fsutil.hold_output) and appends its progress to training_log.jsonl
inside it (callbacks.ProgressLog); the page only reads that, so any number of pages can watch a run.

What the page itself writes goes beside the output directory, never into it (RunFiles): the config the run was
started with, the process's stdout and stderr, and a record with its pid. Beside, as the lock file is: train
refuses a first start into a directory that already holds files (outputs.check_output_dir), and the log begins
before the training has even decided whether it may use the directory; a refused start must leave the directory
as it was. The record is what lets a page started later (the webui restarted) find a run that is still going.

No gradio here: train_tab.py calls these functions, and so do the tests.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...config import Config, save_config
from ...errors import UserError
from ...fsutil import check_directory_path, hold_output, output_holder, write_json
from ...training.outputs import RUN_SUMMARY, Progress, newest_complete_checkpoint, read_progress

# Exit codes of a run stopped by a signal: the CLI's 128 + signal after a graceful stop (130, 143), and a
# process ended by one (Popen's -signal). SIGKILL is not among them: nothing stops that way on purpose here, and
# it is how the kernel ends a process out of memory, which the page must say (failed, with the reason).
_STOPPED_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}
# The child takes Ctrl-C's default even when the webui was started with SIGINT ignored (`qwentune webui &` from a
# script): an ignored disposition is inherited, and Python then installs no KeyboardInterrupt for it, so Stop
# pressed before training's own handler is in place would be lost and the run would train to its end.
_TRAIN = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\ntry:\n"
          "    from qwentune.cli import main\nexcept KeyboardInterrupt:  # Stop while qwentune imports\n"
          "    print('interrupted', file=sys.stderr)\n    sys.exit(130)\nsys.exit(main())")
LOG_TAIL_LINES = 40
_LOG_TAIL_BYTES = 64 * 1024

# The runs this webui process started: their Popen objects give exit codes (and are reaped when polled).
_children: dict[Path, subprocess.Popen] = {}
_stopping: set[Path] = set()
_lock = threading.Lock()  # page events run in threads: one start or stop at a time


@dataclass(frozen=True)
class RunFiles:
    """The page's files for the run in output_dir, beside it: .NAME.webui.yaml, .NAME.webui.log, .NAME.webui.json."""

    output_dir: Path
    config: Path
    log: Path
    record: Path

    @classmethod
    def of(cls, output_dir: str | os.PathLike) -> "RunFiles":
        out = Path(os.path.realpath(output_dir))  # a symlinked output is found by where it points, as its lock is
        beside = out.parent / f".{out.name}.webui"
        return cls(out, Path(f"{beside}.yaml"), Path(f"{beside}.log"), Path(f"{beside}.json"))


@dataclass
class RunStatus:
    """Where the run in output_dir stands.

    state: idle (nothing has run there), starting (the process loads data and model), running, stopping (asked
    to stop, saving its checkpoint), finished, stopped, or failed. exit_code: the process's, when this webui
    process started it and it has ended (None otherwise). reason: why it failed, one line from its log."""

    output_dir: Path
    state: str
    pid: int | None = None
    exit_code: int | None = None
    reason: str = ""
    progress: Progress = field(default_factory=Progress)
    log_tail: str = ""

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "stopping")

    def describe(self) -> str:
        """One line after the state word: "step 3/8 (38%), epoch 0.75, loss 2.3145, eval loss 2.4012, ..."."""
        p = self.progress
        if self.state == "starting":  # what the log holds is an earlier run's until this one begins training
            return f"pid {self.pid}"
        parts = []
        if p.max_steps:
            parts.append(f"step {p.step}/{p.max_steps} ({100 * p.step / p.max_steps:.0f}%)")
        if p.epoch is not None and p.max_steps:
            parts.append(f"epoch {p.epoch:.2f}")
        if p.losses and p.losses[-1][1] is not None:
            parts.append(f"loss {p.losses[-1][1]:.4f}")
        if p.eval_losses and p.eval_losses[-1][1] is not None:
            parts.append(f"eval loss {p.eval_losses[-1][1]:.4f}")
        if p.latest.get("learning_rate") is not None and self.active:
            parts.append(f"lr {p.latest['learning_rate']:.2e}")
        if p.latest.get("tokens_per_second") and self.active:
            parts.append(f"{p.latest['tokens_per_second']:.0f} tokens/s")
        if self.pid is not None and self.active:
            parts.append(f"pid {self.pid}")
        if self.exit_code is not None and self.state == "failed":
            parts.append(f"exit code {self.exit_code}")
        if self.reason:
            parts.append(self.reason)
        return ", ".join(parts)


def output_path(cfg: Config, workdir: str | os.PathLike) -> Path:
    """cfg's output directory as the training process started in `workdir` will see it (absolute, links followed)."""
    return Path(os.path.realpath(Path(workdir) / Path(cfg.training.output_dir).expanduser()))


def start(cfg: Config, workdir: str | os.PathLike, resume: bool = False) -> RunStatus:
    """Start training cfg as its own process, in `workdir` (where cfg's relative paths point); returns its status.

    resume: continue from the newest complete checkpoint in the output directory (resume_from_checkpoint auto);
    UserError when there is none. Raises UserError, before anything is written or started, when the output
    directory is in use: by a run this page (or an earlier webui process) started that is still going, or by
    any other qwentune process holding it (the CLI's own check, fsutil.hold_output, and its message).
    The process's output is appended to RunFiles.log; cfg is saved to RunFiles.config with save_config."""
    if resume:
        cfg = replace(cfg, training=replace(cfg.training, resume_from_checkpoint="auto"))
    out = output_path(cfg, workdir)
    check_directory_path(out, "output_dir")
    files = RunFiles.of(out)
    # The record is held while it is written: two webui processes starting the same run at once, one is refused.
    with _lock, hold_output(files.record, "output_dir"):
        running = _running_pid(files)
        if running is not None:
            raise UserError(f"{out} is already being trained by process {running}; wait for it to finish, stop it, "
                            f"or choose another output_dir.")
        # After the check above: Resume pressed while the run is still starting (no checkpoint yet) is told that it
        # runs, not to "press Start", which would be refused.
        if resume and newest_complete_checkpoint(out, remove_incomplete=False) is None:
            raise UserError(f"{out} holds no complete checkpoint to resume from; press Start to begin a run there.")
        with hold_output(out, "output_dir"):  # a CLI run there: its own one-sentence refusal
            pass
        out.parent.mkdir(parents=True, exist_ok=True)
        save_config(cfg, files.config)
        command = [sys.executable, "-c", _TRAIN, "train", "--config", str(files.config)]
        with open(files.log, "ab") as log:
            offset = log.tell()
            log.write(f"\n=== qwentune webui, {time.strftime('%Y-%m-%d %H:%M:%S')}: {'resume' if resume else 'start'}"
                      f" in {workdir}: qwentune train --config {files.config}\n".encode())
            log.flush()
            # PYTHONUNBUFFERED: the log shows each line when it is printed, not a block later.
            process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                       **_own_session())
        write_json(files.record, {"pid": process.pid, "created": _created(process.pid), "started": time.time(),
                                  "log_offset": offset, "command": command, "workdir": str(workdir)})
        _children[out] = process
        _stopping.discard(out)
    return status(out)


def stop(output_dir: str | os.PathLike) -> RunStatus:
    """Ask the run training into output_dir to stop as Ctrl-C does (SIGINT): it finishes its step, saves a
    checkpoint and ends, to be resumed later. Asking again while it saves does nothing more. UserError when
    nothing is training there."""
    files = RunFiles.of(output_dir)
    out = files.output_dir
    with _lock:
        pid, ours = _running_pid(files), True
        if pid is None:
            pid, ours = output_holder(out), False  # a run started elsewhere (the CLI): it holds the directory
        if pid is None or pid == os.getpid():
            raise UserError(f"nothing is training into {out}, so there is nothing to stop.")
        if out not in _stopping:
            _interrupt(pid, whole_group=ours)
            _stopping.add(out)
    return status(out)


def status(output_dir: str | os.PathLike, tail_lines: int = LOG_TAIL_LINES) -> RunStatus:
    """The state, progress and log tail of the run in output_dir, from its files and (for a run this process
    started) its exit code. Only reads: safe to call every few seconds from any number of pages."""
    files = RunFiles.of(output_dir)
    out = files.output_dir
    progress = read_progress(out)
    record = _read_record(files)
    with _lock:
        child = _children.get(out)
        exit_code = child.poll() if child is not None else None
        stopping = out in _stopping
    pid = _running_pid(files, record)
    tail = _log_tail(files.log, tail_lines)
    if pid is not None:
        begun = progress.updated is not None and record is not None and progress.updated >= record["started"]
        state = "stopping" if stopping else ("running" if begun else "starting")
        return RunStatus(out, state, pid, progress=progress, log_tail=tail)
    holder = output_holder(out)
    if holder is not None and holder != os.getpid():  # a run started elsewhere (the CLI) trains there now
        return RunStatus(out, "stopping" if stopping else "running", holder, progress=progress, log_tail=tail)
    with _lock:
        _stopping.discard(out)
    if record is None and child is None:
        return _ended_status(out, progress, None, tail, since=None)
    since = record["started"] if record is not None else None
    reason = _error_line(files.log, record["log_offset"] if record else 0)
    return _ended_status(out, progress, exit_code, tail, since, reason)


def _ended_status(out: Path, progress: Progress, exit_code: int | None, tail: str, since: float | None,
                  reason: str = "") -> RunStatus:
    """The state of a run that is not running: from its exit code when known, else from its run summary (written
    at the end of a finished or gracefully stopped run; one older than `since` belongs to an earlier run)."""
    if exit_code is not None:
        state = "finished" if exit_code == 0 else "stopped" if exit_code in _STOPPED_CODES else "failed"
        if exit_code < 0 and state == "failed":  # ended by a signal before it could say anything itself
            reason = (f"killed by {signal.Signals(-exit_code).name}" + (" (out of memory, or kill -9); Resume "
                      "continues from the last checkpoint" if exit_code == -signal.SIGKILL else ""))
        return RunStatus(out, state, exit_code=exit_code, reason=reason if state == "failed" else "",
                         progress=progress, log_tail=tail)
    summary_file = out / RUN_SUMMARY
    summary = None
    if summary_file.is_file() and (since is None or summary_file.stat().st_mtime >= since - 1):
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = None
    if isinstance(summary, dict) and summary.get("status") in ("finished", "interrupted"):
        return RunStatus(out, "finished" if summary["status"] == "finished" else "stopped", progress=progress,
                         log_tail=tail)
    if since is None and progress.max_steps is None:
        return RunStatus(out, "idle", progress=progress, log_tail=tail)
    return RunStatus(out, "failed", progress=progress, log_tail=tail,
                     reason=reason or "it ended without a run summary (killed, or an error: see the log)")


def _own_session() -> dict:
    """Popen options that start the run in its own session (POSIX) or process group (Windows): signals meant for
    the webui (Ctrl-C in its terminal, its end) do not reach the training."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _interrupt(pid: int, whole_group: bool) -> None:
    """Ctrl-C for the run: SIGINT to its process group (it leads its own session, so that is the run and its
    helpers alone), or to the process only for one started elsewhere; CTRL_BREAK on Windows (GracefulStop takes
    SIGBREAK too)."""
    if os.name == "nt":
        os.kill(pid, signal.CTRL_BREAK_EVENT)
    elif whole_group:
        os.killpg(pid, signal.SIGINT)
    else:
        os.kill(pid, signal.SIGINT)


def _created(pid: int) -> float | None:
    """When process pid started (psutil), to tell it from a later process that reuses its pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(pid: int, created: float | None) -> bool:
    """Whether the process that started at `created` with this pid is still running (not a zombie: one whose
    parent, a webui process, has not collected its exit yet has ended all the same)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return (created is not None and math.isclose(process.create_time(), created, abs_tol=1.0)
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _read_record(files: RunFiles) -> dict | None:
    try:
        record = json.loads(files.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _running_pid(files: RunFiles, record: dict | None = None) -> int | None:
    """The pid of the page-started run training into files.output_dir, when it is still running: this webui's
    child, or the process an earlier webui process recorded (the same process: same pid and start time)."""
    child = _children.get(files.output_dir)
    if child is not None and child.poll() is None:
        return child.pid
    record = record or _read_record(files)
    if record is None or (child is not None and child.pid == record["pid"]):  # our child, ended
        return None
    return record["pid"] if _alive(record["pid"], record.get("created")) else None


def _read_tail(path: Path, size: int, offset: int = 0) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(offset, handle.seek(0, os.SEEK_END) - size))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of the log as a terminal would show them: of a line that a progress bar redrew
    with carriage returns, its last drawing."""
    text = _read_tail(path, _LOG_TAIL_BYTES)
    shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join(shown[-lines:]).strip("\n")


def _error_line(path: Path, offset: int) -> str:
    """The CLI's one-line error ("error: ...") of the latest run in the log, or ""."""
    text = _read_tail(path, _LOG_TAIL_BYTES, offset)
    errors = [line.strip() for line in text.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else ""
