"""Every command that writes an output refuses one that another qwentune process is writing: at once (before
any model or data is loaded), in one line naming the output, the other process and the option, having written
nothing; once the other process is gone the same command runs and leaves no lock file behind."""

import json

import pytest

from qwentune.cli import main
from qwentune.fsutil import output_lock_path
from tests.helpers import held_by_another_process, qa_file


def tree(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def commands(tmp_path, model_dir):
    """(argv, the output it writes, the option naming it) for each writing command. Paths to models and
    adapters need not exist: a busy output is refused first."""
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps([{"question": "2+2?", "reference": "4"}]), encoding="utf-8")
    out = tmp_path / "work"
    model = str(model_dir)
    return {
        "preprocess": (["preprocess", "--dataset_name", str(qa_file(tmp_path)), "--tokenizer_name", model,
                        "--max_length", "128", "--output_dir", str(out / "processed")], out / "processed",
                       "--output_dir"),
        "merge": (["infer", "--model_name_or_path", model, "--adapter_path", str(tmp_path / "adapter"), "--merge",
                   str(out / "merged")], out / "merged", "--merge"),
        "answers": (["infer", "--model_name_or_path", model, "--prompts_file", str(questions), "--output",
                     str(out / "answers.jsonl")], out / "answers.jsonl", "--output"),
        "compare": (["compare", "--base-model", model, "--finetuned-model", str(tmp_path / "adapter"),
                     "--questions-file", str(questions), "--output", str(out / "comparison.json")],
                    out / "comparison.json", "--output"),
        "rating": (["rating", "export", "--predictions", str(tmp_path / "predictions.jsonl"), "--output",
                    str(out / "sheet.csv")], out / "sheet.csv", "--output"),
    }


@pytest.mark.parametrize("command", ["preprocess", "merge", "answers", "compare", "rating"])
def test_an_output_another_process_writes_is_refused_at_once(tmp_path, tiny_model_dir, capsys, command):
    argv, output, option = commands(tmp_path, tiny_model_dir)[command]
    (tmp_path / "work").mkdir()
    with held_by_another_process(output) as pid:
        before = tree(tmp_path)
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == (
            f"error: {output} is being written by another qwentune process (pid {pid}); wait for it to finish or "
            f"choose another {option}.") and "Traceback" not in err
        assert tree(tmp_path) == before


def test_preprocess_runs_once_the_other_process_is_gone_and_leaves_no_lock(tmp_path, tiny_model_dir):
    argv, output, _ = commands(tmp_path, tiny_model_dir)["preprocess"]
    with held_by_another_process(output):
        assert main(argv) == 2
    assert main(argv) == 0
    assert (output / "stats.json").is_file() and not output_lock_path(output).exists()
