"""Blind A/B rating of a comparison in the page: each question's two answers shown as A and B, the sides hidden
and drawn at random per question, the questions in shuffled order; the rater picks A, B or a tie.

The choices are saved, after each one, as the blind sheet `qwentune rating import` reads (rating.write_sheet,
the format `rating export` writes) with the scores filled in on its 1-5 scale: the preferred answer 5, the other
1, a tie 3 for both. The import's head-to-head (higher score wins, answers of a prompt paired in sheet order) then
gives back exactly the page's choices, and the running win rate shown here is computed by that same function
(rating.head_to_head) from the rows the sheet holds.

No gradio here: compare_tab lays out the components and calls these.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UserError
from ...evaluation.rating import head_to_head, write_sheet
from ..compare import SIDES

CHOICES = ("A", "B", "tie")
SCORES = {"preferred": 5, "other": 1, "tie": 3}  # on the sheet's 1-5 scale (rating.SCALE)
SIDE_NAMES = {"base": "base", "finetuned": "fine-tuned"}


def load_comparison(path: str | Path) -> dict[str, Any]:
    """The comparison results JSON `qwentune compare` (or the page's compare run) wrote.

    Raises UserError when the file is missing, not UTF-8 JSON, or is not a comparison (a "results" list whose
    rows have a question and both sides' answers)."""
    from ...data.readers import parse_json
    from ...fsutil import require_file

    path = require_file(path, "comparison results", "run the comparison first (it writes comparison_results.json).")
    report = parse_json(path)
    check_comparison(report, str(path))
    return report


def check_comparison(report: Any, where: str) -> None:
    """UserError naming `where` unless `report` is a comparison with at least one question answered by both sides."""
    fix = "give the comparison_results.json that qwentune compare wrote."
    results = report.get("results") if isinstance(report, dict) else None
    if not isinstance(results, list):
        raise UserError(f"{where}: not comparison results (no 'results' list); {fix}")
    if not results:
        raise UserError(f"{where}: the comparison holds no questions; run it with at least one question.")
    for number, row in enumerate(results, start=1):
        ok = isinstance(row, dict) and isinstance(row.get("question"), str) and all(
            isinstance(row.get(side), dict) and isinstance(row[side].get("answer"), str) for side in SIDES)
        if not ok:
            raise UserError(f"{where}: result {number} lacks its question or an answer of each side; {fix}")


@dataclass
class RatingItem:
    """One question to rate: its two answers, and which side is shown as A and which as B."""

    question: str
    answers: dict[str, str]  # side -> answer
    shown: tuple[str, str]  # (side shown as A, side shown as B)
    choice: str | None = None  # "A", "B" or "tie" once rated

    def answer(self, letter: str) -> str:
        return self.answers[self.shown["AB".index(letter)]]

    def scores(self) -> dict[str, int | str]:
        """side -> score on the sheet ("" while not rated)."""
        if self.choice is None:
            return {side: "" for side in SIDES}
        if self.choice == "tie":
            return {side: SCORES["tie"] for side in SIDES}
        preferred = self.shown["AB".index(self.choice)]
        return {side: SCORES["preferred" if side == preferred else "other"] for side in SIDES}


@dataclass
class RatingSession:
    """A blind rating of one comparison: the items in the order they are shown, the sheet codes of the sides,
    and the seed that drew both (so a session can be drawn again)."""

    items: list[RatingItem]
    codes: dict[str, str]  # side -> the model code of the sheet (M1, M2), drawn at random too
    models: dict[str, str]  # side -> what the key says the code stands for
    seed: int
    sheet: Path | None = None
    saved: int = field(default=0)  # ratings in the sheet as last written

    @classmethod
    def from_comparison(cls, report: dict[str, Any], seed: int, sheet: str | Path | None = None) -> RatingSession:
        """A session over every question of `report` (compare_batch's result, or its JSON): the order shuffled and
        the A/B sides drawn per question with random.Random(seed). Raises UserError for a report that is not a
        comparison (check_comparison)."""
        check_comparison(report, "rating")
        rng = random.Random(seed)
        order = list(range(len(report["results"])))
        rng.shuffle(order)
        items = []
        for index in order:
            row = report["results"][index]
            shown = tuple(rng.sample(SIDES, 2))
            items.append(RatingItem(row["question"], {side: row[side]["answer"] for side in SIDES}, shown))
        codes = dict(zip(SIDES, rng.sample(["M1", "M2"], 2)))
        names = report.get("models") or {}
        models = {side: f"{SIDE_NAMES[side]}: {names.get(side) or 'unnamed'}" for side in SIDES}
        return cls(items, codes, models, seed, Path(sheet) if sheet is not None else None)

    def current(self) -> int | None:
        """The position of the first item not rated yet, or None when all are."""
        return next((position for position, item in enumerate(self.items) if item.choice is None), None)

    def view(self, position: int | None) -> tuple[str, str, str]:
        """(question, answer A, answer B) at `position`; empty texts for None. Says nothing about the sides."""
        if position is None:
            return "", "", ""
        item = self.items[position]
        return item.question, item.answer("A"), item.answer("B")

    def choose(self, position: int, choice: str) -> bool:
        """Record `choice` (A, B or tie) for the item at `position`; False, changing nothing, when that item is
        already rated (a second click on the same item before the page showed the next one).
        Raises UserError for a choice other than A, B, tie, or a position outside the session."""
        if choice not in CHOICES:
            raise UserError(f"rating: the choice is '{choice}'; pick A, B or tie.")
        if not 0 <= position < len(self.items):
            raise UserError(f"rating: there is no question {position + 1} (the session has {len(self.items)}); "
                            f"start the rating again.")
        if self.items[position].choice is not None:
            return False
        self.items[position].choice = choice
        return True

    def sheet_rows(self) -> list[dict[str, Any]]:
        """The sheet's rows: per item in the order shown, answer A then answer B, with their scores."""
        rows = []
        for item in self.items:
            scores = item.scores()
            for side in item.shown:
                rows.append({"prompt": item.question, "answer": item.answers[side], "model": self.codes[side],
                             "score": scores[side]})
        return rows

    def key(self) -> dict[str, str]:
        """code -> model, the fine-tuned side first: the order the import compares them in."""
        return {self.codes[side]: self.models[side] for side in ("finetuned", "base")}

    def tally(self) -> dict[str, Any]:
        """Fine-tuned against base over the rated items: wins, losses, ties, win_rate (ties counting half; None
        before any rating), rated, total. Computed by rating.head_to_head from the sheet's rows, as the import
        computes it from the saved sheet."""
        rows = [(row["model"], row["prompt"], row["score"] if row["score"] != "" else None)
                for row in self.sheet_rows()]
        found = head_to_head(rows, [self.codes["finetuned"], self.codes["base"]])
        counts = found[0] if found else {"wins": 0, "losses": 0, "ties": 0, "win_rate": None}
        rated = sum(item.choice is not None for item in self.items)
        return {name: counts[name] for name in ("wins", "losses", "ties", "win_rate")} | {
            "rated": rated, "total": len(self.items)}

    def summary(self) -> str:
        """e.g. "fine-tuned 2 - base 1 - tie 0: 67% (3 rated of 3)"."""
        tally = self.tally()
        rate = "no ratings yet" if tally["win_rate"] is None else f"{tally['win_rate']:.0%}"
        return (f"fine-tuned {tally['wins']} - base {tally['losses']} - tie {tally['ties']}: {rate} "
                f"({tally['rated']} rated of {tally['total']})")

    def save(self) -> Path:
        """Write the sheet (all items, the unrated ones with an empty score) and its key beside it, each replaced
        whole; return the sheet's path. Raises UserError when the session has no sheet path or it cannot be
        written there."""
        if self.sheet is None:
            raise UserError("rating: this session has no sheet to save to; start the rating again.")
        write_sheet(self.sheet_rows(), self.sheet, self.key())
        self.saved = sum(item.choice is not None for item in self.items)
        return self.sheet
