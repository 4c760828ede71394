"""The comparison as people read it: a self-contained HTML page and a Markdown summary.

Which metrics appear, their labels, scales, order and colours come from the metrics registry
(evaluation/metrics.py); a metric shows when the comparison holds values for it.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from pathlib import Path
from typing import Any

from ..evaluation.metrics import Metric, by_place, registered

_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[A-Za-z0-9_']+|\s+|[^\w\s]|\w+")


def diff_html(base: str, finetuned: str) -> tuple[str, str]:
    """Both answers as HTML, with what only one side says highlighted (Chinese by character, else by word)."""
    a, b = _TOKEN.findall(base), _TOKEN.findall(finetuned)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old, new = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
        else:
            if old:
                left.append(f'<mark class="del">{old}</mark>')
            if new:
                right.append(f'<mark class="add">{new}</mark>')
    return "".join(left), "".join(right)


def _bar(value: float | None, scale: float) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    width = 0 if scale == 0 else max(1.0, 100 * value / scale)
    return f'<div class="bar"><div style="width:{width:.1f}%"></div></div><span>{value}</span>'


def summary_metrics(summary: dict[str, Any], headline: bool = False) -> list[Metric]:
    """The registered metrics the comparison summary holds values for, in the report's order; with
    headline, only those the short tables show."""
    held = summary["overall"]["base"]
    return [m for m in by_place(registered()) if m.name in held and (m.headline or not headline)]


def headline_scores(summary: dict[str, Any]) -> list[Metric]:
    """The headline per-answer scores against references (ROUGE-L, BLEU-4), in the report's order."""
    return [m for m in summary_metrics(summary, headline=True) if m.per_answer is not None]


_CHANGE_CLASS = {1: ' class="up"', -1: ' class="down"', 0: ""}


def _summary_header(metrics: list[Metric]) -> str:
    labels = "".join(f'<th colspan="2">{html.escape(m.label)}</th>' for m in metrics)
    return (f'<tr><th rowspan="2">category</th><th rowspan="2">questions</th>{labels}</tr>\n'
            f'<tr>{"<th>base</th><th>fine-tuned</th>" * len(metrics)}</tr>')


def _summary_rows(summary: dict[str, Any], metrics: list[Metric]) -> str:
    """One row per category; the fine-tuned value green when better, red when worse, by each metric's direction."""
    rows = []
    for name, block in [("all questions", summary["overall"])] + list(summary["by_category"].items()):
        cells = [f"<td>{html.escape(name)}</td><td>{block['questions']}</td>"]
        for metric in metrics:
            base, tuned = block["base"][metric.name], block["finetuned"][metric.name]
            change = _CHANGE_CLASS[metric.improvement(base, tuned)]
            cells.append(f"<td>{'n/a' if base is None else base}</td><td{change}>{'n/a' if tuned is None else tuned}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows)


def _metric_bars(summary: dict[str, Any]) -> str:
    """A base and a fine-tuned bar for each summary metric with a scale (unbounded ones have no bar)."""
    overall = summary["overall"]
    parts = []
    for metric in summary_metrics(summary):
        if metric.scale is None:
            continue
        base, tuned = overall["base"][metric.name], overall["finetuned"][metric.name]
        parts.append(f'<div class="metric"><h3>{html.escape(metric.label)}</h3>'
                     f'<div class="row"><label>base</label>{_bar(base, metric.scale)}</div>'
                     f'<div class="row tuned"><label>fine-tuned</label>{_bar(tuned, metric.scale)}</div></div>')
    return "\n".join(parts)


def _scores_note(metrics: list[Metric]) -> str:
    """What the per-answer scores are, e.g. "ROUGE-L (0-100) and BLEU-4 (0-100) are per-question scores ..."."""
    if not metrics:
        return ""
    named = [f"{html.escape(m.label)} ({html.escape(m.unit)})" for m in metrics]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    verb = "is a per-question score" if len(named) == 1 else "are per-question scores"
    return f"{listed} {verb} against the reference, averaged over the questions that have one. "


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","PingFang SC","Microsoft YaHei",sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#1f2328;line-height:1.5}
h1{margin-bottom:.2rem}.sub{color:#59636e;margin-top:0}table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border:1px solid #d1d9e0;padding:.35rem .6rem;text-align:left}th{background:#f6f8fa}
td.up{color:#1a7f37;font-weight:600}td.down{color:#cf222e;font-weight:600}
.metrics{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:1rem;margin:1rem 0}
.metric{border:1px solid #d1d9e0;border-radius:8px;padding:.6rem 1rem}.metric h3{margin:.2rem 0 .5rem;font-size:1rem}
.row{display:flex;align-items:center;gap:.5rem;margin:.25rem 0}.row label{width:6.5rem;color:#59636e}
.bar{flex:1;background:#eef1f4;border-radius:4px;height:12px}.bar div{background:#8c959f;height:12px;border-radius:4px}
.tuned .bar div{background:#0969da}.na{color:#8c959f}
.q{border:1px solid #d1d9e0;border-radius:8px;margin:1.2rem 0;padding:.8rem 1rem}
.q h3{margin:.1rem 0 .4rem;font-size:1.05rem}.cat{font-size:.8rem;background:#ddf4ff;color:#0550ae;border-radius:10px;
padding:.05rem .5rem;margin-left:.4rem}.ref{background:#f6f8fa;border-radius:6px;padding:.4rem .6rem;margin:.4rem 0}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.side h4{margin:.3rem 0;font-size:.9rem;color:#59636e}
.answer{white-space:pre-wrap;border-radius:6px;padding:.5rem .6rem;background:#fff;border:1px solid #eef1f4;min-height:2rem}
.thinking{font-size:.85rem;color:#59636e;margin:.3rem 0}.thinking div{white-space:pre-wrap}
.stats{font-size:.8rem;color:#59636e}mark.add{background:#dafbe1}mark.del{background:#ffebe9;text-decoration:line-through}
"""


def render_html(report: dict[str, Any]) -> str:
    """The whole comparison as one self-contained HTML page (no external files or scripts)."""
    models, generation, summary = report["models"], report["generation"], report["summary"]
    table_metrics, scored = summary_metrics(summary, headline=True), headline_scores(summary)
    settings = ", ".join(f"{k}={v}" for k, v in generation.items() if v is not None)
    cards = []
    for row in report["results"]:
        left, right = diff_html(row["base"]["answer"], row["finetuned"]["answer"])
        reference = (f'<div class="ref"><b>reference</b>: {html.escape(row["reference"])}</div>'
                     if row["reference"] else "")

        def thinking(side: str) -> str:  # a thinking model's reasoning, folded away above its answer
            text = row[side].get("thinking")
            return (f'<details class="thinking"><summary>thinking ({len(text)} characters, not scored)</summary>'
                    f'<div>{html.escape(text)}</div></details>' if text else "")

        def stats(side: str) -> str:
            answer = row[side]
            scores = answer["scores"] or {}
            metric = "".join(f" · {html.escape(m.label)} {scores[m.name]}" for m in scored if m.name in scores)
            stop = "" if answer["stopped"] else " · cut at max_new_tokens"
            return f'{answer["new_tokens"]} tokens · {answer["tokens_per_second"]} tok/s{metric}{stop}'

        cards.append(
            f'<section class="q"><h3>{row["id"] + 1}. {html.escape(row["question"])}'
            f'<span class="cat">{html.escape(row["category"])}</span></h3>{reference}'
            f'<div class="sides"><div class="side"><h4>base</h4>{thinking("base")}<div class="answer">{left}</div>'
            f'<div class="stats">{stats("base")}</div></div>'
            f'<div class="side"><h4>fine-tuned</h4>{thinking("finetuned")}<div class="answer">{right}</div>'
            f'<div class="stats">{stats("finetuned")}</div></div></div></section>')
    timing = report["timing"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>qwentune comparison</title><style>{CSS}</style></head><body>
<h1>Base vs fine-tuned</h1>
<p class="sub">base <code>{html.escape(str(models['base']))}</code> · fine-tuned
<code>{html.escape(str(models['finetuned']))}</code> ({html.escape(models['finetuned_kind'])}) ·
{summary['overall']['questions']} questions · {html.escape(models['device'])}, {html.escape(models['dtype'])}</p>
<p class="sub">same settings on both sides: {html.escape(settings)} · base {timing['base']['seconds']} s,
fine-tuned {timing['finetuned']['seconds']} s</p>
<h2>Summary</h2>
<div class="metrics">{_metric_bars(summary)}</div>
<table><thead>{_summary_header(table_metrics)}</thead><tbody>
{_summary_rows(summary, table_metrics)}
</tbody></table>
<p class="sub">{_scores_note(scored)}Highlighted: <mark class="del">only in the base answer</mark>,
<mark class="add">only in the fine-tuned answer</mark>.</p>
<h2>Answers</h2>
{''.join(cards)}
</body></html>
"""


def render_markdown(report: dict[str, Any]) -> str:
    """The comparison as Markdown: models and settings, the headline per-answer scores per category, the answers."""
    overall = report["summary"]["overall"]
    scored = headline_scores(report["summary"])
    columns = ["category", "questions"] + [f"{m.label} {side}" for m in scored for side in ("base", "fine-tuned")]
    lines = ["# Base vs fine-tuned", "",
             f"- base: `{report['models']['base']}`",
             f"- fine-tuned: `{report['models']['finetuned']}` ({report['models']['finetuned_kind']})",
             f"- questions: {overall['questions']} ({overall['with_reference']} with a reference)",
             "- generation (both sides): " + ", ".join(f"{k}={v}" for k, v in report["generation"].items()), "",
             "| " + " | ".join(columns) + " |", "|---|---:|" + "---:|---:|" * len(scored)]
    for name, block in [("all", overall)] + list(report["summary"]["by_category"].items()):
        values = "".join(f" {block['base'][m.name]} | {block['finetuned'][m.name]} |" for m in scored)
        lines.append(f"| {name} | {block['questions']} |{values}")
    lines += ["", "## Answers", ""]
    for row in report["results"]:
        lines += [f"### {row['id'] + 1}. {row['question']}", ""]
        if row["reference"]:
            lines += [f"*Reference:* {row['reference']}", ""]
        for side, name in (("base", "Base"), ("finetuned", "Fine-tuned")):
            if row[side].get("thinking"):
                lines += [f"*{name} thinking (not scored):* {row[side]['thinking']}", ""]
            lines += [f"**{name}:** {row[side]['answer']}", ""]
    return "\n".join(lines) + "\n"


def write_comparison(report: dict[str, Any], output: str | Path) -> list[Path]:
    """The JSON, and the .html and .md beside it; each written whole or not at all."""
    from ..fsutil import atomic_output_file

    output = Path(output)
    pages = {output: json.dumps(report, ensure_ascii=False, indent=2, allow_nan=False) + "\n",
             output.with_suffix(".html"): render_html(report), output.with_suffix(".md"): render_markdown(report)}
    for path, text in pages.items():
        with atomic_output_file(path, encoding="utf-8") as handle:
            handle.write(text)
    return list(pages)
