"""The command line's contract: a user's mistake is one line and exit code 2; a bug of ours keeps its
traceback, under one line that says it is a bug and how to report it."""

import pytest

from qwentune import __version__, cli


def test_a_bug_keeps_its_traceback_and_says_it_is_ours(monkeypatch, capsys):
    def broken(args, extra):
        raise KeyError("something qwentune got wrong")

    monkeypatch.setattr(cli, "cmd_datasets", broken)
    assert cli.main(["datasets"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'something qwentune got wrong'" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: this is a bug in qwentune, not a problem with your input; please report it")
    assert f"qwentune {__version__}" in last and "torch " in last


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"qwentune {__version__}"


@pytest.mark.parametrize("argv, message", [
    (["infer", "--prompt", "hi", "--repetition_penalty", "0"], "generation.repetition_penalty must be positive"),
    (["infer", "--prompt", "hi", "--repetition_penalty", "-1"], "generation.repetition_penalty must be positive"),
    (["infer", "--prompt", "hi", "--max_new_tokens", "0"], "generation.max_new_tokens must be at least 1"),
    (["infer", "--prompt", "hi", "--temperature", "nan", "--do_sample"], "generation.temperature must be a number"),
    (["compare", "--base-model", "m", "--finetuned-model", "m", "--interactive", "--repetition-penalty", "0"],
     "generation.repetition_penalty must be positive"),
    (["compare", "--base-model", "m", "--finetuned-model", "m", "--interactive", "--do_sample", "--temperature", "0"],
     "generation.temperature must be positive when do_sample is true"),
    (["infer", "--prompt", "hi", "--eval_batch_size", "0"], "eval.eval_batch_size must be at least 1"),
    (["evaluate", "--max_eval_samples", "0"], "eval.max_eval_samples must be at least 1, or null"),
    (["compare", "--base-model", "m", "--finetuned-model", "m", "--questions-file", "q.json", "--batch-size", "0"],
     "model_comparison: --batch-size is 0; it must be at least 1."),
])
def test_impossible_settings_on_the_command_line_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    """Case 5 of issue 17 (and its kind): the config's checks hold for the options of infer, evaluate and
    compare, before any model is loaded (the model names here do not exist)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_model_comparison_script_refuses_a_zero_repetition_penalty(tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    run = subprocess.run([sys.executable, str(REPO / "scripts" / "model_comparison.py"), "--base-model", "m",
                          "--finetuned-model", "m", "--questions-file", "q.json", "--repetition_penalty", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == ("error: defaults with command-line overrides: generation.repetition_penalty must be "
                                  "positive (1.0 means none).")


def test_an_unknown_option_lists_each_allowed_option_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["preprocess", "--dataset_name", "x.jsonl", "--learning_rate", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown option --learning_rate (options: " in err[0], err
    assert err[0].count("--processed_dir") == 1 and err[0].endswith(").") and "?." not in err[0], err
