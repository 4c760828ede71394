"""Metric values against hand-computed examples (Chinese, English, mixed) and the libraries' own results."""

import math
import subprocess
import sys

import pytest
import torch

from qwentune.evaluation.metrics import (
    Metric,
    bleu,
    evaluation_metrics,
    llamafactory_scores,
    mean_of,
    metric_choices,
    perplexity,
    registered,
    reply_nll,
    rouge,
    text_metrics,
    words,
)


def test_words_are_jieba_words_lowercased_without_punctuation():
    assert words("我爱北京天安门, Hello World! LoRA 微调。") == ["我", "爱", "北京", "天安门", "hello", "world", "lora", "微调"]


def test_bleu_chinese_by_characters_hand_computed():
    # 4 characters, all 1- to 4-grams match: precisions are 1, so BLEU = brevity penalty exp(1 - 7/4).
    scores = bleu(["我爱北京"], ["我爱北京天安门"])
    assert scores["bleu_4"] == pytest.approx(100 * math.exp(1 - 7 / 4), abs=1e-3)
    assert bleu(["同样的句子"], ["同样的句子"]) == {"bleu_4": 100.0, "bleu_4_sentence_mean": 100.0}


def test_corpus_bleu_differs_from_the_mean_of_sentences():
    scores = bleu(["the cat sat on the mat", "完全不同"], ["the cat sat on the mat", "毫无关系的句子"])
    assert scores["bleu_4_sentence_mean"] == pytest.approx(50.0, abs=1.0)  # 100 and ~0
    assert scores["bleu_4"] != scores["bleu_4_sentence_mean"]


def test_rouge_chinese_words_hand_computed():
    # jieba: 我/爱/北京 vs 我/爱/北京/天安门. R1: P 3/3, R 3/4; R2: P 2/2, R 2/3; LCS 3.
    scores = rouge(["我爱北京"], ["我爱北京天安门"])
    assert scores["rouge_1"] == pytest.approx(100 * 2 * 0.75 / 1.75, abs=1e-3)
    assert scores["rouge_2"] == pytest.approx(80.0, abs=1e-3)
    assert scores["rouge_l"] == pytest.approx(scores["rouge_1"])


def test_rouge_english_hand_computed():
    scores = rouge(["The cat sat on the mat."], ["the cat is on the mat"])
    assert scores["rouge_1"] == pytest.approx(100 * 5 / 6, abs=1e-3)
    assert scores["rouge_2"] == pytest.approx(60.0, abs=1e-3)
    assert scores["rouge_l"] == pytest.approx(100 * 5 / 6, abs=1e-3)


def test_llamafactory_mode_equals_the_libraries_called_its_way():
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    prediction, reference = "今天天气很好，我们去公园。", "今天的天气很好，我们去公园散步吧。"
    expected_bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)
    expected_rouge = Rouge().get_scores(" ".join(jieba.cut(prediction)), " ".join(jieba.cut(reference)))[0]
    scores = llamafactory_scores([prediction], [reference])
    assert scores["bleu-4"] == pytest.approx(round(expected_bleu * 100, 4))
    assert scores["rouge-l"] == pytest.approx(round(expected_rouge["rouge-l"]["f"] * 100, 4))
    assert llamafactory_scores(["", "完全一样"], ["参考", "完全一样"])["rouge-1"] == pytest.approx(50.0)


def test_text_metrics_bundle():
    result = text_metrics(["Paris is the capital.", "巴黎是首都。"], ["Paris is the capital.", "巴黎是法国的首都。"])
    assert set(result) == {"bleu_4", "bleu_4_sentence_mean", "rouge_1", "rouge_2", "rouge_l", "llamafactory_compatible"}
    with pytest.raises(ValueError):
        text_metrics([], [])


def test_perplexity_is_token_weighted_and_matches_a_direct_computation(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, 8, 9, 10], [-100, 12, 13, -100, -100, -100]])
    total, count = reply_nll(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert count == 5
    with torch.no_grad():
        direct = 0.0
        for row in range(2):
            n = int(mask[row].sum())
            log_probs = torch.log_softmax(model(ids[row:row + 1, :n]).logits[0].double(), -1)
            direct -= sum(log_probs[t - 1, ids[row, t]].item() for t in range(n) if labels[row, t] != -100)
    assert total == pytest.approx(direct, rel=1e-5)
    assert perplexity(total, count) == pytest.approx(math.exp(direct / 5), rel=1e-5)


def test_metrics_module_loads_without_torch_or_scoring_libraries():
    # config/ imports the registry, so importing it must stay cheap.
    code = ("import sys, qwentune.evaluation.metrics; "
            "print(sorted(m for m in ('torch', 'jieba', 'sacrebleu', 'rouge_score', 'nltk') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr[-1500:] + run.stdout


def test_registry_defines_each_metric_once_with_its_choice_and_direction():
    names = [m.name for m in registered()]
    assert len(names) == len(set(names))
    assert metric_choices() == ["perplexity", "bleu", "rouge"]
    by_name = {m.name: m for m in registered()}
    assert by_name["perplexity"].better == "lower" and by_name["rouge_l"].better == "higher"
    assert by_name["mean_new_tokens"].better is None and by_name["stopped_by_itself"].choice is None


def test_evaluation_metrics_follow_the_choices():
    def names(choices):
        return [m.name for m in evaluation_metrics(choices)]

    assert names(["perplexity"]) == ["perplexity"]  # no answers generated, so no stop rate
    assert names(["rouge"]) == ["rouge_1", "rouge_2", "rouge_l", "stopped_by_itself"]
    assert names(["bleu", "perplexity"]) == ["perplexity", "bleu_4", "bleu_4_sentence_mean", "stopped_by_itself"]
    assert "mean_new_tokens" not in names(metric_choices())  # comparison only: metrics.json keeps its keys


def test_per_answer_scores_agree_with_the_corpus_functions():
    prediction, reference = "今天天气很好，我们去公园。", "今天的天气很好，我们去公园散步吧。"
    scores = rouge([prediction], [reference])
    by_name = {m.name: m for m in registered()}
    for name in ("rouge_1", "rouge_l"):
        assert by_name[name].per_answer(prediction, reference) == pytest.approx(scores[name], abs=1e-4)
    assert by_name["bleu_4"].per_answer(prediction, reference) == pytest.approx(
        bleu([prediction], [reference])["bleu_4_sentence_mean"], abs=1e-4)


@pytest.mark.parametrize("better, base, tuned, expected", [
    ("higher", 1.0, 2.0, 1), ("higher", 2.0, 1.0, -1), ("lower", 2.0, 1.0, 1), ("lower", 1.0, 2.0, -1),
    ("lower", 1.0, 1.0, 0), (None, 1.0, 2.0, 0), ("higher", None, 2.0, 0),
])
def test_improvement_follows_the_metric_direction(better, base, tuned, expected):
    metric = Metric("m", "M", better, "0-100", 100.0, "m", corpus=mean_of(lambda p, r: 0.0))
    assert metric.improvement(base, tuned) == expected


@pytest.mark.parametrize("fields, message", [
    ({"better": "up", "corpus": mean_of(lambda p, r: 0.0)}, "better must be"),
    ({"better": "higher"}, "exactly one of"),
    ({"better": "higher", "per_answer": lambda p, r: 0.0, "of_answer": lambda a: 0.0}, "needs its corpus score"),
])
def test_a_malformed_entry_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Metric("m", "M", unit="0-100", scale=100.0, choice="m", **fields)
