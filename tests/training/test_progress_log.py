"""The progress log a run appends to its output directory (callbacks.ProgressLog), as outputs.read_progress reads
it: what a resumed run logs again replaces what the stopped run had logged, and a line being written is skipped."""

import json

from qwentune.training.callbacks import PROGRESS_LOG
from qwentune.training.outputs import read_progress


def write(path, entries, tail=""):
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + tail, encoding="utf-8")


def test_a_resumed_run_replaces_the_steps_it_logs_again(tmp_path):
    first = [{"event": "begin", "step": 0, "max_steps": 8, "epoch": 0, "time": 1.0}]
    first += [{"event": "log", "step": s, "max_steps": 8, "epoch": s / 8, "time": 1.0 + s, "loss": 10.0 - s}
              for s in range(1, 8)]
    first.append({"event": "log", "step": 4, "max_steps": 8, "epoch": 0.5, "time": 5.5, "eval_loss": 9.0})
    first.append({"event": "log", "step": 6, "max_steps": 8, "epoch": 0.75, "time": 7.5, "eval_loss": 8.0})
    # Killed after step 7; resumed from checkpoint-4: steps 5 and 6 again, with other losses, then it ends.
    second = [{"event": "begin", "step": 4, "max_steps": 8, "epoch": 0.5, "time": 20.0}]
    second += [{"event": "log", "step": s, "max_steps": 8, "epoch": s / 8, "time": 20.0 + s, "loss": 1.0 * s}
               for s in (5, 6)]
    second.append({"event": "step", "step": 6, "max_steps": 8, "epoch": 0.75, "time": 27.0})
    write(tmp_path / PROGRESS_LOG, first + second, tail='{"event": "log", "step": 7, "max_st')

    progress = read_progress(tmp_path)
    assert progress.losses == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 5.0), (6, 6.0)]  # no stale step 7
    assert progress.eval_losses == [(4, 9.0)]  # the old run's evaluation at step 6 is gone with its steps
    assert (progress.step, progress.max_steps, progress.epoch, progress.updated) == (6, 8, 0.75, 27.0)
    assert progress.latest["loss"] == 6.0 and not progress.ended


def test_no_log_is_an_empty_progress_and_the_end_is_seen(tmp_path):
    assert read_progress(tmp_path).max_steps is None and read_progress(tmp_path).losses == []
    write(tmp_path / PROGRESS_LOG, [{"event": "begin", "step": 0, "max_steps": 2, "epoch": 0, "time": 1.0},
                                    {"event": "log", "step": 2, "max_steps": 2, "epoch": 1, "time": 2.0, "loss": None},
                                    {"event": "end", "step": 2, "max_steps": 2, "epoch": 1, "time": 3.0}])
    progress = read_progress(tmp_path)
    assert progress.ended and progress.losses == [(2, None)] and progress.step == 2
