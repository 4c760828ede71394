"""Blind A/B rating in the page: the sides hidden and shuffled, the win-rate arithmetic, and the saved sheet read
back by the real `qwentune rating import` with the same numbers the page showed."""

import csv
import io
import json
import re

import pytest

from qwentune.apps.webui.rating_view import RatingSession, load_comparison
from qwentune.cli import main
from qwentune.errors import UserError
from qwentune.evaluation.rating import import_scores


def comparison(questions):
    """A comparison in the format compare_batch returns (only the fields a rating reads, plus the model names):
    each side's answer names its side and question, so a test can tell which side is shown where."""
    return {"models": {"base": "tiny-base", "finetuned": "results/checkpoints"},
            "results": [{"id": i, "question": q, "base": {"answer": f"base answer {i}: {q}"},
                         "finetuned": {"answer": f"tuned answer {i}: {q}"}} for i, q in enumerate(questions)]}


QUESTIONS = [f"问题 {i}？" for i in range(20)]


def side_of(session, position, letter):
    return "finetuned" if session.items[position].answer(letter).startswith("tuned") else "base"


def test_order_is_shuffled_and_sides_are_drawn_per_question_from_the_seed():
    session = RatingSession.from_comparison(comparison(QUESTIONS), seed=7)
    shown_order = [item.question for item in session.items]
    assert sorted(shown_order) == sorted(QUESTIONS) and shown_order != QUESTIONS
    a_sides = [side_of(session, p, "A") for p in range(len(QUESTIONS))]
    assert 4 <= a_sides.count("finetuned") <= 16  # both sides appear as A, neither always
    for position in range(len(QUESTIONS)):  # A and B are the two different answers to the question shown
        question, answer_a, answer_b = session.view(position)
        assert {side_of(session, position, "A"), side_of(session, position, "B")} == {"base", "finetuned"}
        assert question in answer_a and question in answer_b
    # The seed draws it all again, another seed draws it differently.
    again = RatingSession.from_comparison(comparison(QUESTIONS), seed=7)
    assert [(i.question, i.shown) for i in again.items] == [(i.question, i.shown) for i in session.items]
    other = RatingSession.from_comparison(comparison(QUESTIONS), seed=8)
    assert [(i.question, i.shown) for i in other.items] != [(i.question, i.shown) for i in session.items]


def choose_side(session, position, side):
    """Pick the answer of `side` (or "tie") at `position`, whichever letter it is shown as."""
    if side == "tie":
        return session.choose(position, "tie")
    return session.choose(position, "A" if side_of(session, position, "A") == side else "B")


def test_win_rate_counts_ties_as_half_and_only_rated_questions():
    session = RatingSession.from_comparison(comparison(QUESTIONS[:5]), seed=1)
    assert session.summary() == "fine-tuned 0 - base 0 - tie 0: no ratings yet (0 rated of 5)"
    for side in ("finetuned", "finetuned", "base", "tie"):
        assert choose_side(session, session.current(), side)
    tally = session.tally()
    assert (tally["wins"], tally["losses"], tally["ties"], tally["rated"], tally["total"]) == (2, 1, 1, 4, 5)
    assert tally["win_rate"] == pytest.approx(2.5 / 4)
    assert session.summary() == "fine-tuned 2 - base 1 - tie 1: 62% (4 rated of 5)"
    assert session.current() == 4
    assert not session.choose(0, "A")  # a second click on a rated question changes nothing
    assert session.tally() == tally
    with pytest.raises(UserError, match="pick A, B or tie"):
        session.choose(4, "C")
    with pytest.raises(UserError, match="no question 9"):
        session.choose(8, "A")


def imported_head_to_head(capsys, sheet):
    """Run the real `qwentune rating import` on the sheet; (wins, losses, ties, percent) of its head-to-head line."""
    capsys.readouterr()
    assert main(["rating", "import", "--sheet", str(sheet)]) == 0
    out = capsys.readouterr().out
    found = re.findall(r"^fine-tuned: results/checkpoints vs base: tiny-base: (\d+) wins?, (\d+) loss(?:es)?, "
                       r"(\d+) ties?: win rate (\d+%) \(ties count half\)$", out, flags=re.M)
    assert len(found) == 1, out
    return found[0]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_saved_sheet_gives_the_same_win_rate_through_rating_import(tmp_path, capsys, suffix):
    session = RatingSession.from_comparison(comparison(QUESTIONS[:7]), seed=3, sheet=tmp_path / f"ratings{suffix}")
    for side in ("finetuned", "base", "finetuned", "tie", "finetuned", "base"):  # the 7th left unrated
        choose_side(session, session.current(), side)
        session.save()
        tally = session.tally()
        shown = re.match(r"fine-tuned (\d+) - base (\d+) - tie (\d+): (\d+%)", session.summary()).groups()
        # After every choice the file on disk says what the page says.
        assert imported_head_to_head(capsys, session.sheet) == shown
    assert shown == ("3", "2", "1", "58%") and tally["rated"] == 6
    # The sheet is blind: the rows carry codes, only the key names the models.
    text = session.sheet.read_text(encoding="utf-8-sig")
    assert "tiny-base" not in text and "checkpoints" not in text and "fine-tuned" not in text
    key = json.loads((tmp_path / f"ratings{suffix}.key.json").read_text(encoding="utf-8"))
    assert sorted(key) == ["M1", "M2"] and list(key.values()) == ["fine-tuned: results/checkpoints", "base: tiny-base"]
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert list(rows[0]) == ["item", "prompt", "answer", "model", "score", "comment"]  # rating export's columns
        assert [r["item"] for r in rows] == [str(i) for i in range(1, 15)] and rows[-1]["score"] == ""
    # The means the import reports follow from the same choices: preferred 5, other 1, tie 3.
    scores = import_scores(session.sheet)
    assert scores["fine-tuned: results/checkpoints"]["mean"] == round((5 * 3 + 1 * 2 + 3) / 6, 3)
    assert scores["base: tiny-base"]["mean"] == round((1 * 3 + 5 * 2 + 3) / 6, 3)


def test_a_question_asked_twice_keeps_each_choice_with_its_own_pair(tmp_path, capsys):
    """The import pairs a prompt's answers in sheet order, so two identical questions with opposite choices are one
    win and one loss, not two ties."""
    session = RatingSession.from_comparison(comparison(["Same?", "Same?"]), seed=5, sheet=tmp_path / "r.csv")
    choose_side(session, 0, "finetuned")
    choose_side(session, 1, "base")
    session.save()
    assert session.summary() == "fine-tuned 1 - base 1 - tie 0: 50% (2 rated of 2)"
    assert imported_head_to_head(capsys, session.sheet) == ("1", "1", "0", "50%")


def test_save_refuses_an_unwritable_place_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("mine", encoding="utf-8")
    session = RatingSession.from_comparison(comparison(QUESTIONS[:2]), seed=1, sheet=tmp_path / "file" / "r.csv")
    session.choose(0, "A")
    with pytest.raises(UserError, match="file"):
        session.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_load_comparison_names_a_file_that_is_not_one(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(comparison(["q"]), ensure_ascii=False), encoding="utf-8")
    assert load_comparison(path)["results"][0]["question"] == "q"
    for content, message in [('{"metrics": {}}', "not comparison results"), ('{"results": []}', "holds no questions"),
                             ('{"results": [{"question": "q", "base": {"answer": "a"}}]}', "result 1 lacks"),
                             ('{"results": [', "c.json:1: not valid JSON")]:
        path.write_text(content, encoding="utf-8")
        with pytest.raises(UserError, match=re.escape(message)):
            load_comparison(path)
    with pytest.raises(UserError, match="comparison results file not found"):
        load_comparison(tmp_path / "missing.json")
