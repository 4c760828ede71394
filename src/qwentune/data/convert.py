"""Every supported dataset format -> the one internal format {"messages": [{"role", "content"}]}.

Formats: alpaca (instruction/input/output, optional system and history), sharegpt
(conversations of from/value), openai (messages of role/content), oasst1 (raw message
rows) and oasst_tree (the nested tree export). `data.columns` maps your column names
onto these, which covers custom formats.

What is fatal and what is skipped (and counted in the stats):
- fatal (UserError naming the record): a record without a field its format requires,
  or a field of the wrong type - the file is not what it claims to be;
- skipped: a record that is well-formed but teaches nothing - an empty reply, Alpaca's
  `<nooutput>` marker, no assistant turn, turns out of order, empty turns, roles we do
  not train on (tools, functions); deleted / unreviewed / orphan oasst1 messages.
Message contents are stripped of surrounding whitespace: templates add their own
separators, and a leading newline would blur where the reply starts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from . import oasst

FORMATS = ("alpaca", "sharegpt", "openai", "oasst1", "oasst_tree")

SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant",
    "system": "system",
}


@dataclass
class Converted:
    conversations: list[dict[str, Any]]
    format: str
    records_in: int
    skipped: Counter = field(default_factory=Counter)


def detect_format(record: dict[str, Any]) -> str | None:
    """Guess the format from one record's keys; None when nothing fits."""
    for key in ("messages", "conversations"):
        turns = record.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            return "sharegpt" if "from" in turns[0] else "openai"
    if isinstance(record.get("prompt"), dict) and "replies" in record["prompt"]:
        return "oasst_tree"
    if "message_id" in record and "parent_id" in record:
        return "oasst1"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def _rename_columns(records: list[dict[str, Any]], columns: dict[str, str], source: str) -> list[dict[str, Any]]:
    if not columns:
        return records
    first = records[0]
    for ours, theirs in columns.items():
        if theirs not in first:
            raise UserError(
                f"{source}: data.columns maps '{ours}' to column '{theirs}', which the first record does not have "
                f"(its columns: {', '.join(map(str, first))}); fix data.columns."
            )
    return [{**rec, **{ours: rec.get(theirs) for ours, theirs in columns.items()}} for rec in records]


def _text(record: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required and key not in record:
            raise UserError(f"{where}: has no '{key}' field; fix the record, or map your column with data.columns.")
        return ""
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{where}: '{key}' must be text, got {type(value).__name__}; fix the record.")
    return value.strip()


def _normalize(messages: list[dict[str, str]], system: str) -> list[dict[str, str]] | str:
    """Validate turn order; return the messages or the reason to skip them."""
    if messages and messages[0]["role"] == "system":
        system = messages[0]["content"] or system
        messages = messages[1:]
    # A reply with no prompt before it (some ShareGPT dumps start with the bot) is dropped,
    # and so is a final prompt with no reply after it.
    while messages and messages[0]["role"] == "assistant":
        messages = messages[1:]
    while messages and messages[-1]["role"] == "user":
        messages = messages[:-1]
    if not messages:
        return "no_assistant_turn"
    for index, message in enumerate(messages):
        if message["role"] != ("user" if index % 2 == 0 else "assistant"):
            return "turns_out_of_order"
        if not message["content"]:
            return "empty_turn"
    return ([{"role": "system", "content": system}] if system else []) + messages


def _alpaca(record: dict[str, Any], where: str) -> list[dict[str, str]] | str:
    instruction = _text(record, "instruction", where)
    query = _text(record, "input", where, required=False)
    output = record.get("output")
    if isinstance(output, list):
        raise UserError(f"{where}: 'output' is a list (ranking data?); supervised fine-tuning needs one text reply.")
    output = _text(record, "output", where)
    if not output:
        return "empty_reply"
    if output.startswith("<nooutput>"):  # Stanford Alpaca's "cannot be answered" artefact
        return "nooutput_marker"
    prompt = "\n".join(part for part in (instruction, query) if part)
    if not prompt:
        return "empty_prompt"
    messages = []
    history = record.get("history") or []
    if not isinstance(history, list) or any(not isinstance(t, (list, tuple)) or len(t) != 2 for t in history):
        raise UserError(f"{where}: 'history' must be a list of [prompt, reply] pairs.")
    for old_prompt, old_reply in history:
        messages += [{"role": "user", "content": str(old_prompt).strip()},
                     {"role": "assistant", "content": str(old_reply).strip()}]
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return _normalize(messages, _text(record, "system", where, required=False))


def _turns(record: dict[str, Any], where: str, fmt: str) -> list[Any]:
    key = "conversations" if fmt == "sharegpt" and "conversations" in record else "messages"
    if fmt == "openai" and "messages" not in record and "conversations" in record:
        key = "conversations"
    turns = record.get(key)
    if not isinstance(turns, list):
        raise UserError(f"{where}: has no '{key}' list ({fmt} format); fix the record, or set data.dataset_format.")
    return turns


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text").strip()
    if content is None:
        return ""
    raise UserError(f"{where}: a message's content must be text, got {type(content).__name__}.")


def _sharegpt(record: dict[str, Any], where: str) -> list[dict[str, str]] | str:
    messages = []
    for turn in _turns(record, where, "sharegpt"):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise UserError(f"{where}: every turn needs 'from' and 'value' (ShareGPT format).")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            return "unsupported_role"
        messages.append({"role": role, "content": _content_text(turn["value"], where)})
    return _normalize(messages, _text(record, "system", where, required=False))


def _openai(record: dict[str, Any], where: str) -> list[dict[str, str]] | str:
    messages = []
    for turn in _turns(record, where, "openai"):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise UserError(f"{where}: every message needs 'role' and 'content' (OpenAI messages format).")
        if turn["role"] not in ("system", "user", "assistant"):
            return "unsupported_role"
        messages.append({"role": turn["role"], "content": _content_text(turn["content"], where)})
    return _normalize(messages, _text(record, "system", where, required=False))


PER_RECORD = {"alpaca": _alpaca, "sharegpt": _sharegpt, "openai": _openai}


def conversation(prompt: str, system: str | None = None, history: list[dict[str, str]] = ()) -> list[dict[str, str]]:
    """The messages to answer `prompt` in the internal format: a system turn when `system` is given,
    the earlier turns, then the user's prompt."""
    return ([{"role": "system", "content": system}] if system else []) + list(history) + [
        {"role": "user", "content": prompt}]


def convert_records(
    records: list[dict[str, Any]],
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    source: str = "dataset",
    system_prompt: str | None = None,
    languages: list[str] | tuple[str, ...] = (),
) -> Converted:
    """Convert raw records to {"messages": [...]} conversations, counting what was skipped."""
    if not records:
        raise UserError(f"{source}: contains no records; check the file.")
    records = _rename_columns(records, columns or {}, source)
    if fmt == "auto":
        fmt = detect_format(records[0])
        if fmt is None:
            raise UserError(
                f"{source}: cannot tell the format from the first record's fields ({', '.join(map(str, records[0]))}); "
                f"set data.dataset_format to one of {', '.join(FORMATS)}, or map your columns with data.columns, "
                f"e.g. {{instruction: question, output: answer}}."
            )
    if fmt not in FORMATS:
        raise UserError(f"{source}: unknown format '{fmt}'; use one of auto, {', '.join(FORMATS)}.")

    result = Converted(conversations=[], format=fmt, records_in=len(records))
    if fmt in ("oasst1", "oasst_tree"):
        rows = oasst.flatten_tree_export(records) if fmt == "oasst_tree" else records
        for index, row in enumerate(rows[:1]):
            for key in ("message_id", "text", "role"):
                if key not in row:
                    raise UserError(f"{source}: record {index + 1} has no '{key}' field ({fmt} format).")
        conversations, result.skipped = oasst.rows_to_conversations(rows, languages)
        outcomes: list[list[dict[str, str]] | str] = [_normalize(c, "") for c in conversations]
    else:
        convert_one = PER_RECORD[fmt]
        outcomes = [convert_one(rec, f"{source}: record {i + 1}") for i, rec in enumerate(records)]

    for outcome in outcomes:
        if isinstance(outcome, str):
            result.skipped[outcome] += 1
            continue
        if system_prompt and outcome[0]["role"] != "system":
            outcome = [{"role": "system", "content": system_prompt}] + outcome
        result.conversations.append({"messages": outcome})
    return result
