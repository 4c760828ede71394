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


