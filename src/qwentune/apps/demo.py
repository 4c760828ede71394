"""`qwentune demo`: the whole path offline on the embedded SmolLM2-135M-Instruct.

prepare data/demo -> LoRA training -> perplexity, BLEU and ROUGE of base and fine-tuned on the
held-out split -> side-by-side answers to the demo questions -> HTML report and a printed table.
Everything runs from config/demo.yaml (the same job `scripts/train.py --config config/demo.yaml` runs),
with any key overridable on the command line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..shipped import shipped_file

DEMO_CONFIG = shipped_file("config", "demo.yaml")
DEMO_QUESTIONS = shipped_file("demo", "questions.json")
DEMO_DATA_PREFIX = "data/demo/"  # how config/demo.yaml names the demo's files


def anchored(cfg: Config) -> Config:
    """The demo's data files found where qwentune ships them, so `qwentune demo` works from any directory
    (a data/demo/ file in the current directory, if there is one, wins)."""
    for section, key in (("data", "dataset_name"), ("eval", "eval_dataset")):
        value = getattr(getattr(cfg, section), key)
        if value and value.startswith(DEMO_DATA_PREFIX) and not Path(value).exists():
            setattr(getattr(cfg, section), key, str(shipped_file("demo", value[len(DEMO_DATA_PREFIX):])))
    return cfg


def summary_table(base: dict[str, Any], tuned: dict[str, Any]) -> str:
    """The held-out metrics of both sides (evaluate_side's dicts) as a text table: the registry's headline
    metrics that were computed, in the report's order, each with its unit and better direction."""
    from ..evaluation.metrics import by_place, registered

    lines = [f"{'held out':<24}{'base':>10}{'fine-tuned':>13}", "-" * 47]
    for metric in by_place(registered()):
        if metric.headline and metric.name in base:
            better = f", {metric.better} is better" if metric.better else ""
            lines.append(f"{metric.label:<24}{base[metric.name]:>10}{tuned[metric.name]:>13}   {metric.unit}{better}")
    return "\n".join(lines)


def run_demo(cfg: Config, log=print) -> dict[str, Any]:
    """Train, evaluate, compare and report as `cfg` says, holding the run directory (and so the comparison
    written beside it) from start to end: a second demo into the same directory stops at once."""
    from ..fsutil import hold_output

    with hold_output(cfg.training.output_dir):
        return _run_demo(cfg, log)


def _run_demo(cfg: Config, log) -> dict[str, Any]:
    from ..evaluation.evaluate import eval_conversations, evaluate_side
    from ..inference.prompts import read_questions
    from ..models.load import load_for_inference
    from ..models.precision import choose_precision
    from ..training.train import train
    from .compare import Pair, compare_batch
    from .report import write_comparison

    started = time.perf_counter()
    cfg = anchored(cfg)
    log("1/4 training a LoRA adapter on data/demo/train.jsonl")
    result = train(cfg, log=log)
    if result.interrupted_by:
        return {"interrupted_by": result.interrupted_by}
    log("2/4 evaluating base and fine-tuned on the held-out split")
    loaded = load_for_inference(cfg.model.model_name_or_path, str(result.output_dir),
                                choose_precision(cfg.training.bf16, cfg.training.fp16), log=log)
    conversations, _ = eval_conversations(cfg)
    base, _ = evaluate_side(loaded, conversations, cfg, adapter=False, label="base")
    tuned, _ = evaluate_side(loaded, conversations, cfg, adapter=True, label="fine-tuned")
    log("3/4 answering the demo questions side by side")
    report = compare_batch(Pair(loaded, loaded), read_questions(DEMO_QUESTIONS), cfg.generation,
                           cfg.eval.eval_batch_size, cfg.training.seed)
    output = Path(cfg.training.output_dir).parent / "comparison_results.json"
    pages = write_comparison(report, output)
    log("4/4 done in %.1f min\n" % ((time.perf_counter() - started) / 60))
    log(summary_table(base, tuned))
    for row in report["results"][:2]:
        log(f"\nQ: {row['question']}\n  base:       {row['base']['answer'][:160]!r}\n"
            f"  fine-tuned: {row['finetuned']['answer'][:160]!r}")
    log(f"\nreport: {pages[1]}  (open it in a browser)\nadapter: {result.output_dir}")
    return {"base": base, "finetuned": tuned, "report": str(pages[1]), "minutes": (time.perf_counter() - started) / 60}
