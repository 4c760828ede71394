"""Conversations -> input_ids and labels with the model's own chat template.

The input ids are exactly `tokenizer.apply_chat_template(messages)`. Labels are -100
everywhere except on each assistant reply and the end-of-turn token that closes it
(`<|im_end|>` for Qwen), in every turn: the model learns to answer and to stop, and
never to imitate the prompt.

How the reply spans are found: render the conversation before each assistant turn with
the generation prompt; that text must be a prefix of the whole rendering (the template
does not rewrite earlier turns), and the reply runs from there through the next
end-of-turn token (Qwen adds a newline after `<|im_end|>` that belongs to the template,
not to the reply). One batched call of the fast tokenizer with offsets then labels every
token that starts inside a span. A template that rewrites earlier turns is reported, not
silently mislabelled.

Thinking (Qwen3; the policy in README "Thinking mode"): the reply span starts after the
generation prompt rendered with `enable_thinking=False` when the rendering continues with
it: Qwen3 writes an empty `<think>\n\n</think>\n\n` before a reply without reasoning,
exactly the prompt the model gets at inference with thinking off, so it stays unlabelled;
a reply with reasoning (`<think>\n...\n</think>\n\n` then the answer) is trained whole.
Qwen3's template drops the reasoning of turns before the last user message (the model
never sees earlier thinking at inference), so those turns train their answers only.

Truncation keeps examples trainable: a too-long conversation is cut after its last
assistant turn that fits; if even the first reply does not fit, it is cut at
max_length, and if no reply token is left the example is dropped (and counted).
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError

IGNORE_INDEX = -100
# Raised whenever the same conversations and tokenizer would get other ids or labels (a cached tokenization
# made with another labelling is then not reused): 2 = Qwen3's think blocks (issue 21) and reasoning fields kept.
LABELLING_VERSION = 2

KEPT, TRUNCATED = "kept", "truncated"
DROPPED_NO_REPLY = "dropped_no_reply_within_max_length"
DROPPED_CONTROL_TEXT = "dropped_special_token_text_in_content"


def assistant_spans(tokenizer, messages: list[dict[str, str]], rendered: str,
                    end_of_turn: str | None) -> list[tuple[int, int]]:
    """Character spans [start, end) of each assistant reply (with its end-of-turn token) in `rendered`."""
    spans = []
    thinking_template = "enable_thinking" in str(tokenizer.chat_template or "")
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:index], add_generation_prompt=True, tokenize=False)
        if not rendered.startswith(prompt):
            raise UserError(
                "the tokenizer's chat template does not render conversations incrementally (it rewrites earlier "
                "turns), so reply tokens cannot be located safely; use a template without that behaviour."
            )
        start = len(prompt)
        # Qwen3: a reply without reasoning follows the empty think block of the non-thinking prompt.
        if thinking_template:
            quiet = tokenizer.apply_chat_template(messages[:index], add_generation_prompt=True, tokenize=False,
                                                  enable_thinking=False)
            if len(quiet) > start and rendered.startswith(quiet):
                start = len(quiet)
        marker = rendered.find(end_of_turn, start) if end_of_turn else -1
        if marker != -1:
            end = marker + len(end_of_turn)
        else:  # no end-of-turn token: the reply ends where the conversation through it ends
            end = len(tokenizer.apply_chat_template(messages[: index + 1], tokenize=False))
        spans.append((start, end))
    return spans


def _labels_from_offsets(input_ids: list[int], offsets: list[tuple[int, int]],
                         spans: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE_INDEX] * len(input_ids)
    span_index = 0
    for position, (start, _end) in enumerate(offsets):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        if spans[span_index][0] <= start:
            labels[position] = input_ids[position]
    return labels


def _turn_ends(labels: list[int]) -> list[int]:
    """Token index just past each run of labelled tokens (one run per assistant turn)."""
    ends = []
    for position in range(len(labels)):
        inside = labels[position] != IGNORE_INDEX
        if inside and (position + 1 == len(labels) or labels[position + 1] == IGNORE_INDEX):
            ends.append(position + 1)
    return ends


def truncate(input_ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int], str]:
    """Cut to max_length keeping whole turns where possible; status says what happened."""
    if len(input_ids) <= max_length:
        status = KEPT
    else:
        fitting = [end for end in _turn_ends(labels) if end <= max_length]
        cut = fitting[-1] if fitting else max_length
        input_ids, labels, status = input_ids[:cut], labels[:cut], TRUNCATED
    if all(label == IGNORE_INDEX for label in labels):
        return [], [], DROPPED_NO_REPLY
    return input_ids, labels, status


def tokenize_batch(batch: dict[str, list[Any]], tokenizer, max_length: int, end_of_turn: str | None,
                   forbidden: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """`datasets.map(batched=True)` function: messages -> input_ids, labels, length, full_length, status."""
    conversations = batch["messages"]
    clean = [
        not any(token in message["content"] for message in messages for token in forbidden)
        for messages in conversations
    ]
    texts = [tokenizer.apply_chat_template(m, tokenize=False) if ok else "" for m, ok in zip(conversations, clean)]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "length": [], "full_length": [], "status": []}
    for messages, ok, text, ids, offsets in zip(conversations, clean, texts, encoded["input_ids"],
                                                 encoded["offset_mapping"]):
        out["full_length"].append(len(ids))
        if ok:
            labels = _labels_from_offsets(ids, offsets, assistant_spans(tokenizer, messages, text, end_of_turn))
            ids, labels, status = truncate(ids, labels, max_length)
        else:
            # A literal "<|im_end|>" in a reply would be read as a real control token.
            ids, labels, status = [], [], DROPPED_CONTROL_TEXT
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["status"].append(status)
    return out
