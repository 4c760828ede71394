"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, tiny_options


def test_seed_evaluate_command_writes_results_and_finetuning_helps(trained, tiny_model_dir, tmp_path):
    options = tiny_options(trained, tiny_model_dir)
    common = ["--config", "config/eval_config.yaml", "--model_name_or_path", options["model_name_or_path"],
              "--processed_dir", str(trained / "cache" / "processed" / next(
                  p.name for p in (trained / "cache" / "processed").iterdir())),
              "--max_new_tokens", "24", "--repetition_penalty", "1.0", "--eval_output_dir", str(tmp_path / "eval")]
    results = {}
    for name, adapter in (("tuned", str(trained / "out")), ("base", "null")):
        run = subprocess.run([sys.executable, "scripts/evaluate.py", *common, "--adapter_path", adapter], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        out = Path(run.stdout.strip().splitlines()[-1].removeprefix("results in "))
        results[name] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert (out / "summary.md").read_text(encoding="utf-8").startswith("# Evaluation")
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == results[name]["metrics"]["examples"] == 4
    tuned, base = results["tuned"]["metrics"], results["base"]["metrics"]
    assert tuned["perplexity"] < base["perplexity"] / 10
    # Corpus BLEU-4 is 0 for both: 1-3 token replies hold no 4-grams; the smoothed sentence mean still ranks them.
    assert tuned["rouge_l"] > base["rouge_l"] and tuned["bleu_4_sentence_mean"] > base["bleu_4_sentence_mean"]
    assert tuned["stopped_by_itself"] == 1.0
    assert results["tuned"]["generation"]["max_new_tokens"] == 24 and "versions" in results["tuned"]




def test_nothing_left_to_score_is_one_line_and_writes_no_metrics(tiny_model_dir, tmp_path, capsys):
    """Case 8 of issue 17: every prompt longer than max_length left perplexity NaN in metrics.json, exit 0."""
    from qwentune.cli import main

    long_prompt = "What is the capital of France? Give three tips for staying healthy. " * 4
    data = tmp_path / "long.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"{long_prompt} ({i})", "input": "", "output": "Paris."})
                              for i in range(3)), encoding="utf-8")
    argv = ["evaluate", "--config", str(REPO / "config" / "eval_config.yaml"), "--model_name_or_path",
            str(tiny_model_dir), "--adapter_path", "null", "--eval_dataset", str(data), "--max_length", "16",
            "--metrics", "perplexity", "--eval_output_dir", str(tmp_path / "eval")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: perplexity: nothing left to score: in 3 of the 3 evaluation examples the prompt alone "
                       "fills data.max_length (16 tokens); raise --max_length, or leave perplexity out of --metrics.")
    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").iterdir())


def test_no_nan_reaches_a_json_file(tmp_path):
    import math

    import pytest

    from qwentune.evaluation.metrics import perplexity
    from qwentune.fsutil import write_json
    from qwentune.training.outputs import loss_summary

    with pytest.raises(ValueError):
        write_json(tmp_path / "metrics.json", {"perplexity": float("nan")})
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file
    with pytest.raises(ValueError):
        perplexity(0.0, 0)
    # A diverged run: its NaN losses are null in run_summary.json, with the reason beside them.
    history = [{"loss": 2.5, "step": 1}, {"eval_loss": 2.0, "step": 1}, {"loss": math.nan, "step": 2},
               {"eval_loss": math.inf, "step": 2}]
    summary = loss_summary(history)
    assert summary["first_train_loss"] == 2.5 and summary["final_train_loss"] is None
    assert summary["best_eval_loss"] == 2.0
    assert summary["non_finite_losses"].startswith("2 of 4 logged losses were NaN or infinite (shown as null)")
    write_json(tmp_path / "run_summary.json", summary)
    assert json.loads((tmp_path / "run_summary.json").read_text(encoding="utf-8")) == summary


def test_an_offline_eval_dataset_names_eval_dataset(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from qwentune.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["evaluate", "--config", str(REPO / "config" / "eval_config.yaml"), "--model_name_or_path",
            str(tiny_model_dir), "--adapter_path", "null", "--eval_dataset", "nobody/no-such-dataset",
            "--eval_output_dir", str(tmp_path / "eval")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "as --eval_dataset." in err and "--dataset_name" not in err, err
