"""Evaluate a base model, an adapter or a merged model: perplexity, BLEU and ROUGE -> JSON, JSONL, Markdown.

Each evaluation example is a conversation whose last message is the reference reply; the
model answers the conversation up to it. Perplexity is computed on the reply tokens of the
whole conversation, masked exactly as in training. Which metrics, and how each is computed, come
from the registry in metrics.py and the choices in eval.metrics (checked by config.validate).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import UserError
from ..fsutil import atomic_output_dir, check_directory_path, hold_output, write_json
from ..inference.generate import answer_all


def eval_conversations(cfg: Config, log=print) -> tuple[list[list[dict[str, str]]], str]:
    """The evaluation conversations and where they came from (first eval.max_eval_samples)."""
    import datasets

    from ..data.preprocess import read_stats, source_changed_since

    source = cfg.eval.eval_dataset
    processed = Path(source) if source else Path(cfg.data.processed_dir)
    stats = read_stats(processed)
    if stats is not None:
        if not (processed / "validation").is_dir():
            settings = stats.get("settings", {})
            n = stats.get("examples_out")
            why = f" (val_size {settings['val_size']} of {n} example{'' if n == 1 else 's'})" if n else ""
            raise UserError(f"{processed}: has no validation split{why}; preprocess again with --val_size "
                            f"0.05 (or a count such as 200) from at least 2 examples, or set eval.eval_dataset to "
                            f"a dataset or file.")
        changed = source_changed_since(stats)
        if changed:  # a model trained on the current file may have trained on some of this split
            log(f"warning: {changed}; the validation split in {processed} is from the older version "
                f"(run preprocess again for a split of the current file)")
        conversations = datasets.load_from_disk(str(processed / "validation"))["messages"]
        label = str(processed / "validation")
    elif source is None:
        raise UserError(f"{processed}: no preprocessed data here; run data/preprocess.py first, or set "
                        f"eval.eval_dataset to a dataset name or file.")
    else:
        from ..data import sources
        from ..data.convert import convert_records
        from ..data.readers import read_records

        data = cfg.data
        found = sources.resolve(source, data.dataset_format, data.columns, data.dataset_registry, data.cache_dir,
                                 option="--eval_dataset")
        converted = convert_records(read_records(found.path), found.format, found.columns, found.label,
                                    data.system_prompt, data.languages)
        conversations = [c["messages"] for c in converted.conversations]
        label = found.label
    conversations = [c for c in conversations if c and c[-1]["role"] == "assistant"]
    if not conversations:
        raise UserError(f"{label}: the evaluation set has no reference replies (no conversation ends with an "
                        f"assistant message); evaluation needs them.")
    if cfg.eval.max_eval_samples:
        conversations = conversations[: cfg.eval.max_eval_samples]
    return conversations, label


def evaluate_side(loaded, conversations, cfg: Config, adapter: bool = True, label: str = "") -> tuple[dict, list]:
    """Metrics and per-example rows for one model (or one side of a base/adapter pair).

    The registry's metrics that cfg.eval.metrics turns on, in registry order: model-scored ones
    (perplexity, with reply_tokens), then, when any chosen metric needs generated answers, the
    reference-scored corpus scores (with llamafactory_compatible) and the answer properties
    (stopped_by_itself, a share). Rows (one per example) only when answers were generated."""
    from .metrics import evaluation_metrics, text_metrics

    chosen = evaluation_metrics(cfg.eval.metrics)
    metrics: dict[str, Any] = {"examples": len(conversations)}
    for metric in chosen:
        if metric.from_model is not None:
            metrics.update(metric.from_model(loaded, conversations, cfg, adapter, label))
    rows = []
    if any(metric.needs_answers for metric in chosen):
        prompts = [c[:-1] for c in conversations]
        references = [c[-1]["content"] for c in conversations]
        answers = answer_all(loaded, prompts, cfg.generation, cfg.eval.eval_batch_size, adapter,
                             cfg.training.seed, desc=f"generating {label}".strip())
        rows = [{"prompt": p, "reference": r, "prediction": a.text, "new_tokens": a.new_tokens, "stopped": a.stopped}
                for p, r, a in zip(prompts, references, answers)]
        scored = [metric for metric in chosen if metric.corpus is not None]
        if scored:
            metrics.update(text_metrics([a.text for a in answers], references, scored))
        for metric in chosen:
            if metric.of_answer is not None:
                metrics[metric.name] = round(sum(map(metric.of_answer, rows)) / len(rows), 4)
    return metrics, rows


def summary_markdown(result: dict[str, Any], rows: list[dict]) -> str:
    """summary.md: the model, data and settings, a table of every number in result["metrics"] (by key, in
    the order evaluate_side put them), the LLaMA-Factory-compatible set, and the first five examples."""
    m = result["metrics"]
    lines = [f"# Evaluation: {result['model']['finetuned'] or result['model']['base']}", "",
             f"- base model: `{result['model']['base']}`",
             f"- fine-tuned: `{result['model']['finetuned'] or 'none (base model)'}` ({result['model']['kind']})",
             f"- data: `{result['dataset']}`, {m['examples']} examples",
             f"- generation: {', '.join(f'{k}={v}' for k, v in result['generation'].items())}", "",
             "| metric | value |", "|---|---:|"]
    for key, value in m.items():
        if key != "examples" and not isinstance(value, dict):  # examples is in the data line above
            lines.append(f"| {key} | {value} |")
    if "llamafactory_compatible" in m:
        lines += ["", "LLaMA-Factory-compatible: " + ", ".join(f"{k} {v}" for k, v in m["llamafactory_compatible"].items())]
    if rows:
        lines += ["", "## First examples", ""]
        for row in rows[:5]:
            lines += [f"**Prompt:** {row['prompt'][-1]['content']}", "", f"**Reference:** {row['reference']}", "",
                      f"**Prediction:** {row['prediction']}", "", "---", ""]
    return "\n".join(lines) + "\n"


def save_evaluation(cfg: Config, model: dict, dataset_label: str, metrics: dict, rows: list[dict], seconds: float,
                    option: str = "--eval_output_dir") -> Path:
    """Write one model's evaluation (evaluate_side's metrics and rows) as a new <time>-<model> directory in
    cfg.eval.eval_output_dir (with -2, -3, ... after it when that name is taken: two evaluations of one model
    ending in the same second): metrics.json (with `model`, a LoadedModel.description, and the settings used),
    predictions.jsonl and summary.md, written whole or not at all; returns the directory.

    UserError (naming `option`, what chose the directory) when the folder cannot be written."""
    from .. import library_versions

    stem = time.strftime("%Y%m%d-%H%M%S") + "-" + (Path(model["finetuned"]).name if model["finetuned"] else "base")
    result = {
        "model": model,
        "dataset": dataset_label,
        "metrics": metrics,
        "generation": asdict(cfg.generation) | {"seed": cfg.training.seed},
        "seconds": round(seconds, 1),
        "versions": library_versions(),
    }
    for number in itertools.count(1):
        out = Path(cfg.eval.eval_output_dir) / (stem if number == 1 else f"{stem}-{number}")
        with hold_output(out, option):  # one writer per name, in this process or another
            if out.exists():  # a new directory per run: it replaces nothing
                continue
            with atomic_output_dir(out, None, option) as tmp:
                write_json(tmp / "metrics.json", result)
                with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as handle:
                    for row in rows:
                        handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
                (tmp / "summary.md").write_text(summary_markdown(result, rows), encoding="utf-8")
            return out


def evaluate(cfg: Config, log=print) -> Path:
    """Run the evaluation cfg describes; return the output directory (a new <time>-<model> one in eval_output_dir).

    Raises UserError before loading anything when eval_output_dir is a file (or lies under one).
    """
    from ..models.hub import select_hub
    from ..models.load import load_for_inference
    from ..models.precision import choose_precision

    select_hub(cfg.model.hub)

    check_directory_path(cfg.eval.eval_output_dir, "--eval_output_dir")  # before the data and model load
    conversations, dataset_label = eval_conversations(cfg, log)
    loaded = load_for_inference(cfg.model.model_name_or_path, cfg.eval.adapter_path,
                                choose_precision(cfg.training.bf16, cfg.training.fp16),
                                cfg.model.trust_remote_code, log=log)
    log(f"evaluating on {len(conversations)} examples from {dataset_label}")
    started = time.perf_counter()
    metrics, rows = evaluate_side(loaded, conversations, cfg)
    out = save_evaluation(cfg, loaded.description, dataset_label, metrics, rows, time.perf_counter() - started)
    shown = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    log("  ".join(f"{k} {v}" for k, v in shown.items()))
    log(f"results in {out}")
    return out
