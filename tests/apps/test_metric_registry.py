"""One registry entry is enough: a toy metric added only to the metrics registry is accepted by eval.metrics,
computed by evaluation, scored per answer and summarized by the comparison, shown in its HTML and Markdown
reports and in the demo's table, and coloured by its own better direction."""

import pytest

from qwentune.apps.compare import compare_batch, load_pair
from qwentune.apps.demo import summary_table
from qwentune.apps.report import render_html, render_markdown
from qwentune.config import Config, GenerationConfig, validate
from qwentune.errors import UserError
from qwentune.evaluation import metrics
from qwentune.evaluation.evaluate import evaluate_side, summary_markdown
from qwentune.inference.prompts import Question
from qwentune.models.load import load_for_inference
from tests.helpers import QA, silent

SETTINGS = GenerationConfig(max_new_tokens=16, do_sample=False, repetition_penalty=1.0)


def length_gap(prediction: str, reference: str) -> float:
    """How many characters longer or shorter than its reference an answer is: lower is better."""
    return float(abs(len(prediction) - len(reference)))


TOY = metrics.Metric("length_gap", "length gap", "lower", "characters", 100.0, "length",
                     corpus=metrics.mean_of(length_gap), per_answer=length_gap, place=25)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(metrics, "REGISTRY", [*metrics.REGISTRY, TOY])
    return TOY


def test_eval_metrics_choices_come_from_the_registry(toy):
    cfg = Config()
    assert cfg.eval.metrics == ["perplexity", "bleu", "rouge", "length"]  # the default: every choice
    cfg.eval.metrics = ["length"]
    validate(cfg, "test")
    cfg.eval.metrics = ["length", "meteor"]
    with pytest.raises(UserError, match="test: eval.metrics: unknown metric 'meteor'; "
                                        "choose from perplexity, bleu, rouge, length.$"):
        validate(cfg, "test")


def test_evaluation_computes_the_chosen_toy_metric_and_lists_it(toy, trained, tiny_model_dir):
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), log=silent)
    cfg = Config(generation=SETTINGS)
    cfg.eval.metrics = ["length"]
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in QA]
    sides = {}
    for side, adapter in (("base", False), ("finetuned", True)):
        values, rows = evaluate_side(loaded, conversations, cfg, adapter=adapter)
        gaps = [length_gap(r["prediction"], r["reference"]) for r in rows]
        assert values["length_gap"] == pytest.approx(sum(gaps) / len(gaps), abs=1e-4)
        # Only what "length" turns on, plus what always comes with generated answers.
        assert set(values) == {"examples", "length_gap", "llamafactory_compatible", "stopped_by_itself"}
        sides[side] = values
    assert sides["finetuned"]["length_gap"] == 0.0  # the adapter answers with the references themselves
    result = {"model": {"base": "b", "finetuned": "f", "kind": "adapter"}, "dataset": "qa", "metrics": values,
              "generation": {"max_new_tokens": 16}}
    assert "| length_gap | 0.0 |" in summary_markdown(result, rows)
    table = summary_table(sides["base"], sides["finetuned"])
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["length", "stopped"]  # by place: 25, 60
    assert "characters, lower is better" in table


def test_comparison_scores_summarizes_and_reports_the_toy_metric(toy, trained, tiny_model_dir):
    pair = load_pair(str(tiny_model_dir), str(trained / "out"), log=silent)
    questions = [Question(q, a) for q, a in QA] + [Question("A question without a reference")]
    report = compare_batch(pair, questions, SETTINGS)
    first = report["results"][0]
    assert set(first["finetuned"]["scores"]) == {"bleu_4", "rouge_1", "rouge_l", "length_gap"}
    assert first["finetuned"]["scores"]["length_gap"] == 0.0
    assert first["base"]["scores"]["length_gap"] == length_gap(first["base"]["answer"], QA[0][1])
    overall = report["summary"]["overall"]
    for side in ("base", "finetuned"):
        scored = [r[side]["scores"]["length_gap"] for r in report["results"] if r["reference"]]
        assert overall[side]["length_gap"] == round(sum(scored) / len(scored), 2)
        assert "length_gap" in report["corpus_metrics"][side]
    page = render_html(report)
    assert "<h3>length gap</h3>" in page and '<th colspan="2">length gap</th>' in page
    assert "length gap (characters)" in page and " · length gap 0.0" in page
    markdown = render_markdown(report)
    assert "| category | questions | ROUGE-L base | ROUGE-L fine-tuned | length gap base | length gap fine-tuned |" \
           in markdown


def synthetic_report(base: dict, tuned: dict) -> dict:
    summary = {"overall": {"questions": 1, "with_reference": 1, "base": base, "finetuned": tuned}, "by_category": {}}
    answer = {"answer": "a", "new_tokens": 1, "tokens_per_second": 1.0, "stopped": True, "scores": None}
    return {"models": {"base": "b", "finetuned": "f", "finetuned_kind": "adapter", "device": "cpu", "dtype": "fp32"},
            "generation": {"max_new_tokens": 8}, "timing": {"base": {"seconds": 1}, "finetuned": {"seconds": 1}},
            "summary": summary, "results": [{"id": 0, "category": "general", "question": "q", "reference": None,
                                             "base": answer, "finetuned": answer}]}


def test_each_metric_is_coloured_by_its_own_direction(toy):
    base = {"length_gap": 30.0, "rouge_l": 50.0, "bleu_4": 20.0, "mean_new_tokens": 10.0, "stopped_by_itself": 0.5}
    tuned = {"length_gap": 4.0, "rouge_l": 40.0, "bleu_4": 20.0, "mean_new_tokens": 99.0, "stopped_by_itself": 1.0}
    page = render_html(synthetic_report(base, tuned))
    row = page.split("<td>all questions</td>")[1].split("</tr>")[0]
    # Column order by place: ROUGE-L, length gap, BLEU-4, new tokens, stopped by itself.
    assert row == ('<td>1</td><td>50.0</td><td class="down">40.0</td><td>30.0</td><td class="up">4.0</td>'
                   '<td>20.0</td><td>20.0</td><td>10.0</td><td>99.0</td><td>0.5</td><td class="up">1.0</td>')
    worse = render_html(synthetic_report(base, {**tuned, "length_gap": 31.0}))
    assert '<td class="down">31.0</td>' in worse
