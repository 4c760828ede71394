"""The inference front end: one prompt, a file of prompts, or an interactive streamed chat."""

from __future__ import annotations

import sys
from typing import TextIO

from ..config import GenerationConfig
from ..data.convert import conversation
from ..models.load import LoadedModel
from .context import fit_conversation, model_positions, question_too_long, too_long_notice
from .generate import answer_all, stream
from .prompts import NOT_UTF8_LINE, Question, is_utf8_text, read_lines_leniently

CHAT_HELP = "commands: /clear (forget the conversation), /system TEXT (set the system prompt), /exit"


def answer_prompts(loaded: LoadedModel, questions: list[Question], settings: GenerationConfig, system: str | None,
                   batch_size: int, seed: int) -> list[dict]:
    """Answer every item of a prompts file (prompts.read_questions): each with its own system prompt, else
    `system`, exactly as the comparison asks them. One record per item, in file order."""
    conversations = [q.messages(system) for q in questions]
    answers = answer_all(loaded, conversations, settings, batch_size, seed=seed)
    return [{"prompt": q.question, "system": q.system or system, "answer": a.text, "new_tokens": a.new_tokens,
             "stopped": a.stopped} for q, a in zip(questions, answers)]


def chat(loaded: LoadedModel, settings: GenerationConfig, system: str | None, seed: int,
         stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Multi-turn chat on stdin/stdout with the reply streamed as it is generated.

    The conversation is kept, less its oldest turns once it and a reply no longer fit the model's positions
    (said once); a question that does not fit even alone is skipped with one line, and the chat goes on."""
    history: list[dict[str, str]] = []
    positions, trimming = model_positions(loaded.model), False
    read_lines_leniently(stdin)
    stdout.write(f"chat with {loaded.description.get('finetuned') or loaded.description['base']}; {CHAT_HELP}\n")
    while True:
        stdout.write("\nyou> ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if not is_utf8_text(text):
            stdout.write(f"({NOT_UTF8_LINE})\n")
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            history = []
            stdout.write("(conversation cleared)\n")
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            history = []
            stdout.write(f"(system prompt {'set' if system else 'removed'}; conversation cleared)\n")
            continue
        if text.startswith("/"):
            stdout.write(f"unknown command {text.split()[0]}; {CHAT_HELP}\n")
            continue
        messages = conversation(text, system, history)
        fitted = fit_conversation(loaded.tokenizer, messages, settings.max_new_tokens, positions,
                                  settings.enable_thinking)
        if fitted is None:
            alone = conversation(text, system)
            too_long = question_too_long(loaded.tokenizer, alone, positions, settings.max_new_tokens,
                                         settings.enable_thinking)
            stdout.write(f"({too_long})\n")
            continue
        if fitted is not messages and not trimming:
            trimming = True
            stdout.write(f"({too_long_notice(positions, settings.max_new_tokens)})\n")
        messages = fitted
        stdout.write("model> ")
        pieces = []
        for piece in stream(loaded, messages, settings, seed=seed):
            pieces.append(piece)
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        history = [m for m in messages if m["role"] != "system"] + [
            {"role": "assistant", "content": "".join(pieces).strip()}]
