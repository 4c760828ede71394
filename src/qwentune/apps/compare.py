"""Base vs fine-tuned: the same questions, the same generation settings, side by side.

When the fine-tuned side is a LoRA adapter only one copy of the base weights is loaded:
the base answers with the adapter switched off. A merged fine-tuned model is loaded as
a second model.

Questions file: read by inference/prompts.py, the same reader as `infer --prompts_file`: a JSON list
(or JSON Lines, or a .txt file of lines) whose items are strings, or objects with `question` and optional
`reference`, `category` and `system`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Config, GenerationConfig
from ..errors import UserError
from ..inference.generate import answer_all
from ..inference.prompts import Question
from ..models.load import LoadedModel, load_for_inference
from ..models.precision import Precision

SIDES = ("base", "finetuned")


@dataclass
class Pair:
    """What a comparison needs: who answers for each side, and how."""

    base: LoadedModel
    finetuned: LoadedModel

    @property
    def shared(self) -> bool:
        return self.base is self.finetuned

    def model_and_switch(self, side: str) -> tuple[LoadedModel, bool]:
        """(model, adapter on?) for a side."""
        if side == "base":
            return self.base, False
        return self.finetuned, True


def load_pair(base: str, finetuned: str, precision: Precision | None = None, trust_remote_code: bool = False,
              log=print, base_option: str = "--base-model") -> Pair:
    """Both sides; with an adapter, one loaded base serves both (precision: see load_for_inference;
    base_option: what gave `base`, named in messages about it)."""
    loaded = load_for_inference(base, finetuned, precision, trust_remote_code, log=log, base_option=base_option)
    if loaded.has_adapter:
        return Pair(loaded, loaded)  # one copy of the weights: the adapter switched off is the base
    alone = load_for_inference(base, None, precision, trust_remote_code, log=log, base_option=base_option)
    alone.tokenizer = loaded.tokenizer  # the same chat template on both sides: the one the model was tuned with
    return Pair(alone, loaded)


def _sentence_scores(prediction: str, reference: str) -> dict[str, float]:
    """One answer's score for every registered metric that has a per-answer score (bleu_4, rouge_1,
    rouge_l: 0-100), 2 decimals."""
    from ..evaluation.metrics import registered

    return {m.name: round(m.per_answer(prediction, reference), 2) for m in registered() if m.per_answer is not None}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side and per category: answers, and the mean of each comparison metric of the registry (answer
    properties such as mean_new_tokens and stopped_by_itself over every answer; per-answer scores over the
    answers that have a reference, None when none has), 2 decimals."""
    from ..evaluation.metrics import comparison_metrics

    metrics = comparison_metrics()

    def side_stats(answers: list[dict[str, Any]]) -> dict[str, float | None]:
        stats = {}
        for metric in metrics:
            if metric.of_answer is not None:
                stats[metric.name] = _mean([metric.of_answer(a) for a in answers])
            else:
                stats[metric.name] = _mean([a["scores"][metric.name] for a in answers if a.get("scores")])
        return stats

    def block(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"questions": len(rows), "with_reference": sum(r["reference"] is not None for r in rows)}
        for side in SIDES:
            out[side] = side_stats([r[side] for r in rows])
        return out

    categories = sorted({r["category"] for r in results})
    return {"overall": block(results),
            "by_category": {c: block([r for r in results if r["category"] == c]) for c in categories}}


def compare_batch(pair: Pair, questions: list[Question], settings: GenerationConfig, batch_size: int = 32,
                  seed: int = 42, system: str | None = None) -> dict[str, Any]:
    """Answer every question on both sides (batched), score against references, summarize."""
    answers: dict[str, list] = {}
    timing: dict[str, float] = {}
    conversations = [q.messages(system) for q in questions]
    for side in SIDES:
        model, adapter = pair.model_and_switch(side)
        started = time.perf_counter()
        answers[side] = answer_all(model, conversations, settings, batch_size, adapter, seed, desc=f"{side} answers")
        timing[side] = time.perf_counter() - started

    results = []
    for index, question in enumerate(questions):
        row: dict[str, Any] = {"id": index, "category": question.category, "question": question.question,
                               "reference": question.reference, "system": question.system or system}
        for side in SIDES:
            answer = answers[side][index]
            row[side] = {"answer": answer.text, "new_tokens": answer.new_tokens, "seconds": round(answer.seconds, 3),
                         "tokens_per_second": round(answer.new_tokens / answer.seconds, 1) if answer.seconds else None,
                         "stopped": answer.stopped,
                         "scores": _sentence_scores(answer.text, question.reference) if question.reference else None}
        results.append(row)

    corpus = {}
    with_reference = [r for r in results if r["reference"]]
    if with_reference:
        from ..evaluation.metrics import text_metrics

        for side in SIDES:
            corpus[side] = text_metrics([r[side]["answer"] for r in with_reference],
                                        [r["reference"] for r in with_reference])
    return {
        "models": {"base": pair.base.description["base"],
                   "finetuned": pair.finetuned.description.get("finetuned"),
                   "finetuned_kind": pair.finetuned.description["kind"],
                   "one_base_copy": pair.shared,
                   "dtype": pair.finetuned.description["dtype"], "device": pair.finetuned.description["device"]},
        "generation": asdict(settings) | {"seed": seed, "batch_size": batch_size, "system_prompt": system},
        "timing": {side: {"seconds": round(timing[side], 2),
                          "new_tokens": sum(a.new_tokens for a in answers[side]),
                          "tokens_per_second": round(sum(a.new_tokens for a in answers[side]) / timing[side], 1)
                          if timing[side] else None} for side in SIDES},
        "summary": summarize(results),
        "corpus_metrics": corpus,
        "results": results,
    }


def compare_to_files(base: str, finetuned: str, questions: list[Question], output: str | Path, cfg: Config,
                     batch_size: int = 32, system: str | None = None, option: str = "--output",
                     log=print) -> tuple[dict[str, Any], list[Path]]:
    """`qwentune compare --questions-file`: load both sides, answer every question, write the results JSON
    `output` with the .html and .md report beside it; return (the comparison as compare_batch returns it, the
    files written: JSON, HTML, Markdown).

    Generation settings, seed, precision and trust_remote_code come from cfg. Raises UserError naming `option`,
    before any model loads, when batch_size is below 1, output is a directory or lies under a file, its folder
    is missing or not writable, or another process is writing the same output.
    """
    from ..fsutil import check_output_file, hold_output
    from ..models.precision import choose_precision
    from .report import write_comparison

    if batch_size < 1:
        raise UserError(f"model_comparison: the batch size is {batch_size}; it must be at least 1.")
    output = Path(output)
    check_output_file(output, option, "comparison_results.json")
    if not output.parent.is_dir() or not os.access(output.parent, os.W_OK):
        raise UserError(f"{output}: cannot write the results there; choose an existing, writable directory.")
    precision = choose_precision(cfg.training.bf16, cfg.training.fp16)
    with hold_output(output, option):  # the JSON and the .html / .md beside it, from before the models load
        pair = load_pair(base, finetuned, precision, cfg.model.trust_remote_code, log=log)
        report = compare_batch(pair, questions, cfg.generation, batch_size, cfg.training.seed, system)
        return report, write_comparison(report, output)
