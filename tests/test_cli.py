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


def one_line_error(capsys, argv):
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "Traceback" not in err, err
    return err[len("error: "):]


def test_output_paths_of_the_wrong_kind_are_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """Issue 17 (outputs): a directory where a file is written, a file where a directory is, are one line,
    exit 2, before any model loads (the model named here does not exist: loading it first would be the error
    shown), and nothing is left behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "od").mkdir()
    (tmp_path / "f.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "p.txt").write_text("hi\n", encoding="utf-8")
    (tmp_path / "s.csv").write_text("item,prompt,answer,model,score,comment\n1,q,a,M1,4,\n", encoding="utf-8-sig")
    (tmp_path / "s.csv.key.json").write_text('{"M1": "a.jsonl"}', encoding="utf-8")
    model = ["--model_name_or_path", str(tmp_path / "no-model")]
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["infer", *model, "--prompts_file", "p.txt", "--output", "od"],
         "od is a directory; give a file path such as od/answers.jsonl as --output."),
        (["rating", "import", "--sheet", "s.csv", "--output", "od"],
         "od is a directory; give a file path such as od/scores.json as --output."),
        (["compare", "--base-model", "m", "--finetuned-model", "m", "--questions-file", "p.txt", "--output", "od"],
         "od is a directory; give a file path such as od/comparison_results.json as --output."),
        (["train", *model, "--output_dir", "f.txt"], "f.txt is a file; give a directory path as --output_dir."),
        (["evaluate", *model, "--eval_output_dir", "f.txt"],
         "f.txt is a file; give a directory path as --eval_output_dir."),
        (["infer", *model, "--adapter_path", "a", "--merge", "f.txt"],
         "f.txt is a file; give a directory path as --merge."),
        (["infer", *model, "--prompt", "hi", "--output", "a.jsonl"],
         "infer: --output goes with --prompts_file (the answers to a file of prompts); --prompt prints its answer "
         "and --merge writes to its own DIR."),
    ]
    for argv, message in cases:
        assert one_line_error(capsys, argv) == message, argv
        assert sorted(p.name for p in tmp_path.iterdir()) == before, argv  # no .od.tmp-*, no lock, no directory
    assert (tmp_path / "f.txt").read_text() == "mine" and not any((tmp_path / "od").iterdir())


def test_a_directory_given_as_an_input_file_says_so(tmp_path, monkeypatch, capsys):
    """Issue 17: a directory where a file is read is not "not found"; a missing prompts file is said before the
    model loads (the model named here does not exist)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    model = ["--model_name_or_path", str(tmp_path / "no-model")]
    cases = [
        (["train", "--config", "d"], "d is a directory, not a config file; give the file's path."),
        (["infer", *model, "--prompts_file", "d"], "d is a directory, not a prompts file; give the file's path."),
        (["infer", *model, "--prompts_file", "gone.txt"],
         "gone.txt: prompts file not found; check the path (formats: docs/model_comparison_guide.md)."),
        (["compare", "--base-model", "m", "--finetuned-model", "m", "--questions-file", "d"],
         "d is a directory, not a questions file; give the file's path."),
        (["datasets", "--dataset_registry", "d"],
         "d is a directory, not a dataset registry file; give the file's path."),
        (["rating", "import", "--sheet", "d"], "d is a directory, not a rating sheet file; give the file's path."),
    ]
    for argv, message in cases:
        assert one_line_error(capsys, argv) == message, argv


def test_an_unknown_option_lists_each_allowed_option_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["preprocess", "--dataset_name", "x.jsonl", "--learning_rate", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown option --learning_rate (options: " in err[0], err
    assert err[0].count("--processed_dir") == 1 and err[0].endswith(").") and "?." not in err[0], err
