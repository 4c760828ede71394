"""The comparison as people read it: a self-contained HTML page and a Markdown summary."""

from __future__ import annotations

import difflib
import html
import json
import re
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[A-Za-z0-9_']+|\s+|[^\w\s]|\w+")
METRIC_LABELS = {"bleu_4": "BLEU-4", "rouge_1": "ROUGE-1", "rouge_l": "ROUGE-L",
                 "stopped_by_itself": "stopped by itself", "mean_new_tokens": "new tokens (mean)"}


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


def _summary_rows(summary: dict[str, Any]) -> str:
    rows = []
    for name, block in [("all questions", summary["overall"])] + list(summary["by_category"].items()):
        cells = [f"<td>{html.escape(name)}</td><td>{block['questions']}</td>"]
        for metric in ("rouge_l", "bleu_4", "mean_new_tokens", "stopped_by_itself"):
            base, tuned = block["base"][metric], block["finetuned"][metric]
            better = "" if base is None or tuned is None or metric == "mean_new_tokens" else (
                ' class="up"' if tuned > base else ' class="down"' if tuned < base else "")
            cells.append(f"<td>{'n/a' if base is None else base}</td><td{better}>{'n/a' if tuned is None else tuned}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows)


def _metric_bars(summary: dict[str, Any]) -> str:
    overall = summary["overall"]
    parts = []
    for metric in ("rouge_l", "rouge_1", "bleu_4", "stopped_by_itself"):
        base, tuned = overall["base"][metric], overall["finetuned"][metric]
        scale = 1.0 if metric == "stopped_by_itself" else 100.0
        parts.append(f'<div class="metric"><h3>{METRIC_LABELS[metric]}</h3>'
                     f'<div class="row"><label>base</label>{_bar(base, scale)}</div>'
                     f'<div class="row tuned"><label>fine-tuned</label>{_bar(tuned, scale)}</div></div>')
    return "\n".join(parts)


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
.stats{font-size:.8rem;color:#59636e}mark.add{background:#dafbe1}mark.del{background:#ffebe9;text-decoration:line-through}
"""


def render_html(report: dict[str, Any]) -> str:
    models, generation, summary = report["models"], report["generation"], report["summary"]
    settings = ", ".join(f"{k}={v}" for k, v in generation.items() if v is not None)
    cards = []
    for row in report["results"]:
        left, right = diff_html(row["base"]["answer"], row["finetuned"]["answer"])
        reference = (f'<div class="ref"><b>reference</b>: {html.escape(row["reference"])}</div>'
                     if row["reference"] else "")

        def stats(side: str) -> str:
            answer = row[side]
            scores = answer["scores"]
            metric = f" · ROUGE-L {scores['rouge_l']} · BLEU-4 {scores['bleu_4']}" if scores else ""
            stop = "" if answer["stopped"] else " · cut at max_new_tokens"
            return f'{answer["new_tokens"]} tokens · {answer["tokens_per_second"]} tok/s{metric}{stop}'

        cards.append(
            f'<section class="q"><h3>{row["id"] + 1}. {html.escape(row["question"])}'
            f'<span class="cat">{html.escape(row["category"])}</span></h3>{reference}'
            f'<div class="sides"><div class="side"><h4>base</h4><div class="answer">{left}</div>'
            f'<div class="stats">{stats("base")}</div></div>'
            f'<div class="side"><h4>fine-tuned</h4><div class="answer">{right}</div>'
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
<table><thead><tr><th rowspan="2">category</th><th rowspan="2">questions</th><th colspan="2">ROUGE-L</th>
<th colspan="2">BLEU-4</th><th colspan="2">new tokens (mean)</th><th colspan="2">stopped by itself</th></tr>
<tr><th>base</th><th>fine-tuned</th><th>base</th><th>fine-tuned</th><th>base</th><th>fine-tuned</th><th>base</th>
<th>fine-tuned</th></tr></thead><tbody>
{_summary_rows(summary)}
</tbody></table>
<p class="sub">ROUGE and BLEU are per-question scores against the reference (0-100), averaged over the questions
that have one. Highlighted: <mark class="del">only in the base answer</mark>, <mark class="add">only in the
fine-tuned answer</mark>.</p>
<h2>Answers</h2>
{''.join(cards)}
</body></html>
"""


def render_markdown(report: dict[str, Any]) -> str:
    overall = report["summary"]["overall"]
    lines = ["# Base vs fine-tuned", "",
             f"- base: `{report['models']['base']}`",
             f"- fine-tuned: `{report['models']['finetuned']}` ({report['models']['finetuned_kind']})",
             f"- questions: {overall['questions']} ({overall['with_reference']} with a reference)",
             "- generation (both sides): " + ", ".join(f"{k}={v}" for k, v in report["generation"].items()), "",
             "| category | questions | ROUGE-L base | ROUGE-L fine-tuned | BLEU-4 base | BLEU-4 fine-tuned |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, block in [("all", overall)] + list(report["summary"]["by_category"].items()):
        lines.append(f"| {name} | {block['questions']} | {block['base']['rouge_l']} | {block['finetuned']['rouge_l']} | "
                     f"{block['base']['bleu_4']} | {block['finetuned']['bleu_4']} |")
    lines += ["", "## Answers", ""]
    for row in report["results"]:
        lines += [f"### {row['id'] + 1}. {row['question']}", ""]
        if row["reference"]:
            lines += [f"*Reference:* {row['reference']}", ""]
        lines += [f"**Base:** {row['base']['answer']}", "", f"**Fine-tuned:** {row['finetuned']['answer']}", ""]
    return "\n".join(lines) + "\n"


def write_comparison(report: dict[str, Any], output: str | Path) -> list[Path]:
    """The JSON, and the .html and .md beside it; each written whole or not at all."""
    from ..fsutil import atomic_output_file

    output = Path(output)
    pages = {output: json.dumps(report, ensure_ascii=False, indent=2) + "\n",
             output.with_suffix(".html"): render_html(report), output.with_suffix(".md"): render_markdown(report)}
    for path, text in pages.items():
        with atomic_output_file(path, encoding="utf-8") as handle:
            handle.write(text)
    return list(pages)
