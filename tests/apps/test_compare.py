"""Base vs fine-tuned comparison: the seed's two commands, the report, one base copy, bad input."""

import dataclasses
import io
import json
import subprocess
import sys

import pytest
import torch

from qwentune.apps.compare import load_pair
from qwentune.apps.interactive import Session, side_by_side
from qwentune.apps.report import diff_html
from qwentune.cli import main
from qwentune.config import GenerationConfig
from qwentune.errors import UserError
from qwentune.inference.generate import generate_batch
from qwentune.inference.prompts import read_questions
from qwentune.models.load import load_for_inference
from tests.helpers import QA, REPO, silent

SETTINGS = GenerationConfig(max_new_tokens=16, do_sample=False, repetition_penalty=1.0)


def questions_file(tmp_path):
    items = [{"question": q, "reference": a, "category": "zh" if "？" in q else "en"} for q, a in QA]
    items.append("A question without a reference")
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def test_one_base_copy_answers_exactly_like_the_base_model_alone(trained, tiny_model_dir):
    pair = load_pair(str(tiny_model_dir), str(trained / "out"), log=silent)
    assert pair.shared
    base_alone = load_for_inference(str(tiny_model_dir), None, log=silent)
    conversations = [[{"role": "user", "content": q}] for q, _ in QA]
    model, adapter = pair.model_and_switch("base")
    assert [a.text for a in generate_batch(model, conversations, SETTINGS, adapter)] == [
        a.text for a in generate_batch(base_alone, conversations, SETTINGS)]
    ids = torch.tensor([[1, 5, 9, 20]])
    with torch.no_grad(), pair.base.adapter(False):
        assert torch.equal(pair.base.model(ids).logits, base_alone.model(ids).logits)


def test_seed_batch_command_writes_json_html_and_markdown(trained, tiny_model_dir, tmp_path):
    output = tmp_path / "comparison_results.json"
    run = subprocess.run(
        [sys.executable, "scripts/model_comparison.py", "--base-model", str(tiny_model_dir), "--finetuned-model",
         str(trained / "out"), "--questions-file", str(questions_file(tmp_path)), "--output", str(output),
         "--max-new-tokens", "16", "--repetition_penalty", "1.0"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["models"]["one_base_copy"] and report["generation"]["max_new_tokens"] == 16
    assert len(report["results"]) == 5
    first = report["results"][0]
    assert first["finetuned"]["answer"] == QA[0][1] and first["finetuned"]["stopped"]
    assert first["finetuned"]["scores"]["rouge_l"] == 100.0 and report["results"][-1]["base"]["scores"] is None
    assert {"new_tokens", "seconds", "tokens_per_second"} <= set(first["base"])
    overall = report["summary"]["overall"]
    assert overall["finetuned"]["rouge_l"] > overall["base"]["rouge_l"]
    assert set(report["summary"]["by_category"]) == {"zh", "en", "general"}
    page = output.with_suffix(".html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "http" not in page.split("<body>")[1][:2000]  # self-contained
    assert QA[0][1] in page and 'class="add"' in page
    assert output.with_suffix(".md").read_text(encoding="utf-8").startswith("# Base vs fine-tuned")


def test_diff_highlights_by_character_in_chinese_and_by_word_in_english():
    left, right = diff_html("法国的首都是巴黎。", "法国的首都是里昂。")
    assert '<mark class="del">巴黎</mark>' in left and '<mark class="add">里昂</mark>' in right
    left, right = diff_html("the cat sat", "the dog sat")
    assert left == 'the <mark class="del">cat</mark> sat' and right == 'the <mark class="add">dog</mark> sat'
    assert "&lt;b&gt;" in diff_html("<b>", "x")[0]  # answers are escaped, never HTML


def test_interactive_session_through_stdin(trained, tiny_model_dir, tmp_path):
    pair = load_pair(str(tiny_model_dir), str(trained / "out"), log=silent)
    save = tmp_path / "session.jsonl"
    script = "\n".join([QA[0][0], "/params max_new_tokens=12 repetition_penalty=1.0", "/params nonsense=1",
                        "/system be brief", "/save " + str(save), "/rate", QA[1][0], "x", "a", "/rate",
                        "/help", "/bogus", "/exit"]) + "\n"
    out = io.StringIO()
    Session(pair, SETTINGS, None, 42, stdin=io.StringIO(script), stdout=out, save_path=str(save)).run()
    text = out.getvalue()
    assert f"[fine-tuned] {QA[0][1]}" in text and "[base] " in text
    assert "max_new_tokens=12" in text and "unknown generation setting 'nonsense'" in text
    assert "[A] " in text and "[B] " in text and "type a, b or t" in text
    assert "win rate" in text and "blind A/B rating off" in text and "unknown command /bogus" in text
    saved = [json.loads(line) for line in save.read_text(encoding="utf-8").splitlines()]
    assert saved[0]["question"] == QA[0][0] and saved[0]["finetuned"] == QA[0][1]
    rating = saved[1]["rating"]
    assert rating["choice"] == "a" and rating["winner"] == rating["shown_as"]["A"]
    assert saved[1]["system"] == "be brief" and saved[1]["settings"]["max_new_tokens"] == 12


def test_impossible_params_are_refused_in_one_line_and_the_session_and_votes_go_on(tiny_model_dir, tmp_path):
    """Case 6 of issue 17: /params runs the config's generation checks; each refusal is one line, the old
    settings stay, and the next question is answered and rated with the votes so far kept."""
    pair = load_pair(str(tiny_model_dir), str(tiny_model_dir), log=silent)
    save = tmp_path / "session.jsonl"
    refused = ["do_sample=true temperature=0", "max_new_tokens=0", "max_new_tokens=-5", "repetition_penalty=0",
               "max_new_tokens=8 repetition_penalty=0", "bogus=1", "temperature=warm", "temperature"]
    script = ["/rate", QA[0][0], "a", *[f"/params {p}" for p in refused], QA[1][0], "b", "/exit"]
    out = io.StringIO()
    stdin = io.StringIO("\n".join(script) + "\n")
    Session(pair, SETTINGS, None, 42, stdin=stdin, stdout=out, save_path=str(save)).run()
    lines = out.getvalue().splitlines()
    refusals = [line for line in lines if "/params: " in line]
    assert len(refusals) == len(refused) and all(line.endswith("The settings are unchanged.") for line in refusals)
    for part in ("generation.temperature must be positive when do_sample is true", "max_new_tokens must be at least 1",
                 "repetition_penalty must be positive", "unknown generation setting 'bogus'",
                 "generation.temperature must be a number, got 'warm'", "cannot read 'temperature'"):
        assert any(part in line for line in refusals), part
    assert sum("max_new_tokens=16, do_sample=False" in line for line in lines) == len(refused)
    assert any(line.endswith("over 2 (ties count half)") for line in lines)  # the second vote joined the first
    saved = [json.loads(line) for line in save.read_text(encoding="utf-8").splitlines()]
    assert [s["question"] for s in saved] == [QA[0][0], QA[1][0]] and all("rating" in s for s in saved)
    assert saved[1]["settings"] == dataclasses.asdict(SETTINGS)


def test_side_by_side_counts_chinese_as_two_columns():
    table = side_by_side("base", "你好世界", "fine-tuned", "hello", 47)
    lines = table.splitlines()
    assert lines[2] == "你好世界" + " " * 14 + " | hello"


@pytest.mark.parametrize("content, message", [
    ('[{"question": "a"},\n {"question": }]', "questions.json:2: not valid JSON"),
    ('[{"question": "a"}, {"question": " "}]', "item 2 needs a non-empty 'question'"),
    ('[{"question": "a", "prompt": "b"}]', "item 1 has both 'question' and 'prompt'"),
    ('[{"question": "a", "sytem": "b"}]', "unknown field(s) sytem; did you mean 'system'?"),
    ('[{"question": "a", "refrence": "b"}]', "unknown field(s) refrence"),
    ('[]', "non-empty JSON list"),
])
def test_bad_questions_files(tmp_path, content, message):
    path = tmp_path / "questions.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_questions(path)


def test_questions_file_in_another_encoding_names_the_file_and_line(tmp_path):
    path = tmp_path / "questions.json"
    path.write_bytes('[{"question": "Say hi"},\n {"question": "你好"}]'.encode("gbk"))
    with pytest.raises(UserError) as caught:
        read_questions(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (line 2); save it as UTF-8."
    path.write_bytes('[{"question": "Say hi"},\n {"question": "你好"}]'.encode("utf-8-sig"))  # a BOM is fine
    assert [q.question for q in read_questions(path)] == ["Say hi", "你好"]


def test_bad_command_lines(trained, tiny_model_dir, tmp_path, capsys):
    common = ["compare", "--base-model", str(tiny_model_dir), "--finetuned-model", str(trained / "out")]
    cases = [
        (common + ["--questions-file", str(questions_file(tmp_path)), "--output", str(tmp_path / "no" / "r.json")],
         "cannot write the results there"),
        (common, "give --questions-file FILE (batch) or --interactive"),
        (common + ["--questions-file", str(tmp_path / "missing.json")], "questions file not found"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, last
    assert not (tmp_path / "no").exists()


def test_a_line_that_is_not_utf8_is_one_line_and_the_comparison_goes_on(tiny_model_dir, tmp_path):
    pair = load_pair(str(tiny_model_dir), str(tiny_model_dir), log=silent)
    typed = "你好".encode("gbk") + b"\n" + QA[0][0].encode("utf-8") + b"\n/exit\n"
    stdin = io.TextIOWrapper(io.BytesIO(typed), encoding="utf-8")  # a GBK terminal's bytes, read as UTF-8
    out = io.StringIO()
    Session(pair, SETTINGS, None, 42, stdin=stdin, stdout=out, save_path=str(tmp_path / "s.jsonl")).run()
    text = out.getvalue()
    assert "(that line is not UTF-8 text; set the terminal to UTF-8)" in text
    assert text.count("question> ") == 3  # asked again after the refused line, answered, then /exit
