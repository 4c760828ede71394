"""Reasoning ("thinking") text in replies: one written form, and the split of a reply into thinking and answer.

qwentune keeps a reply's reasoning inside its content in the form Qwen3's chat template renders it,
`<think>\\nREASONING\\n</think>\\n\\nANSWER`: Qwen3's template reads that form back itself (it splits a reply
at `</think>`, exactly as `split_thinking` does), and other templates train it as plain text. The policy
(what is trained, what inference shows) is in README "Thinking mode".
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# Fields that carry a reply's reasoning in the datasets people use: reasoning_content (Qwen3's template,
# DeepSeek-R1's API), reasoning (OpenAI-style dumps), think (several distilled-reasoning sets).
REASONING_FIELDS = ("reasoning_content", "reasoning", "think")


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a reply: the text before `</think>` (after any `<think>`) and the text after it,
    both stripped; ("", text) when there is no `</think>` (a reply without reasoning, or thinking cut off
    before it closed: then everything after `<think>` is thinking and the answer is empty)."""
    if THINK_CLOSE not in text:
        if text.lstrip().startswith(THINK_OPEN):  # generation stopped inside the thinking
            return text.lstrip()[len(THINK_OPEN):].strip(), ""
        return "", text.strip()
    head, _, answer = text.partition(THINK_CLOSE)
    return head.split(THINK_OPEN)[-1].strip(), answer.strip()


def with_reasoning(answer: str, reasoning: str | None = None) -> str:
    """The reply in qwentune's one form: `<think>\\nREASONING\\n</think>\\n\\nANSWER`, or the answer alone when
    there is no reasoning. A `reasoning` field wins over `<think>...</think>` written inside `answer` (as in
    Qwen3's template); an empty answer gives "" (a reply with nothing to say is skipped, whatever it thought)."""
    inline, answer = split_thinking(answer) if THINK_CLOSE in answer else ("", answer.strip())
    reasoning = (reasoning or "").strip() or inline
    if not answer:
        return ""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}" if reasoning else answer
