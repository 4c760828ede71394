"""Metric values against hand-computed examples (Chinese, English, mixed) and the libraries' own results."""

import math

import pytest
import torch

from qwentune.evaluation.metrics import bleu, llamafactory_scores, perplexity, reply_nll, rouge, text_metrics, words


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
