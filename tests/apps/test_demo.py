"""`qwentune demo` end to end, shortened (2 training steps, 4 held-out examples, 8 new tokens)."""

import json

import pytest

from qwentune.cli import main
from qwentune.errors import UserError
from qwentune.models.gguf_source import embedded_demo_gguf


def test_shortened_demo_runs_end_to_end(tmp_path, capsys):
    try:
        embedded_demo_gguf()
    except UserError as error:  # neither installed nor downloadable (offline)
        pytest.skip(str(error))
    out = tmp_path / "results"
    code = main(["demo", "--max_steps", "2", "--max_eval_samples", "4", "--max_new_tokens", "8",
                 "--output_dir", str(out / "adapter"), "--logging_dir", str(out / "logs"),
                 "--processed_dir", str(tmp_path / "processed"), "--cache_dir", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert code == 0
    for step in ("1/4 training", "2/4 evaluating", "3/4 answering", "4/4 done"):
        assert step in printed
    assert "perplexity (held out)" in printed and "fine-tuned" in printed
    report = json.loads((out / "comparison_results.json").read_text(encoding="utf-8"))
    assert len(report["results"]) == 20 and report["models"]["one_base_copy"]
    assert (out / "comparison_results.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
