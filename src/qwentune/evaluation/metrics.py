"""The metrics registry, and BLEU, ROUGE and perplexity, Chinese-aware; the arithmetic comes from maintained libraries.

REGISTRY (at the end) defines every metric once: its key in results, label, better direction, unit and
scale, the `eval.metrics` choice that turns it on, and its function(s). Evaluation, the comparison, its
HTML/Markdown report and the demo's table all read it, and config/ takes the allowed `eval.metrics`
names from it, so adding a metric is adding one entry. This module imports neither torch nor the scoring
libraries at load time: config/ imports it.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

# (predictions, references) -> one score over the whole set; (prediction, reference) -> one answer's score.
CorpusScore = Callable[[list[str], list[str]], float]
AnswerScore = Callable[[str, str], float]


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


def mean_of(per_answer: AnswerScore) -> CorpusScore:
    """A corpus score that is the plain mean of a per-answer score over the examples (same scale)."""
    def corpus(predictions: list[str], references: list[str]) -> float:
        return sum(map(per_answer, predictions, references)) / len(predictions)

    corpus.__name__ = f"mean_{per_answer.__name__}"
    return corpus


def sentence_bleu(prediction: str, reference: str) -> float:
    """Smoothed BLEU-4 of one answer against its reference, 0-100 (sacrebleu, tokenize="zh")."""
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference], tokenize="zh").score


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """One BLEU-4 over all sentences, 0-100 (sacrebleu, tokenize="zh"); 0 when no reply has four tokens."""
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references], tokenize="zh").score


def bleu(predictions: list[str], references: list[str]) -> dict[str, float]:
    """bleu_4 (the corpus score) and bleu_4_sentence_mean (mean of sentence scores), 0-100, 4 decimals."""
    return {"bleu_4": round(corpus_bleu(predictions, references), 4),
            "bleu_4_sentence_mean": round(mean_of(sentence_bleu)(predictions, references), 4)}


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_JiebaTokenizer())


@lru_cache(maxsize=4096)
def _rouge_f(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures of one answer, 0-100. Cached: ROUGE-1, -2 and -L each ask for the same pair,
    and one scoring pass (jieba on both texts) gives all three. Callers must not modify the result."""
    scores = _rouge_scorer().score(reference, prediction)  # rouge-score takes (target, prediction)
    return {"rouge_1": 100 * scores["rouge1"].fmeasure, "rouge_2": 100 * scores["rouge2"].fmeasure,
            "rouge_l": 100 * scores["rougeL"].fmeasure}


def rouge_1(prediction: str, reference: str) -> float:
    """ROUGE-1 F of one answer over jieba words, 0-100."""
    return _rouge_f(prediction, reference)["rouge_1"]


def rouge_2(prediction: str, reference: str) -> float:
    """ROUGE-2 F of one answer over jieba words, 0-100."""
    return _rouge_f(prediction, reference)["rouge_2"]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F of one answer over jieba words, 0-100."""
    return _rouge_f(prediction, reference)["rouge_l"]


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """rouge_1, rouge_2, rouge_l: the mean over examples of each answer's F-measure, 0-100, 4 decimals."""
    return {score.__name__: round(mean_of(score)(predictions, references), 4) for score in (rouge_1, rouge_2, rouge_l)}


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


def text_metrics(predictions: list[str], references: list[str],
                 metrics: list[Metric] | None = None) -> dict[str, float | dict]:
    """Each reference-scored metric's corpus score (default: every one in the registry; 4 decimals, on the
    metric's own scale), plus the LLaMA-Factory-compatible set. Raises ValueError unless both lists are
    non-empty and of equal length."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("predictions and references must be non-empty lists of equal length")
    metrics = [m for m in registered() if m.corpus is not None] if metrics is None else metrics
    return {**{m.name: round(m.corpus(predictions, references), 4) for m in metrics},
            "llamafactory_compatible": llamafactory_scores(predictions, references)}


def reply_nll(model, batch: dict[str, Any]) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the labelled (reply) tokens of a padded batch of tensors
    (input_ids, attention_mask, labels with IGNORE_INDEX elsewhere), and their count."""
    import torch  # here, not at module level: config/ imports this module, and must stay light

    from ..data.tokenize import IGNORE_INDEX

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        logits = logits[:, :-1]
        total, count = 0.0, int((labels != IGNORE_INDEX).sum())
        # Upcast one row at a time: an fp32 copy of a whole batch of 151,936-wide logits is gigabytes.
        for row in range(logits.shape[0]):
            total += torch.nn.functional.cross_entropy(
                logits[row].float(), labels[row], ignore_index=IGNORE_INDEX, reduction="sum").item()
    return total, count


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(total_nll / tokens), at least 1. Raises ValueError when there are no tokens: there is no perplexity
    of nothing, and a NaN would reach metrics.json (callers say why nothing was left to score first)."""
    if tokens < 1:
        raise ValueError("perplexity of no tokens")
    return math.exp(total_nll / tokens)


def reply_perplexity(loaded, conversations: list[list[dict[str, str]]], cfg, adapter: bool = True,
                     label: str = "") -> dict[str, float]:
    """The pooled perplexity of a model's reply tokens (4 decimals) and how many there were (reply_tokens).

    The conversations are tokenized and masked exactly as in training (cfg.data.max_length; longer ones are
    dropped) and run in batches of cfg.eval.eval_batch_size, with the adapter on or off."""
    from tqdm.auto import tqdm

    from ..data.collate import pad_batch
    from ..data.tokenize import DROPPED_NO_REPLY, tokenize_batch
    from ..errors import UserError
    from ..models.tokenizer import control_tokens, end_of_turn_token

    tokenizer, batch_size = loaded.tokenizer, cfg.eval.eval_batch_size
    tokens = tokenize_batch({"messages": conversations}, tokenizer, cfg.data.max_length,
                            end_of_turn_token(tokenizer), control_tokens(tokenizer))
    rows = [{"input_ids": i, "labels": l} for i, l, s in zip(tokens["input_ids"], tokens["labels"], tokens["status"])
            if not s.startswith("dropped")]
    if not rows:  # a perplexity of no tokens would be NaN in metrics.json
        too_long = sum(status == DROPPED_NO_REPLY for status in tokens["status"])
        other = len(conversations) - too_long
        raise UserError(
            f"perplexity{f' ({label})' if label else ''}: nothing left to score: in {too_long} of the "
            f"{len(conversations)} evaluation examples the prompt alone fills data.max_length "
            f"({cfg.data.max_length} tokens)"
            + (f" and {other} hold special-token text in their content" if other else "")
            + "; raise --max_length, or leave perplexity out of --metrics.")
    total, count = 0.0, 0
    with loaded.adapter(adapter):
        for start in tqdm(range(0, len(rows), batch_size), desc=f"perplexity {label}".strip(), unit="batch",
                          leave=False):
            batch = pad_batch(rows[start:start + batch_size], tokenizer.pad_token_id)
            nll, n = reply_nll(loaded.model, {k: v.to(loaded.model.device) for k, v in batch.items()})
            total, count = total + nll, count + n
    return {"perplexity": round(perplexity(total, count), 4), "reply_tokens": count}


def stopped(answer: Mapping[str, Any]) -> float:
    """1.0 when a generated answer ended on its own (end-of-turn), 0.0 when max_new_tokens cut it."""
    return float(answer["stopped"])


def new_tokens(answer: Mapping[str, Any]) -> float:
    """How many tokens a generated answer has."""
    return answer["new_tokens"]


@dataclass(frozen=True)
class Metric:
    """One metric, defined once. Its values come from exactly one source:

    - corpus (+ per_answer): generated answers scored against references. corpus(predictions, references)
      is the score over the set (evaluation, the comparison's corpus_metrics); per_answer(prediction,
      reference), where given, is one answer's score: the comparison shows it per answer and averages it.
    - of_answer: a property of each generated answer, read from its record ("new_tokens": int,
      "stopped": bool) and averaged over the answers.
    - from_model: the model itself on the evaluation conversations, no generation:
      from_model(loaded, conversations, cfg, adapter, label) -> {name: value, plus any companion counts}.
    Raises ValueError when the fields do not fit together.
    """

    name: str  # the key in results: metrics.json, comparison scores and summaries
    label: str  # what people read: report headings, the demo's table
    better: Literal["higher", "lower"] | None  # None: neither (a length); never coloured up or down
    unit: str  # how to read a value: "0-100", "tokens", "share of answers (0-1)"
    scale: float | None  # a report bar's full length (100 for 0-100); None: unbounded, no bar
    choice: str | None  # the eval.metrics choice that turns it on; None: on whenever answers are generated
    corpus: CorpusScore | None = None
    per_answer: AnswerScore | None = None
    of_answer: Callable[[Mapping[str, Any]], float] | None = None
    from_model: Callable[..., dict[str, float]] | None = None
    # In the short tables (the report's summary and Markdown tables, each answer's line, the demo's table);
    # False: only in full listings (metrics.json, summary.md, corpus_metrics) and the report's bars.
    headline: bool = True
    # Order in the report and the demo, lowest first. The registry's own order is that of metrics.json and
    # summary.md, which group metrics by choice.
    place: int = 100
    in_evaluation: bool = True  # False: comparison only (mean_new_tokens; metrics.json keeps its keys)

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower", None):
            raise ValueError(f"metric {self.name}: better must be 'higher', 'lower' or None, not {self.better!r}")
        if sum(f is not None for f in (self.corpus, self.of_answer, self.from_model)) != 1:
            raise ValueError(f"metric {self.name}: give exactly one of corpus, of_answer, from_model")
        if self.per_answer is not None and self.corpus is None:
            raise ValueError(f"metric {self.name}: a per_answer score needs its corpus score")

    @property
    def needs_answers(self) -> bool:
        """True when the metric is read from generated answers."""
        return self.from_model is None

    def improvement(self, base: float | None, tuned: float | None) -> int:
        """+1 when `tuned` is better than `base` by this metric's direction, -1 when worse, 0 when equal,
        missing or the metric has no better direction."""
        if self.better is None or base is None or tuned is None or base == tuned:
            return 0
        return 1 if (tuned > base) == (self.better == "higher") else -1


REGISTRY: list[Metric] = [
    Metric("perplexity", "perplexity", "lower", ">= 1", None, "perplexity",
           from_model=reply_perplexity, place=10),
    # The comparison scores each answer with sentence BLEU; evaluation reports the corpus BLEU.
    Metric("bleu_4", "BLEU-4", "higher", "0-100", 100.0, "bleu", corpus=corpus_bleu, per_answer=sentence_bleu,
           place=40),
    Metric("bleu_4_sentence_mean", "BLEU-4 (sentence mean)", "higher", "0-100", 100.0, "bleu",
           corpus=mean_of(sentence_bleu), headline=False, place=45),
    # ROUGE-2 has no per-answer score, so the comparison's per-answer scores keep their three keys.
    Metric("rouge_1", "ROUGE-1", "higher", "0-100", 100.0, "rouge", corpus=mean_of(rouge_1), per_answer=rouge_1,
           headline=False, place=30),
    Metric("rouge_2", "ROUGE-2", "higher", "0-100", 100.0, "rouge", corpus=mean_of(rouge_2), headline=False,
           place=35),
    Metric("rouge_l", "ROUGE-L", "higher", "0-100", 100.0, "rouge", corpus=mean_of(rouge_l), per_answer=rouge_l,
           place=20),
    Metric("mean_new_tokens", "new tokens (mean)", None, "tokens", None, None, of_answer=new_tokens, place=50,
           in_evaluation=False),
    Metric("stopped_by_itself", "stopped by itself", "higher", "share of answers (0-1)", 1.0, None,
           of_answer=stopped, place=60),
]


def registered() -> tuple[Metric, ...]:
    """Every metric, in registry order; read at call time, so an entry added to REGISTRY counts everywhere."""
    return tuple(REGISTRY)


def metric_choices() -> list[str]:
    """The names `eval.metrics` accepts, in registry order: perplexity, bleu, rouge."""
    return list(dict.fromkeys(m.choice for m in registered() if m.choice is not None))


def evaluation_metrics(choices: list[str]) -> list[Metric]:
    """What `qwentune evaluate` computes for these eval.metrics choices, in registry order. Metrics without
    a choice (stopped_by_itself) come with the answers, which are generated only when a chosen metric needs them."""
    chosen = [m for m in registered() if m.in_evaluation and m.choice in choices]
    if not any(m.needs_answers for m in chosen):
        return chosen
    return [m for m in registered() if m.in_evaluation and (m.choice is None or m.choice in choices)]


def comparison_metrics() -> list[Metric]:
    """What the comparison summarizes per side, in the order of its summary: answer properties first
    (mean_new_tokens, stopped_by_itself), then per-answer scores against references (bleu_4, rouge_1, rouge_l)."""
    return ([m for m in registered() if m.of_answer is not None]
            + [m for m in registered() if m.per_answer is not None])


def by_place(metrics: Iterable[Metric]) -> list[Metric]:
    """Metrics in the order the report and the demo show them."""
    return sorted(metrics, key=lambda m: m.place)
