"""BLEU, ROUGE and perplexity, Chinese-aware; the arithmetic comes from maintained libraries.

Tokenization decides what these numbers mean, so it is fixed here:
- BLEU-4 (sacrebleu, tokenize="zh"): Chinese is scored per character, other text per word
  (13a rules), so mixed Chinese/English text works. Reported as the corpus score (one BLEU over
  all sentences, the standard way; it is 0 when no reply has four tokens) and as the mean of
  smoothed sentence scores.
- ROUGE-1/2/L (rouge-score): F-measures over jieba words (jieba keeps English words and
  numbers whole), lowercased, punctuation and spaces dropped; the mean over examples.
- LLaMA-Factory-compatible numbers, so results compare with papers and models that report
  them: BLEU-4 = NLTK sentence BLEU on characters with smoothing method 3, ROUGE = rouge-chinese
  F on jieba words; both x100 and averaged over examples.
All scores are on a 0-100 scale.

Perplexity is exp of the token-weighted mean negative log-likelihood over the reply tokens
(the same tokens that carry labels in training). It is NOT the mean of per-example
perplexities: that mean over-weights short replies and, exp being convex, is always at least
the pooled value; the pooled value is the one that equals exp(eval loss) of the model on the data.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.CRITICAL)
    jieba.initialize()
    return jieba


def words(text: str) -> list[str]:
    """jieba words, lowercased, without whitespace or punctuation tokens."""
    return [
        token.lower()
        for token in _jieba().cut(text)
        if token.strip() and not all(unicodedata.category(ch).startswith(("P", "S")) for ch in token.strip())
    ]


class _JiebaTokenizer:
    """The tokenizer interface rouge-score expects."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)


def bleu(predictions: list[str], references: list[str]) -> dict[str, float]:
    import sacrebleu

    corpus = sacrebleu.corpus_bleu(predictions, [references], tokenize="zh")
    sentences = [sacrebleu.sentence_bleu(p, [r], tokenize="zh").score for p, r in zip(predictions, references)]
    return {"bleu_4": round(corpus.score, 4), "bleu_4_sentence_mean": round(sum(sentences) / len(sentences), 4)}


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_JiebaTokenizer())
    totals = {"rouge_1": 0.0, "rouge_2": 0.0, "rouge_l": 0.0}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # rouge-score takes (target, prediction)
        totals["rouge_1"] += scores["rouge1"].fmeasure
        totals["rouge_2"] += scores["rouge2"].fmeasure
        totals["rouge_l"] += scores["rougeL"].fmeasure
    return {name: round(100 * value / len(predictions), 4) for name, value in totals.items()}


def llamafactory_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """The numbers LLaMA-Factory prints (scripts/eval_bleu_rouge.py and its SFT metric), for comparison."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba = _jieba()
    totals = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    for prediction, reference in zip(predictions, references):
        hypothesis, target = list(jieba.cut(prediction)), list(jieba.cut(reference))
        if " ".join(hypothesis).split() and " ".join(target).split():
            scores = Rouge().get_scores(" ".join(hypothesis), " ".join(target))[0]
            for key in ("rouge-1", "rouge-2", "rouge-l"):
                totals[key] += round(scores[key]["f"] * 100, 4)
        bleu_score = sentence_bleu([list(reference)], list(prediction),
                                   smoothing_function=SmoothingFunction().method3)
        totals["bleu-4"] += round(bleu_score * 100, 4)
    return {key: round(value / len(predictions), 4) for key, value in totals.items()}


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float | dict]:
    """BLEU and ROUGE as described above, plus the LLaMA-Factory-compatible set."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("predictions and references must be non-empty lists of equal length")
    return {**bleu(predictions, references), **rouge(predictions, references),
            "llamafactory_compatible": llamafactory_scores(predictions, references)}


@torch.no_grad()
def reply_nll(model, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Summed negative log-likelihood of the labelled (reply) tokens of a padded batch, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    total, count = 0.0, int((labels != -100).sum())
    # Upcast one row at a time: an fp32 copy of a whole batch of 151,936-wide logits is gigabytes.
    for row in range(logits.shape[0]):
        total += torch.nn.functional.cross_entropy(
            logits[row].float(), labels[row], ignore_index=-100, reduction="sum").item()
    return total, count


def perplexity(total_nll: float, tokens: int) -> float:
    return math.exp(total_nll / tokens) if tokens else float("nan")
