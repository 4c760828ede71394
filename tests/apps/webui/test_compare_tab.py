"""The compare tab: the run on the tiny model and a trained adapter (the same functions as `qwentune compare`),
its report in the page, the rating panel's handlers on the results it wrote, and the tab inside gr.Blocks."""

import html
import json
import re

import pytest

from qwentune.apps.webui import compare_tab
from qwentune.apps.webui.common import WebuiSettings
from qwentune.cli import main
from qwentune.errors import UserError
from tests.helpers import QA, silent

TYPED = "\n".join([QA[1][0], "", QA[0][0], "  A question without a reference  "])


def settings_for(tmp_path, *outside):
    return WebuiSettings(model_name_or_path="unused", workdir=tmp_path, extra_roots=tuple(outside))


def test_compare_run_writes_the_report_and_the_rating_round_trips(tmp_path, tiny_model_dir, trained, capsys):
    settings = settings_for(tmp_path, tiny_model_dir, trained)
    (tmp_path / "cfg.yaml").write_text("generation:\n  max_new_tokens: 12\n  repetition_penalty: 1.0\n",
                                       encoding="utf-8")
    done = compare_tab.run_comparison(settings, str(tiny_model_dir), str(trained / "out"), "cfg.yaml", TYPED, "", None,
                                      2, 0, "", "", log=silent)
    report, files = done["report"], done["files"]
    assert [r["question"] for r in report["results"]] == [QA[1][0], QA[0][0], "A question without a reference"]
    assert report["generation"]["max_new_tokens"] == 12 and report["generation"]["batch_size"] == 2
    assert report["results"][0]["finetuned"]["answer"] == QA[1][1]  # the adapter memorized its answer
    run_dir = files[0].parent
    assert run_dir.parent == tmp_path / "results" / "comparison" and [p.name for p in files] == [
        "comparison_results.json", "comparison_results.html", "comparison_results.md"]
    assert json.loads(files[0].read_text(encoding="utf-8")) == report
    assert done["status"].startswith("3 questions answered by both sides") and str(files[1]) in done["status"]
    # The report in the page: the whole document in an iframe's srcdoc, escaped, needing nothing from outside.
    page = files[1].read_text(encoding="utf-8")
    frame = compare_tab.report_frame(page)
    assert frame.startswith("<iframe") and 'sandbox=""' in frame and "<h1>" not in frame
    srcdoc = re.search(r'srcdoc="([^"]*)"', frame).group(1)
    assert html.unescape(srcdoc) == page and "http" not in page.split("<body>")[1]
    assert compare_tab.report_frame("<p>x</p>") == "<p>x</p>"

    # Rating the results the run wrote, as the page's buttons do it.
    session, position, question, answer_a, answer_b, winrate, sheet = compare_tab.rating_outputs(
        compare_tab.start_rating(settings, str(files[0].relative_to(tmp_path)), seed=11))
    assert winrate == "fine-tuned 0 - base 0 - tie 0: no ratings yet (0 rated of 3)" and sheet == ""
    by_question = {r["question"]: r for r in report["results"]}
    for choice in ("A", "tie", "B"):
        row = by_question[question]
        assert {answer_a, answer_b} == {row["base"]["answer"], row["finetuned"]["answer"]}
        session, position, question, answer_a, answer_b, winrate, sheet = compare_tab.rate(session, position, choice)
    assert question == "All 3 questions are rated." and position == -1
    assert compare_tab.rate(session, -1, "A")[5] == winrate  # a click after the end changes nothing
    assert re.fullmatch(r"ratings-\d{8}-\d{6}-seed11\.csv", sheet.rsplit("/", 1)[-1]) and sheet.startswith(str(run_dir))
    wins, losses, ties, percent = re.fullmatch(r"fine-tuned (\d) - base (\d) - tie (\d): (\d+%) \(3 rated of 3\)",
                                               winrate).groups()
    assert (int(wins) + int(losses), ties) == (2, "1")
    capsys.readouterr()
    assert main(["rating", "import", "--sheet", sheet]) == 0
    assert f": {wins} win{'s' * (wins != '1')}, {losses} loss{'es' * (losses != '1')}, 1 tie: win rate {percent} " \
           f"(ties count half)" in capsys.readouterr().out


def test_compare_run_refuses_bad_input_before_loading_a_model(tmp_path, tiny_model_dir):
    settings = settings_for(tmp_path, tiny_model_dir)
    model = str(tiny_model_dir)

    def run(**changes):
        args = {"model": model, "adapter": model, "config": "", "typed": "Hi?", "file_text": "", "upload": None,
                "batch_size": 4, "max_new_tokens": None, "system": "", "output": ""} | changes
        with pytest.raises(UserError) as caught:
            compare_tab.run_comparison(settings, log=silent, **args)
        return str(caught.value)

    assert run(adapter=" ").startswith("compare: the model row has no fine-tuned adapter")
    assert run(typed="\n \n").startswith("compare: no questions; type one per line")
    assert "is outside the folders this page may use" in run(file_text="/etc/passwd")
    assert run(file_text="missing.json").endswith("questions file not found; check the path "
                                                  "(formats: docs/model_comparison_guide.md).")
    assert run(batch_size=0) == "compare: the batch size is 0; give a whole number of at least 1."
    assert run(max_new_tokens=2.5) == "compare: max new tokens is 2.5; give a whole number of at least 1."
    (tmp_path / "results").write_text("a file", encoding="utf-8")
    assert run(output="results/comparison").endswith("results/comparison cannot be created; choose another output "
                                                     "folder.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # nothing written anywhere
    with pytest.raises(UserError, match="no comparison results to rate"):
        compare_tab.start_rating(settings, " ")
    with pytest.raises(UserError, match="no rating in progress"):
        compare_tab.rate(None, 0, "A")


def test_questions_come_from_a_file_an_upload_and_the_typed_lines(tmp_path):
    settings = settings_for(tmp_path)
    (tmp_path / "q.json").write_text(json.dumps([{"question": "From the file?", "reference": "Yes."}]),
                                     encoding="utf-8")
    uploaded = tmp_path / "upload" / "questions.txt"
    uploaded.parent.mkdir()
    uploaded.write_text("Uploaded one?\n\nUploaded two?\n", encoding="utf-8")
    questions = compare_tab.gather_questions("Typed?", "q.json", str(uploaded), settings)
    assert [(q.question, q.reference) for q in questions] == [
        ("From the file?", "Yes."), ("Uploaded one?", None), ("Uploaded two?", None), ("Typed?", None)]


def test_the_tab_builds_inside_blocks_with_its_element_ids(tmp_path):
    import gradio as gr

    from qwentune.apps.webui.app import SharedInputs

    with gr.Blocks() as page:
        shared = SharedInputs(gr.Textbox(), gr.Textbox(), gr.Textbox())
        compare_tab.build(settings_for(tmp_path), shared)
    ids = {block.elem_id for block in page.blocks.values()}
    assert {"compare-questions", "compare-file", "compare-run", "compare-status", "compare-report", "rate-start",
            "rate-question", "rate-answer-a", "rate-answer-b", "rate-a", "rate-b", "rate-tie", "rate-winrate",
            "rate-file"} <= ids
    assert all(key.split(".")[0] in ("compare", "rate") for key in compare_tab.TEXT)
