"""The data tab's work, without gradio: a dataset read, converted and tokenized by preprocess's own steps
(read_conversations, tokenize_options, tokenize_batch), its first examples as HTML with the loss mask visible,
and the counts preprocess keeps (records, skipped by reason, truncated, dropped by reason, token lengths).

Only what the page shows is tokenized: at most STATS_LIMIT conversations (the first ones, the order training's
shuffle starts from), and the statistics say when that was fewer than all.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...config import DataConfig
from ...data.preprocess import (
    all_dropped_message,
    length_summary,
    read_conversations,
    tokenization_counts,
    tokenize_options,
)
from ...data.registry import load_registry
from ...data.sources import looks_like_path
from ...data.tokenize import DROPPED_CONTROL_TEXT, IGNORE_INDEX, TRUNCATED, tokenize_batch
from ...errors import UserError
from .common import WebuiSettings, page_path

PREVIEW_MAX = 20  # examples shown at most: each is a few hundred to a few thousand <span>s (~30 KiB of HTML)
STATS_LIMIT = 2000  # conversations tokenized for the statistics: about a second with Qwen2's tokenizer

# The preview's own styles (class names prefixed qt- so they touch nothing else on the page). Colour is not the
# only mark: trained tokens are also underlined, masked ones faded, so the mask reads in any theme.
PREVIEW_CSS = """
.qt-preview { font-family: ui-monospace, monospace; font-size: 0.9em; }
.qt-legend { margin-bottom: 0.8em; }
.qt-example { margin: 0 0 1.2em 0; }
.qt-head { font-weight: 600; margin-bottom: 0.3em; }
.qt-zh { opacity: 0.7; font-weight: normal; margin-left: 0.6em; }
.qt-text { white-space: pre-wrap; word-break: break-all; line-height: 1.9; }
.qt-tok, .qt-key { border-radius: 3px; box-shadow: inset 0 0 0 1px rgba(128, 128, 128, 0.35); padding: 1px 0; }
.qt-trained, .qt-key-trained { background: rgba(34, 197, 94, 0.28); text-decoration: underline; }
.qt-masked, .qt-key-masked { opacity: 0.55; }
.qt-special, .qt-key-special { font-weight: 700; }
.qt-key { padding: 1px 4px; margin-right: 1em; }
"""


@dataclass
class DataPreview:
    """What the data tab shows: `html` (the first examples, every token a <span>), `stats` (the counts, see
    preview_data) and `examples` (the shown examples' input_ids, labels and status, as training gets them)."""

    html: str
    stats: dict[str, Any]
    examples: list[dict[str, Any]]


def dataset_reference(text: str, settings: WebuiSettings, registry_file: str | None = None) -> str:
    """The page's dataset field as data.dataset_name: a registered name or hub id unchanged, a file or folder as
    the absolute path page_path allows. Anything preprocess would read as a path (it exists, or looks like one
    and is not a registered name) goes through page_path, so the page reads no file outside its folders.

    Raises UserError for an empty field, or a path outside the page's folders."""
    text = text.strip()
    if not text:
        raise UserError(f"Dataset: nothing given; type a registered name (qwentune datasets lists them) or a file "
                        f"under {settings.workdir}, or upload a file.")
    local = Path(text).expanduser()
    if (settings.workdir / local).exists() or local.exists():
        return str(page_path(text, settings, "Dataset"))
    if text in load_registry(registry_file) or not looks_like_path(text):
        return text
    return str(page_path(text, settings, "Dataset"))  # refused when outside, "file not found" later otherwise


def preview_data(data: DataConfig, tokenizer, examples: int = 5, stats_limit: int = STATS_LIMIT) -> DataPreview:
    """data's source read, converted and tokenized as preprocess does it, for the page.

    examples: how many examples to show (1 to PREVIEW_MAX): the first ones that training keeps.
    stats_limit: conversations tokenized for the statistics (the first ones); conversion always covers every record.

    stats holds: source, format, records_in, conversations (after data.max_samples), skipped_in_conversion
    {reason: count}, tokenized (conversations tokenized here), tokenized_all (whether that is all of them),
    tokenization (preprocess's counts: kept_whole, truncated, dropped by reason), examples_out (kept among the
    tokenized), and tokens: total, trainable, and length summaries (min, mean, p50, p90, p99, max) of the full
    example as trained, of its prompt (the tokens before its first trained token), and of the full example
    before truncation; the summaries are absent when nothing was kept.

    Raises UserError, as preprocess would, for a source that cannot be found, read or converted, a system prompt
    with a control token, or a template that cannot be labelled; and for `examples` out of range."""
    if not 1 <= examples <= PREVIEW_MAX:
        raise UserError(f"Examples to show: {examples} is out of range; give a number from 1 to {PREVIEW_MAX}.")
    source, converted, conversations = read_conversations(data)
    options = tokenize_options(data, tokenizer)
    sample = conversations[: max(stats_limit, examples)]
    tokenized = tokenize_batch({"messages": [c["messages"] for c in sample]}, tokenizer, **options)
    status = Counter(tokenized["status"])
    kept = [i for i, s in enumerate(tokenized["status"]) if not s.startswith("dropped")]

    stats = {
        "source": source.label,
        "format": converted.format,
        "records_in": converted.records_in,
        "conversations": len(conversations),
        "skipped_in_conversion": dict(converted.skipped),
        "tokenized": len(sample),
        "tokenized_all": len(sample) == len(conversations),
        "tokenization": tokenization_counts(status),
        "examples_out": len(kept),
        "tokens": _token_stats(tokenized, kept),
    }
    shown = kept[:examples]
    rows = [{key: tokenized[key][i] for key in ("input_ids", "labels", "status", "full_length")} for i in shown]
    if rows:
        body = "".join(_example_html(number, sample[i]["messages"], row, tokenizer)
                       for number, (i, row) in enumerate(zip(shown, rows), start=1))
    else:
        reason = all_dropped_message(source.label, status, sample, options["forbidden"], data.max_length)
        body = f'<p class="qt-none">{html.escape(reason)}</p>'
    page = f'<style>{PREVIEW_CSS}</style><div class="qt-preview">{_LEGEND}{body}</div>'
    return DataPreview(html=page, stats=stats, examples=rows)


def _token_stats(tokenized: dict[str, list[Any]], kept: list[int]) -> dict[str, Any]:
    labels = [tokenized["labels"][i] for i in kept]
    lengths = [tokenized["length"][i] for i in kept]
    stats: dict[str, Any] = {"total": sum(lengths),
                             "trainable": sum(sum(1 for x in row if x != IGNORE_INDEX) for row in labels)}
    if kept:
        prompts = [next(p for p, x in enumerate(row) if x != IGNORE_INDEX) for row in labels]  # kept: one exists
        # As preprocess: lengths before truncation of every example the template rendered.
        full = [n for n, s in zip(tokenized["full_length"], tokenized["status"]) if s != DROPPED_CONTROL_TEXT]
        stats.update(length=length_summary(lengths), prompt_length=length_summary(prompts),
                     length_before_truncation=length_summary(full))
    return stats


def _both(english: str, chinese: str) -> str:
    """A UI text in both languages: the page's I18n translates labels, not text built by a handler."""
    return f'{html.escape(english)}<span class="qt-zh">{html.escape(chinese)}</span>'


_LEGEND = (
    '<div class="qt-legend">'
    f'<span class="qt-key qt-key-trained">{_both("trained: has a label, counts in the loss", "参与训练：有标签，计入损失")}</span>'
    f'<span class="qt-key qt-key-masked">{_both("masked: label -100, only read", "掩码：标签为 -100，只读不学")}</span>'
    f'<span class="qt-key qt-key-special">{_both("special token", "特殊词元")}</span>'
    f'{_both("↵ = newline; hover a token for its id", "↵ = 换行；悬停查看词元 id")}'
    "</div>"
)


def _example_html(number: int, messages: list[dict[str, str]], row: dict[str, Any], tokenizer) -> str:
    """One example: a header line and each token of row["input_ids"] as a <span> marked by its label."""
    ids, labels = row["input_ids"], row["labels"]
    pieces = token_texts(tokenizer, messages, ids)
    special = set(tokenizer.all_special_ids)
    spans = []
    for token_id, label, piece in zip(ids, labels, pieces):
        kind = "qt-masked" if label == IGNORE_INDEX else "qt-trained"
        extra = " qt-special" if token_id in special else ""
        text = html.escape(piece).replace("\n", "↵<br>")
        spans.append(f'<span class="qt-tok {kind}{extra}" title="{token_id}">{text}</span>')
    trained = sum(1 for x in labels if x != IGNORE_INDEX)
    english = f"Example {number}: {len(ids)} tokens, {trained} trained"
    chinese = f"示例 {number}：{len(ids)} 个词元，{trained} 个参与训练"
    if row["status"] == TRUNCATED:
        english += f"; truncated from {row['full_length']} to max_length"
        chinese += f"；从 {row['full_length']} 截断到 max_length"
    return (f'<div class="qt-example"><div class="qt-head">{_both(english, chinese)}</div>'
            f'<div class="qt-text">{"".join(spans)}</div></div>')


def token_texts(tokenizer, messages: list[dict[str, str]], input_ids: list[int]) -> list[str]:
    """The text of each token of `input_ids` (the tokenization of `messages`, perhaps truncated) as it stands in
    the chat template's rendering: their concatenation is that text, up to the last token.

    Taken from the fast tokenizer's character offsets, each token owning the text from where the previous one
    ended: decoding tokens one by one would show byte-level pieces of a character as replacement marks. A token
    that is the second part of one character gets "". RuntimeError if the rendering does not tokenize to
    input_ids (the preview would then not be what training sees)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"][: len(input_ids)] != list(input_ids):
        raise RuntimeError("the preview's tokens differ from tokenize_batch's for the same conversation")
    pieces, cursor = [], 0
    for _start, end in encoded["offset_mapping"][: len(input_ids)]:
        pieces.append(text[cursor:end] if end > cursor else "")
        cursor = max(cursor, end)
    return pieces


def preview_source(data: DataConfig, dataset_text: str, data_format: str, upload: str | os.PathLike | None,
                   settings: WebuiSettings) -> DataConfig:
    """data with the page's choice of source: an uploaded file (Gradio's upload folder, as it is) when there is
    one, else the dataset field through dataset_reference; and the page's format. UserError as
    dataset_reference."""
    name = os.fspath(upload) if upload else dataset_reference(dataset_text, settings, data.dataset_registry)
    return replace(data, dataset_name=name, dataset_format=data_format or "auto")


def stats_markdown(stats: dict[str, Any]) -> str:
    """preview_data's stats as a Markdown table, each row named in English and Chinese."""
    def row(english: str, chinese: str, value: Any, reason: str = "") -> str:
        name = f"{english} · {chinese}" + (f": `{reason}`" if reason else "")
        return f"| {name} | {str(value).replace('|', '&#124;')} |"  # a '|' would end the cell

    def lengths(summary: dict[str, Any] | None) -> str:
        if not summary:
            return "-"
        return f"{summary['min']} / {summary['mean']} / {summary['p50']} / {summary['p90']} / {summary['max']}"

    tokens = stats["tokens"]
    counts = stats["tokenization"]
    lines = [
        "| Statistic · 统计项 | Value · 值 |", "|---|---|",
        row("Source", "数据来源", f"`{stats['source']}` ({stats['format']})"),
        row("Records read", "读取的记录", stats["records_in"]),
        row("Conversations after conversion", "转换后的对话", stats["conversations"]),
    ]
    for reason, count in sorted(stats["skipped_in_conversion"].items()):
        lines.append(row("Skipped in conversion", "转换时跳过", count, reason))
    lines += [
        row("Tokenized for these statistics", "为统计而分词的对话",
            stats["tokenized"] if stats["tokenized_all"] else
            f"{stats['tokenized']} (the first of {stats['conversations']}; preprocess counts all · "
            f"前 {stats['tokenized']} 条，共 {stats['conversations']} 条；preprocess 统计全部)"),
        row("Kept whole", "完整保留", counts["kept_whole"]),
        row("Truncated to max_length", "截断到 max_length", counts["truncated"]),
    ]
    lines += [row("Dropped", "丢弃", count, reason)
              for reason, count in counts.items() if reason.startswith("dropped")]
    lines += [
        row("Examples trained", "参与训练的样本", stats["examples_out"]),
        row("Tokens: total / trained", "词元：总数 / 参与训练", f"{tokens['total']} / {tokens['trainable']}"),
        row("Example length (min / mean / median / p90 / max)", "样本长度（最小 / 平均 / 中位 / p90 / 最大）",
            lengths(tokens.get("length"))),
        row("Prompt length (tokens before the first trained one)", "提示长度（首个训练词元之前）",
            lengths(tokens.get("prompt_length"))),
        row("Length before truncation", "截断前长度", lengths(tokens.get("length_before_truncation"))),
    ]
    return "\n".join(lines)
