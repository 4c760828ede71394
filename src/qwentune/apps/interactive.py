"""Interactive comparison in a terminal: each question answered by both models, streamed, then side by side.

Commands: /help, /params [key=value ...], /system [text], /save [file], /rate (blind A/B on/off), /exit.
In blind mode the two answers are shown as A and B in random order; the rater picks a, b or t (tie),
and the choice is saved with the hidden mapping, and the running win rate is printed.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import sys
import unicodedata
from pathlib import Path
from typing import TextIO

from ..config import GenerationConfig, change_generation
from ..data.convert import conversation
from ..errors import UserError
from ..evaluation.rating import win_rate
from ..inference.context import fit_conversation, model_positions, question_too_long
from ..inference.generate import stream
from ..inference.prompts import NOT_UTF8_LINE, is_utf8_text, read_lines_leniently
from .compare import Pair

HELP = """commands:
  /help                  this list
  /params [k=v ...]      show or set generation settings, e.g. /params temperature=0.9 do_sample=true
  /system [text]         set (or clear) the system prompt for both models
  /save [file]           append the last exchange to a JSONL file (default comparison_session.jsonl)
  /rate                  blind A/B rating on/off: answers shown as A and B in random order, you pick
  /exit                  leave"""


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _wrap(text: str, width: int) -> list[str]:
    """Wrap to a display width, counting CJK characters as two columns."""
    lines = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for ch in paragraph:
            if _width(line + ch) > width:
                lines.append(line)
                line = ""
            line += ch
        lines.append(line)
    return lines


def side_by_side(left_title: str, left: str, right_title: str, right: str, total_width: int) -> str:
    column = max(20, (total_width - 3) // 2)
    a, b = [left_title, "-" * column] + _wrap(left, column), [right_title, "-" * column] + _wrap(right, column)
    rows = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else ""
        y = b[i] if i < len(b) else ""
        rows.append(x + " " * (column - _width(x)) + " | " + y)
    return "\n".join(rows)


def parse_params(text: str) -> dict[str, str]:
    """`temperature=0.9 do_sample=true` -> {"temperature": "0.9", "do_sample": "true"}; config.change_generation
    types and checks the values. Raises UserError for an item that is not key=value."""
    changes = {}
    for item in text.split():
        key, equals, value = item.partition("=")
        if not (key and equals and value):
            raise UserError(f"/params: cannot read '{item}'; write key=value, e.g. /params temperature=0.9.")
        changes[key] = value
    return changes


class Session:
    def __init__(self, pair: Pair, settings: GenerationConfig, system: str | None, seed: int,
                 stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, save_path: str = "comparison_session.jsonl"):
        self.pair, self.settings, self.system, self.seed = pair, settings, system, seed
        self.stdin, self.stdout, self.save_path = stdin, stdout, save_path
        read_lines_leniently(stdin)
        self.blind = False
        self.last: dict | None = None
        self.votes = {"finetuned": 0, "base": 0, "tie": 0}
        self.rng = random.Random(seed)

    def say(self, text: str = "", end: str = "\n") -> None:
        self.stdout.write(text + end)
        self.stdout.flush()

    def ask(self, prompt: str) -> str | None:
        self.say(prompt, end="")
        line = self.stdin.readline()
        if line and not is_utf8_text(line):
            self.say(f"({NOT_UTF8_LINE})")
            return ""
        return None if not line else line.strip()

    def answer(self, side: str, messages: list[dict[str, str]], title: str) -> str:
        model, adapter = self.pair.model_and_switch(side)
        self.say(f"[{title}] ", end="")
        pieces = []
        for piece in stream(model, messages, self.settings, adapter=adapter, seed=self.seed):
            pieces.append(piece)
            self.say(piece, end="")
        self.say()
        return "".join(pieces).strip()

    def exchange(self, question: str) -> None:
        messages = conversation(question, self.system)
        # Each question is asked afresh (no history to drop), so one that does not fit is skipped, said in one line.
        sides = [self.pair.model_and_switch(side)[0] for side in ("base", "finetuned")]
        known = [p for p in (model_positions(loaded.model) for loaded in sides) if p is not None]
        positions = min(known) if known else None
        tokenizer = self.pair.finetuned.tokenizer
        if fit_conversation(tokenizer, messages, self.settings.max_new_tokens, positions) is None:
            self.say(question_too_long(tokenizer, messages, positions, self.settings.max_new_tokens))
            return
        order = ["base", "finetuned"]
        if self.blind:
            self.rng.shuffle(order)
        titles = dict(zip(order, ("A", "B"))) if self.blind else {"base": "base", "finetuned": "fine-tuned"}
        answers = {side: self.answer(side, messages, titles[side]) for side in order}
        width = shutil.get_terminal_size((100, 24)).columns
        first, second = order
        self.say(side_by_side(titles[first], answers[first], titles[second], answers[second], width))
        self.last = {"question": question, "system": self.system, "settings": dataclasses.asdict(self.settings),
                     "seed": self.seed, "base": answers["base"], "finetuned": answers["finetuned"]}
        if self.blind:
            self.rate(dict(zip(("a", "b"), order)))

    def rate(self, mapping: dict[str, str]) -> None:
        while True:
            choice = self.ask("which is better? [a/b/t(ie)] ")
            if choice is None:
                return
            choice = choice.lower()[:1]
            if choice in ("a", "b", "t"):
                break
            self.say("type a, b or t")
        winner = "tie" if choice == "t" else mapping[choice]
        self.votes[winner] += 1
        self.last["rating"] = {"choice": choice, "shown_as": {"A": mapping["a"], "B": mapping["b"]}, "winner": winner}
        self.save(self.save_path, quiet=True)
        rated = sum(self.votes.values())
        rate = win_rate(self.votes["finetuned"], self.votes["base"], self.votes["tie"])
        self.say(f"A was {mapping['a']}, B was {mapping['b']}. Fine-tuned wins {self.votes['finetuned']}, "
                 f"base wins {self.votes['base']}, ties {self.votes['tie']}: fine-tuned win rate "
                 f"{rate:.0%} over {rated} (ties count half)")

    def save(self, path: str, quiet: bool = False) -> None:
        if self.last is None:
            self.say("nothing to save yet: ask a question first")
            return
        with open(Path(path), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(self.last, ensure_ascii=False, allow_nan=False) + "\n")
        if not quiet:
            self.say(f"saved to {path}")

    def command(self, text: str) -> bool:
        """Run a /command; False means leave."""
        name, _, rest = text.partition(" ")
        rest = rest.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/params":
            if rest:
                try:  # the same checks as a config file; a refused change keeps the old settings
                    self.settings = change_generation(self.settings, parse_params(rest), "/params")
                except UserError as exc:
                    self.say(f"{exc} The settings are unchanged.")
            self.say(", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.settings).items()))
        elif name == "/system":
            self.system = rest or None
            self.say(f"system prompt {'set' if self.system else 'cleared'}")
        elif name == "/save":
            self.save(rest or self.save_path)
        elif name == "/rate":
            self.blind = not self.blind
            self.say("blind A/B rating on: answers come as A and B in random order" if self.blind
                     else "blind A/B rating off")
        else:
            self.say(f"unknown command {name}; /help lists them")
        return True

    def run(self) -> None:
        models = self.pair.finetuned.description
        self.say(f"comparing base {models['base']} with fine-tuned {models.get('finetuned')}; /help for commands")
        while True:
            text = self.ask("\nquestion> ")
            if text is None:
                self.say()
                return
            if not text:
                continue
            if text.startswith("/"):
                if not self.command(text):
                    return
                continue
            self.exchange(text)
