"""The inference front end: one prompt, a file of prompts, or an interactive streamed chat."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..config import GenerationConfig
from ..data.convert import conversation
from ..errors import UserError
from ..models.load import LoadedModel
from .generate import answer_all, stream

CHAT_HELP = "commands: /clear (forget the conversation), /system TEXT (set the system prompt), /exit"


def read_prompts(path: str | Path) -> list[str]:
    """A .txt file (one prompt per line) or .json / .jsonl (strings, or objects with "prompt" or "question").

    Raises UserError when the file is missing, not UTF-8 text, malformed JSON, or holds no prompts.
    """
    from ..fsutil import read_text

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: prompts file not found.")
    text = read_text(path)
    if path.suffix.lower() in (".json", ".jsonl"):
        from ..data.readers import parse_json, read_records

        items = parse_json(path, text) if text.lstrip().startswith("[") else read_records(path)
        if not isinstance(items, list):
            raise UserError(f"{path}: expected a JSON list of prompts.")
        prompts = []
        for index, item in enumerate(items, start=1):
            value = item if isinstance(item, str) else (
                (item.get("prompt") or item.get("question")) if isinstance(item, dict) else None)
            if not isinstance(value, str):
                raise UserError(f"{path}: item {index} is neither a string nor an object with 'prompt' or 'question'.")
            prompts.append(value)
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"{path}: the prompts file is empty; put one prompt per line.")
    return prompts


def answer_prompts(loaded: LoadedModel, prompts: list[str], settings: GenerationConfig, system: str | None,
                   batch_size: int, seed: int) -> list[dict]:
    conversations = [conversation(p, system) for p in prompts]
    answers = answer_all(loaded, conversations, settings, batch_size, seed=seed)
    return [{"prompt": p, "answer": a.text, "new_tokens": a.new_tokens, "stopped": a.stopped}
            for p, a in zip(prompts, answers)]


def chat(loaded: LoadedModel, settings: GenerationConfig, system: str | None, seed: int,
         stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Multi-turn chat on stdin/stdout with the reply streamed as it is generated."""
    history: list[dict[str, str]] = []
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
        stdout.write("model> ")
        pieces = []
        for piece in stream(loaded, messages, settings, seed=seed):
            pieces.append(piece)
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        history += [messages[-1], {"role": "assistant", "content": "".join(pieces).strip()}]
