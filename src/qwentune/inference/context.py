"""Fitting a conversation into the model's positions: a long chat drops its oldest turns, never the system
prompt or the question being asked, so that the prompt (counted with the chat template) plus max_new_tokens
fits. Past its positions a model answers with no error, only worse (RoPE extrapolates silently), or fails
(learned positions); either way the user must be told."""

from __future__ import annotations

from .generate import prompt_length


def model_positions(model) -> int | None:
    """How many positions (prompt + reply tokens) the model was built for: config.max_position_embeddings,
    or None when its config does not say."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else None


def fit_conversation(tokenizer, messages: list[dict[str, str]], max_new_tokens: int,
                     positions: int | None, enable_thinking: bool | None = None) -> list[dict[str, str]] | None:
    """`messages` (an optional system message, earlier user/assistant turns, the newest user message last)
    with the oldest turns dropped until the prompt, as the chat template renders it with the generation
    prompt, plus `max_new_tokens` fits in `positions`. The system message and the newest user message are
    always kept, and what is kept starts with a user turn. `enable_thinking`: as in generate.prompt_text. Returns `messages` itself when it fits (or
    `positions` is None), and None when even the system message and the newest user message do not fit."""
    if positions is None:
        return messages
    room = positions - max_new_tokens
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system):])
    while prompt_length(tokenizer, system + turns, enable_thinking) > room:
        if len(turns) == 1:
            return None
        turns.pop(0)
        while turns[0]["role"] != "user" and len(turns) > 1:  # never start on an assistant's reply
            turns.pop(0)
    return messages if len(turns) == len(messages) - len(system) else system + turns


def too_long_notice(positions: int, max_new_tokens: int) -> str:
    """What to tell the user, once per session, when the oldest turns start being dropped."""
    return (f"the conversation is longer than the model's {positions} positions allow with max_new_tokens "
            f"{max_new_tokens}; dropping the oldest turns from now on, keeping the system prompt")


def question_too_long(tokenizer, messages: list[dict[str, str]], positions: int, max_new_tokens: int,
                      enable_thinking: bool | None = None) -> str:
    """The one line for a question that does not fit even alone (with the system prompt): it is skipped."""
    length = prompt_length(tokenizer, messages, enable_thinking)
    return (f"this question is {length} tokens with the system prompt and the chat template; with max_new_tokens "
            f"{max_new_tokens} it does not fit the model's {positions} positions, so it is skipped: ask a shorter "
            f"one, shorten the system prompt, or lower max_new_tokens")
