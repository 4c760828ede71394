"""The demo dataset in data/demo/ is exactly what its generator writes, and its held-out split is truly held out."""

import importlib.util

from qwentune.data.convert import convert_records
from qwentune.data.readers import read_records
from qwentune.inference.prompts import read_questions
from tests.helpers import REPO

DEMO = REPO / "data" / "demo"


def generator():
    spec = importlib.util.spec_from_file_location("make_demo_data", DEMO / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_files_are_what_the_generator_writes(tmp_path):
    generator().write(tmp_path)
    for name in ("train.jsonl", "heldout.jsonl", "questions.json"):
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), f"rerun data/demo/make_demo_data.py ({name})"


def test_splits_are_disjoint_and_in_both_languages():
    train = convert_records(read_records(DEMO / "train.jsonl")).conversations
    heldout = convert_records(read_records(DEMO / "heldout.jsonl")).conversations
    prompts = lambda rows: {r["messages"][0]["content"] for r in rows}  # noqa: E731
    assert len(train) >= 250 and len(heldout) >= 30
    assert not prompts(train) & prompts(heldout)
    replies = [r["messages"][1]["content"] for r in heldout]
    assert any(r.startswith("答案：") for r in replies) and any(r.startswith("Answer: ") for r in replies)
    questions = read_questions(DEMO / "questions.json")
    assert {q.category for q in questions} == {"identity", "format-zh", "format-en", "arithmetic"}
    assert all(q.reference for q in questions) and {q.question for q in questions} <= prompts(heldout)
