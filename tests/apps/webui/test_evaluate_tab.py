"""The evaluate tab's handler called directly, on the tiny model and the adapter trained to answer the QA pairs."""

from __future__ import annotations

import json

import pytest

from qwentune.apps.webui import evaluate_tab
from qwentune.errors import UserError
from tests.apps.webui.tab_helpers import page_config_file, page_settings
from tests.helpers import QA, qa_file


@pytest.fixture
def page(tmp_path, tmp_path_factory, tiny_model_dir, trained):
    return page_settings(tmp_path_factory, tiny_model_dir, trained, page_config_file(tmp_path, trained))


def evaluate(page, dataset="", max_samples=None, metrics=("perplexity", "bleu", "rouge"), with_base=True,
             adapter=None):
    return evaluate_tab.run_evaluation(page, page.model_name_or_path,
                                       page.adapter_path if adapter is None else adapter, page.config_path, dataset,
                                       max_samples, list(metrics), with_base)


def test_validation_split_of_base_and_finetuned_metrics_predictions_and_files(page, tmp_path):
    metrics, predictions, status = evaluate(page)
    assert [row[0] for row in metrics][:3] == ["examples", "perplexity", "reply_tokens"]
    by_name = {row[0]: row[1:] for row in metrics}
    assert by_name["examples"][:2] == [4, 4]  # the run's validation split: 4 examples (val_size 4)
    base, tuned, better = by_name["perplexity"]
    assert tuned < base / 10 and better == "lower"
    assert by_name["ROUGE-L"][1] > by_name["ROUGE-L"][0] and by_name["stopped by itself"][1] == 1.0
    assert len(predictions) == 4 and all(len(row) == len(evaluate_tab.PREDICTION_HEADERS) for row in predictions)
    questions = dict(QA)
    for prompt, reference, prediction, base_prediction in predictions:
        assert questions[prompt] == reference == prediction  # the adapter memorized them
        assert base_prediction != reference
    written = sorted((tmp_path / "eval").iterdir())
    assert len(written) == 2 and written[0].name.endswith("-base") and str(written[1]) in status
    saved = {p.name.rsplit("-", 1)[-1]: json.loads((p / "metrics.json").read_text(encoding="utf-8")) for p in written}
    assert saved["out"]["metrics"]["perplexity"] == tuned and saved["base"]["metrics"]["perplexity"] == base
    assert saved["base"]["model"]["kind"] == "base" and saved["out"]["model"]["kind"] == "adapter"
    assert "4 examples from" in status and "validation" in status


def test_a_file_a_sample_limit_and_one_metric(page, tmp_path):
    data = qa_file(tmp_path, repeats=2)  # 8 rows
    metrics, predictions, status = evaluate(page, str(data), max_samples=3, metrics=["rouge"], with_base=False)
    assert {row[0] for row in metrics} == {"examples", "ROUGE-1", "ROUGE-2", "ROUGE-L", "stopped by itself"}
    assert all(row[1] is None for row in metrics) and [r for r in metrics if r[0] == "examples"][0][2] == 3
    assert [row[1:3] for row in predictions] == [[a, a] for _, a in QA[:3]] and all(r[3] == "" for r in predictions)
    assert str(data) in status


def test_perplexity_alone_generates_nothing_and_the_base_alone_has_one_column(page):
    metrics, predictions, _ = evaluate(page, metrics=["perplexity"], adapter="")
    assert predictions == [] and all(row[2] is None for row in metrics)
    assert {row[0] for row in metrics} == {"examples", "perplexity", "reply_tokens"}


def test_settings_data_and_paths_are_checked_before_the_model_loads(page, tmp_path, trained):
    with pytest.raises(UserError, match="evaluate settings: eval.metrics is empty"):
        evaluate(page, metrics=[])
    with pytest.raises(UserError, match="evaluate settings: eval.max_eval_samples must be at least 1"):
        evaluate(page, max_samples=-2)
    with pytest.raises(UserError, match="evaluation data: /etc/hosts is outside the folders"):
        evaluate(page, "/etc/hosts")
    with pytest.raises(UserError, match="no_such_dataset"):
        evaluate(page, "no_such_dataset")
    empty = tmp_path / "nothing"
    empty.mkdir()
    other = page_config_file(empty, trained, processed_dir=str(empty))
    with pytest.raises(UserError, match="no preprocessed data here"):
        evaluate_tab.run_evaluation(page, page.model_name_or_path, page.adapter_path, str(other), "", None,
                                    ["perplexity"], True)
