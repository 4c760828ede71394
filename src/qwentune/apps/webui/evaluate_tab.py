"""The evaluate tab: `qwentune evaluate` from the page, on a dataset or file or (empty) the validation split
preprocessing wrote (data.processed_dir), for the fine-tuned model and, alongside it, the base model (the
adapter switched off, as `qwentune demo` does): a metrics table, and every prediction to browse.

The same functions as the CLI read the data (eval_conversations), compute the metrics (evaluate_side) and
write each model's results into eval_output_dir (save_evaluation: metrics.json, predictions.jsonl,
summary.md). The model is the page's shared one (models.MODELS): other sessions' chat waits while it runs.
"""

from __future__ import annotations

import time
from typing import Any

from ...config import validate
from .common import WebuiSettings, initial_config, model_reference, page_path, shows_user_errors, t
from .models import MODELS, ModelSpec, row_config

TITLE_KEY = "evaluate.title"
TEXT = {
    "evaluate.title": ("Evaluate", "评估"),
    "evaluate.intro": ("Perplexity, BLEU and ROUGE of the fine-tuned model (the adapter above) and of the base model "
                       "on held-out examples; results are also written to the config's eval_output_dir.",
                       "在留出样本上计算微调模型（上方的适配器）与基座模型的困惑度、BLEU 和 ROUGE；"
                       "结果同时写入配置中的 eval_output_dir。"),
    "evaluate.dataset": ("Evaluation data: a registered dataset name or a file (empty: the validation split written "
                         "by preprocessing, data.processed_dir)",
                         "评估数据：已注册的数据集名或文件（留空：预处理写出的验证集，即 data.processed_dir）"),
    "evaluate.max_samples": ("Max examples (empty or 0: all)", "最多样本数（留空或 0：全部）"),
    "evaluate.metrics_choice": ("Metrics", "指标"),
    "evaluate.with_base": ("Also evaluate the base model (the adapter switched off)", "同时评估基座模型（关闭适配器）"),
    "evaluate.run": ("Evaluate", "开始评估"),
    "evaluate.metrics": ("Metrics", "指标结果"),
    "evaluate.predictions": ("Predictions", "预测结果"),
}
METRIC_HEADERS = ["metric", "base", "fine-tuned", "better"]
PREDICTION_HEADERS = ["prompt", "reference", "prediction", "base prediction"]


def metrics_table(results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Rows [metric, base, fine-tuned, better] of evaluate_side's metrics per side ("base", "finetuned"; a side
    not evaluated is empty): every number, in the order evaluation computed them, named by the registry's label
    where it has one."""
    from ...evaluation.metrics import registered

    known = {m.name: m for m in registered()}
    keys: list[str] = []
    for metrics in results.values():
        keys += [k for k, v in metrics.items() if not isinstance(v, dict) and k not in keys]
    rows = []
    for key in keys:
        metric = known.get(key)
        rows.append([metric.label if metric else key, results.get("base", {}).get(key),
                     results.get("finetuned", {}).get(key), (metric.better or "") if metric else ""])
    return rows


def predictions_table(rows: dict[str, list[dict]]) -> list[list[str]]:
    """Rows [prompt, reference, prediction, base prediction], one per example: the prompt's last message, the
    reference reply, the fine-tuned model's reply (the base's when only the base was evaluated) and, when both
    were evaluated, the base's. Empty when no chosen metric generated replies (perplexity alone)."""
    main = rows.get("finetuned") or rows.get("base") or []
    base = rows.get("base") if rows.get("finetuned") else None
    return [[row["prompt"][-1]["content"], row["reference"], row["prediction"], base[i]["prediction"] if base else ""]
            for i, row in enumerate(main)]


def run_evaluation(settings: WebuiSettings, model: str, adapter: str, config: str, dataset: str, max_samples,
                   metrics: list[str] | None, with_base: bool, progress=None) -> tuple[list, list, str]:
    """Evaluate as `qwentune evaluate` does with the page's model row and these choices; returns (metrics_table
    rows, predictions_table rows, a status line saying where the data came from and where results went).

    `progress(fraction, desc=...)`: gr.Progress, or None. UserError: settings config.validate refuses (max
    examples below 1 is read as all; no metric chosen), folders outside the page's, missing data, and
    whatever loading says."""
    from ...evaluation.evaluate import eval_conversations, evaluate_side, save_evaluation
    from ...fsutil import check_directory_path

    def note(fraction, desc):
        if progress is not None:
            progress(fraction, desc=desc)

    cfg = row_config(settings, config, model, adapter)
    dataset = (dataset or "").strip()
    cfg.eval.eval_dataset = model_reference(dataset, settings, "evaluation data") if dataset else None
    cfg.eval.max_eval_samples = int(max_samples) if max_samples else None
    if metrics is not None:
        cfg.eval.metrics = list(metrics)
    validate(cfg, "evaluate settings")
    if cfg.eval.eval_dataset is None:
        cfg.data.processed_dir = str(page_path(cfg.data.processed_dir, settings, "data.processed_dir"))
    cfg.eval.eval_output_dir = str(page_path(cfg.eval.eval_output_dir, settings, "eval_output_dir"))
    check_directory_path(cfg.eval.eval_output_dir, "eval_output_dir")  # a file there: before anything loads
    warnings: list[str] = []
    note(0.0, "reading the evaluation data")
    conversations, label = eval_conversations(cfg, log=warnings.append)
    note(0.05, "loading the model")
    shared = MODELS.get(ModelSpec.of(cfg), log=lambda message: None)
    sides = ((["base"] if with_base else []) + ["finetuned"]) if shared.has_finetuned else ["base"]
    results: dict[str, dict] = {}
    rows: dict[str, list[dict]] = {}
    written = []
    with shared.generating():
        for number, side in enumerate(sides):
            note(0.1 + 0.9 * number / len(sides), f"evaluating the {side} model on {len(conversations)} examples")
            loaded, adapter_on = shared.side(side)
            started = time.perf_counter()
            results[side], rows[side] = evaluate_side(loaded, conversations, cfg, adapter=adapter_on, label=side)
            written.append(save_evaluation(cfg, shared.description(side), label, results[side], rows[side],
                                           time.perf_counter() - started, option="eval_output_dir"))
    status = (f"{len(conversations)} examples from {label}; results in " + ", ".join(map(str, written))
              + "".join(f"\n\n{w}" for w in warnings))
    return metrics_table(results), predictions_table(rows), status


def build(settings: WebuiSettings, shared) -> None:
    """The tab's components (elem_ids: eval-dataset, eval-max-samples, eval-metrics-choice, eval-with-base,
    eval-run, eval-metrics, eval-predictions, eval-status) and its event, inside the page's gr.Blocks."""
    import gradio as gr

    from ...evaluation.metrics import metric_choices

    start = initial_config(settings)
    gr.Markdown(t("evaluate.intro"))
    with gr.Row():
        dataset = gr.Textbox(start.eval.eval_dataset or "", label=t("evaluate.dataset"), elem_id="eval-dataset",
                             scale=3)
        max_samples = gr.Number(start.eval.max_eval_samples, precision=0, minimum=0, label=t("evaluate.max_samples"),
                                elem_id="eval-max-samples")
    with gr.Row():
        chosen = gr.CheckboxGroup(metric_choices(), value=list(start.eval.metrics), label=t("evaluate.metrics_choice"),
                                  elem_id="eval-metrics-choice")
        with_base = gr.Checkbox(True, label=t("evaluate.with_base"), elem_id="eval-with-base")
    run = gr.Button(t("evaluate.run"), variant="primary", elem_id="eval-run")
    status = gr.Markdown("", elem_id="eval-status")
    table = gr.Dataframe(headers=METRIC_HEADERS, label=t("evaluate.metrics"), elem_id="eval-metrics",
                         interactive=False)
    predictions = gr.Dataframe(headers=PREDICTION_HEADERS, label=t("evaluate.predictions"),
                               elem_id="eval-predictions", interactive=False, wrap=True, max_height=600,
                               show_search="search")  # browse: search the prompts, references and replies

    @shows_user_errors
    def on_run(model, adapter, config, dataset, max_samples, chosen, with_base,
               progress=gr.Progress(track_tqdm=True)):
        metrics, rows, line = run_evaluation(settings, model, adapter, config, dataset, max_samples, chosen,
                                             with_base, progress)
        import pandas as pd

        return pd.DataFrame(metrics, columns=METRIC_HEADERS), pd.DataFrame(rows, columns=PREDICTION_HEADERS), line

    run.click(on_run, [shared.model, shared.adapter, shared.config, dataset, max_samples, chosen, with_base],
              [table, predictions, status])
