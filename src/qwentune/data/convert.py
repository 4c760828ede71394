"""Every supported dataset format -> the one internal format {"messages": [{"role", "content"}]}.

Formats: alpaca (instruction/input/output, optional system and history), sharegpt
(conversations of from/value), openai (messages of role/content), oasst1 (raw message
rows) and oasst_tree (the nested tree export). `data.columns` maps your column names
onto these, which covers custom formats.

What is fatal and what is skipped (and counted in the stats):
- fatal (UserError naming the record): a record without a field its format requires,
  or a field of the wrong type (a number, bool, list or object where text belongs: str()
  would train the model on text nobody wrote) - the file is not what it claims to be;
- skipped: a record that is well-formed but teaches nothing - an empty reply, Alpaca's
  `<nooutput>` marker, no assistant turn, turns out of order, empty turns, roles we do
  not train on (tools, functions); deleted / unreviewed / orphan oasst1 messages.
  A null text field is empty, exactly like "" (never the text "None").
Message contents are stripped of surrounding whitespace: templates add their own
separators, and a leading newline would blur where the reply starts.

Reasoning is kept: a reply's `reasoning_content`, `reasoning` or `think` field (on an Alpaca record, or on
a ShareGPT / OpenAI turn), or `<think>...</think>` written inside the reply, becomes the reply
`<think>\nREASONING\n</think>\n\nANSWER` (qwentune/thinking.py; the policy in README "Thinking mode").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..thinking import REASONING_FIELDS, with_reasoning
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


def _checked_text(value: Any, what: str, where: str) -> str:
    """The text of one text field, not stripped; a null is "" (an empty turn, skipped like one).

    Raises UserError for any other type: str() would turn 4 into "4" but also a list into its repr,
    and the model would be trained on text nobody wrote. `what` names the field, e.g. "'output'".
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: {what} must be text, got {type(value).__name__}; fix the record.")
    return value


def _text(record: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    """A field's stripped text; raises UserError when a required field is missing or any field is not text."""
    if required and key not in record:
        raise UserError(f"{where}: has no '{key}' field; fix the record, or map your column with data.columns.")
    return _checked_text(record.get(key), f"'{key}'", where).strip()


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


def _reasoning(record: dict[str, Any], where: str) -> str:
    """The first non-empty reasoning field of a record or turn ("" when none)."""
    for key in REASONING_FIELDS:
        text = _checked_text(record.get(key), f"'{key}'", where).strip()
        if text:
            return text
    return ""


def _alpaca_history(history: Any, where: str) -> list[dict[str, str]]:
    """The earlier turns of an Alpaca record; a null prompt or reply becomes an empty turn, which
    _normalize skips. Raises UserError when history is not [prompt, reply] pairs of text."""
    if history is None or history == "":  # a null or an empty CSV cell: no earlier turns
        return []
    if not isinstance(history, list) or any(not isinstance(t, (list, tuple)) or len(t) != 2 for t in history):
        raise UserError(f"{where}: 'history' must be a list of [prompt, reply] pairs; fix the record.")
    messages = []
    for number, (old_prompt, old_reply) in enumerate(history, start=1):
        messages += [
            {"role": "user", "content": _checked_text(old_prompt, f"'history' pair {number} prompt", where).strip()},
            {"role": "assistant", "content": _checked_text(old_reply, f"'history' pair {number} reply", where).strip()}]
    return messages


def _alpaca(record: dict[str, Any], where: str) -> list[dict[str, str]] | str:
    instruction = _text(record, "instruction", where)
    query = _text(record, "input", where, required=False)
    output = record.get("output")
    if isinstance(output, list):
        raise UserError(f"{where}: 'output' is a list (ranking data?); supervised fine-tuning needs one text reply.")
    output = with_reasoning(_text(record, "output", where), _reasoning(record, where))
    # Every field is checked before any skip, so a wrong type is reported even in a record that is skipped.
    history = _alpaca_history(record.get("history"), where)
    system = _text(record, "system", where, required=False)
    if not output:
        return "empty_reply"
    if output.startswith("<nooutput>"):  # Stanford Alpaca's "cannot be answered" artefact
        return "nooutput_marker"
    prompt = "\n".join(part for part in (instruction, query) if part)
    if not prompt:
        return "empty_prompt"
    messages = history + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return _normalize(messages, system)


def _turns(record: dict[str, Any], where: str, fmt: str) -> list[Any]:
    key = "conversations" if fmt == "sharegpt" and "conversations" in record else "messages"
    if fmt == "openai" and "messages" not in record and "conversations" in record:
        key = "conversations"
    turns = record.get(key)
    if not isinstance(turns, list):
        raise UserError(f"{where}: has no '{key}' list ({fmt} format); fix the record, or set data.dataset_format.")
    return turns


def _content_parts_text(parts: list[Any], what: str, where: str) -> str:
    """OpenAI content parts: the text ones joined (images and audio are not trained on).

    Raises UserError for a part that is not an object, or a text part whose 'text' is not text.
    """
    texts = []
    for number, part in enumerate(parts, start=1):
        if not isinstance(part, dict):
            raise UserError(f"{where}: {what} part {number} must be an object, got {type(part).__name__}; "
                            f"fix the record.")
        if part.get("type") == "text":
            texts.append(_checked_text(part.get("text"), f"{what} part {number} 'text'", where))
    return "".join(texts)


def _sharegpt(record: dict[str, Any], where: str) -> list[dict[str, str]] | str:
    messages, unsupported = [], False
    # Every turn is checked before a skip, so a wrong type is reported even in a record that is skipped.
    for number, turn in enumerate(_turns(record, where, "sharegpt"), start=1):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise UserError(f"{where}: every turn needs 'from' and 'value' (ShareGPT format); fix the record.")
        role = SHAREGPT_ROLES.get(_checked_text(turn["from"], f"turn {number} 'from'", where).lower())
        content = _checked_text(turn["value"], f"turn {number} 'value'", where).strip()
        if role == "assistant":
            content = with_reasoning(content, _reasoning(turn, f"{where} turn {number}"))
        unsupported = unsupported or role is None
        messages.append({"role": role, "content": content})
    system = _text(record, "system", where, required=False)
    return "unsupported_role" if unsupported else _normalize(messages, system)


def _openai(record: dict[str, Any], where: str) -> list[dict[str, str]] | str:
    messages, unsupported = [], False
    for number, turn in enumerate(_turns(record, where, "openai"), start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise UserError(f"{where}: every message needs 'role' and 'content' (OpenAI messages format); "
                            f"fix the record.")
        role = _checked_text(turn["role"], f"message {number} 'role'", where)
        what = f"message {number} 'content'"
        content = turn["content"]
        content = _content_parts_text(content, what, where) if isinstance(content, list) else _checked_text(
            content, what, where)
        unsupported = unsupported or role not in ("system", "user", "assistant")
        content = content.strip()
        if role == "assistant":
            content = with_reasoning(content, _reasoning(turn, f"{where} message {number}"))
        messages.append({"role": role, "content": content})
    system = _text(record, "system", where, required=False)
    return "unsupported_role" if unsupported else _normalize(messages, system)


PER_RECORD = {"alpaca": _alpaca, "sharegpt": _sharegpt, "openai": _openai}


def _oasst_rows(records: list[dict[str, Any]], fmt: str, source: str) -> list[dict[str, Any]]:
    """Flat oasst1 message rows (a tree export is flattened record by record, to name the record).

    Raises UserError naming the record (in a tree, also the message) whose 'text' is not text;
    a null 'text' stays, and oasst skips it as an empty message.
    """
    rows = []
    for index, record in enumerate(records):
        messages = oasst.flatten_tree_export([record]) if fmt == "oasst_tree" else [record]
        for message in messages:
            what = f"'text' of message {message.get('message_id')}" if fmt == "oasst_tree" else "'text'"
            _checked_text(message.get("text"), what, f"{source}: record {index + 1}")
        rows += messages
    return rows


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
        rows = _oasst_rows(records, fmt, source)
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
