"""Files of prompts or questions, read one way for `infer --prompts_file` and `compare --questions-file`, so
the two commands answer the same item the same way (its own system prompt included).

Formats, by file name:
- .txt: one prompt per line (blank lines skipped);
- .json / .jsonl: a JSON list, or JSON Lines (one object per line);
- any other name: a JSON list when the text starts with "[", else one prompt per line.
An item is a string, or an object with `question` (or `prompt`) and optional `reference`, `category` and
`system` (a system prompt for this item only, ahead of any default system prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.convert import conversation
from ..errors import UserError, did_you_mean

FIELDS = ("question", "prompt", "reference", "category", "system")

# Typed text that is not UTF-8 (a GBK terminal, say) reaches Python as lone surrogates (surrogateescape:
# command-line arguments, and stdin as read_lines_leniently sets it), which the tokenizer cannot take.
NOT_UTF8_LINE = "that line is not UTF-8 text; set the terminal to UTF-8"


def is_utf8_text(text: str) -> bool:
    """False when `text` holds lone surrogates: bytes that were not UTF-8, kept by Python's surrogateescape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_lines_leniently(stream) -> None:
    """Let a text stream (sys.stdin) read a line that is not UTF-8 as lone surrogates instead of raising
    UnicodeDecodeError, so an interactive loop can say so (is_utf8_text) and go on."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")


@dataclass(frozen=True)
class Question:
    question: str
    reference: str | None = None
    category: str = "general"
    system: str | None = None

    def messages(self, default_system: str | None = None) -> list[dict[str, str]]:
        """The conversation to answer: this item's system prompt, else `default_system`, then the question."""
        return conversation(self.question, self.system or default_system)


def _question(item, where: str) -> Question:
    if isinstance(item, str):
        item = {"question": item}
    if not isinstance(item, dict):
        raise UserError(f"{where} is neither a string nor an object with 'question' (or 'prompt').")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        hint = did_you_mean(unknown[0], FIELDS) if len(unknown) == 1 else ""
        raise UserError(f"{where} has unknown field(s) {', '.join(unknown)}{hint or ''}; "
                        f"use question (or prompt), reference, category, system.")
    if "question" in item and "prompt" in item:
        raise UserError(f"{where} has both 'question' and 'prompt'; keep one.")
    text = item.get("question", item.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where} needs a non-empty 'question' (or 'prompt') text, or must be a plain string.")
    for key in ("reference", "category", "system"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise UserError(f"{where}: '{key}' must be text, got {type(item[key]).__name__}; fix the item.")
    return Question(text.strip(), item.get("reference") or None, item.get("category") or "general",
                    item.get("system") or None)


def read_questions(path: str | Path, kind: str = "questions") -> list[Question]:
    """The items of a prompts / questions file (formats in the module docstring), in file order.

    `kind` ("questions", "prompts") names the file in messages. Raises UserError when the file is missing,
    not UTF-8 text, malformed JSON (naming the line), holds no items, or an item (numbered from 1) is not
    a question or has an unknown field.
    """
    from ..data.readers import parse_json, read_records
    from ..fsutil import read_text, require_file

    path = require_file(path, kind, "check the path (formats: docs/model_comparison_guide.md).")
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix != ".txt" and text.lstrip().startswith("["):
        items = parse_json(path, text)
    elif suffix in (".json", ".jsonl"):
        items = read_records(path)  # JSON Lines, or JSON Lines saved with a .json name
    else:
        items = _lines(text)
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON list of {kind}; put the items in [...].")
    if not items:
        raise UserError(f"{path}: the {kind} file is empty; put one per line (.txt), or a non-empty JSON list of "
                        f"strings or objects with 'question'.")
    return [_question(item, f"{path}: item {number}") for number, item in enumerate(items, start=1)]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def typed_questions(text: str, where: str = "questions") -> list[Question]:
    """Questions typed one per line, as a .txt questions file holds them (blank lines skipped); an empty list
    for blank text. Raises UserError naming `where` for text a tokenizer cannot take (lone surrogates)."""
    if not is_utf8_text(text):
        raise UserError(f"{where}: the text holds characters that are not valid Unicode; type or paste it again.")
    return [_question(line, f"{where}: line {number}") for number, line in enumerate(_lines(text), start=1)]
