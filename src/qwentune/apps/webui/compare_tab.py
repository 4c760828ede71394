"""The compare tab: base vs fine-tuned on a batch of questions (typed, or a questions file), the HTML report in
the page, then a blind A/B rating of the answers with a running win rate, saved as a sheet `qwentune rating
import` reads.

The run is `qwentune compare --questions-file`'s (apps.compare.compare_to_files: load_pair, compare_batch, the
report writer); the rating is rating_view's. The handlers below are plain functions (tested without a browser);
build() lays out the components and wires them.
"""

from __future__ import annotations

import functools
import html
import random
import time
from pathlib import Path
from typing import Any

from ...errors import UserError
from .common import WebuiSettings, page_path, shows_user_errors, t
from .models import row_config
from .rating_view import RatingSession, load_comparison

TITLE_KEY = "compare.title"
TEXT = {
    "compare.title": ("Compare", "对比"),
    "compare.intro": ("Ask the base model and the fine-tuned one (the model row above) the same questions with the "
                      "same settings, and read their answers side by side. Same as `qwentune compare "
                      "--questions-file`.",
                      "用相同的问题和相同的生成设置分别询问基座模型和微调后的模型（上方模型行），并排查看回答。"
                      "与 `qwentune compare --questions-file` 相同。"),
    "compare.questions": ("Questions, one per line", "问题，每行一个"),
    "compare.file": ("Questions file (JSON list, JSON Lines or .txt; path under the working directory)",
                     "问题文件（JSON 列表、JSON Lines 或 .txt；工作目录下的路径）"),
    "compare.upload": ("...or upload a questions file", "……或上传问题文件"),
    "compare.batch_size": ("Batch size (questions per generate call)", "批大小（每次生成的问题数）"),
    "compare.max_new_tokens": ("Max new tokens (0: the config's)", "最大生成 token 数（0：使用配置）"),
    "compare.system": ("System prompt (for questions that have none; empty: none)",
                       "系统提示词（用于没有自带系统提示词的问题；留空：无）"),
    "compare.output": ("Output folder (each run writes a new folder in it)", "输出目录（每次运行在其中新建一个子目录）"),
    "compare.run": ("Compare", "开始对比"),
    "compare.status": ("Status", "状态"),
    "rate.heading": ("### Blind A/B rating\nThe two answers to each question are shown as A and B, which side is "
                     "which drawn at random; pick the better one. Each choice is saved as a sheet that "
                     "`qwentune rating import --sheet FILE` reads.",
                     "### 盲评 A/B\n每个问题的两个回答以 A 和 B 显示，哪一边是哪个模型随机决定；请选出更好的一个。"
                     "每次选择都会保存为评分表，可用 `qwentune rating import --sheet 文件` 读取。"),
    "rate.comparison": ("Comparison results to rate (filled in by the run above)",
                        "要评分的对比结果（由上方的运行自动填入）"),
    "rate.start": ("Start rating", "开始评分"),
    "rate.question": ("Question", "问题"),
    "rate.answer_a": ("Answer A", "回答 A"),
    "rate.answer_b": ("Answer B", "回答 B"),
    "rate.a": ("A is better", "A 更好"),
    "rate.b": ("B is better", "B 更好"),
    "rate.tie": ("Tie", "平局"),
    "rate.winrate": ("Fine-tuned win rate (ties count half)", "微调模型胜率（平局算半场）"),
    "rate.file": ("Ratings saved to", "评分保存于"),
}

DEFAULT_OUTPUT = "results/comparison"
RESULTS_NAME = "comparison_results.json"


def report_frame(page: str) -> str:
    """HTML for the page's report panel: a whole HTML document (the report's self-contained page) inside an
    iframe's srcdoc, escaped, so its own <head> and styles stay its own; a fragment as it is. The iframe is
    sandboxed (the report has no scripts) and needs nothing from the network."""
    if not page.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
        return page
    return (f'<iframe class="qt-report" title="comparison report" sandbox="" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width:100%;height:75vh;border:1px solid #d1d9e0;border-radius:8px"></iframe>')


def gather_questions(typed: str, file_text: str, upload: str | None, settings: WebuiSettings) -> list:
    """The questions of the file path typed (page_path), of the uploaded file, then those typed one per line;
    each file read by inference.prompts.read_questions, the CLI's reader. UserError when there are none."""
    from ...inference.prompts import read_questions, typed_questions

    questions = []
    if (file_text or "").strip():
        questions += read_questions(page_path(file_text, settings, "questions file"))
    if upload:  # a file the browser sent: it lies in Gradio's upload folder, not a path typed into the page
        questions += read_questions(upload)
    questions += typed_questions(typed or "", "typed questions")
    if not questions:
        raise UserError("compare: no questions; type one per line, or give a questions file (a JSON list of "
                        "strings or objects with 'question').")
    return questions


def _whole_number(value: Any, what: str, minimum: int = 1) -> int:
    if value is None or value == "" or float(value) != int(float(value)) or int(float(value)) < minimum:
        raise UserError(f"compare: {what} is {value if value not in (None, '') else 'empty'}; "
                        f"give a whole number of at least {minimum}.")
    return int(float(value))


def run_comparison(settings: WebuiSettings, model: str, adapter: str, config: str, typed: str, file_text: str,
                   upload: str | None, batch_size: Any, max_new_tokens: Any, system: str, output: str,
                   log=print) -> dict[str, Any]:
    """The compare button: the questions, the model row's models and config, compare_to_files into a new
    <time> folder of `output` (under the working directory). Returns {"report": the comparison, "files": [JSON,
    HTML, Markdown], "status": one line}. Raises UserError for a bad path, setting or model, before any model
    loads where it can."""
    import dataclasses

    from ...config import change_generation
    from ...fsutil import check_directory_path
    from ..compare import compare_to_files

    if not (adapter or "").strip():
        raise UserError("compare: the model row has no fine-tuned adapter; give the training output folder "
                        "(e.g. results/checkpoints) to compare with the base model.")
    cfg = row_config(settings, config, model, adapter)  # the row as every tab reads it: an empty model is the config's
    base, finetuned = cfg.model.model_name_or_path, cfg.eval.adapter_path
    batch = _whole_number(batch_size, "the batch size")
    if max_new_tokens not in (None, "", 0):  # 0, or a field left empty: the config's setting
        tokens = _whole_number(max_new_tokens, "max new tokens")
        cfg = dataclasses.replace(cfg, generation=change_generation(cfg.generation, {"max_new_tokens": tokens},
                                                                    "compare: max new tokens"))
    questions = gather_questions(typed, file_text, upload, settings)
    root = page_path((output or "").strip() or DEFAULT_OUTPUT, settings, "output folder")
    check_directory_path(root, "output folder")
    run_dir = root / time.strftime("%Y%m%d-%H%M%S")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        report, files = compare_to_files(base, finetuned, questions, run_dir / RESULTS_NAME, cfg, batch,
                                         (system or "").strip() or None, option="output folder", log=log)
    except BaseException:
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that wrote nothing leaves no empty folder behind
        raise
    return {"report": report, "files": files, "status": describe_run(report, files)}


def describe_run(report: dict[str, Any], files: list[Path]) -> str:
    """One line: questions, the headline scores base -> fine-tuned (when references exist), the time, the files."""
    from ..report import headline_scores

    overall = report["summary"]["overall"]
    scores = "; ".join(f"{m.label} base {overall['base'][m.name]} -> fine-tuned {overall['finetuned'][m.name]}"
                       for m in headline_scores(report["summary"]) if overall["base"][m.name] is not None)
    seconds = sum(side["seconds"] for side in report["timing"].values())
    return (f"{overall['questions']} questions answered by both sides in {seconds:.1f} s"
            + (f"; {scores}" if scores else "") + "; results: " + ", ".join(str(p) for p in files))


def start_rating(settings: WebuiSettings, comparison: str, seed: int | None = None) -> RatingSession:
    """A new blind rating session of the comparison results JSON `comparison` (page_path); its sheet goes beside
    it as ratings-<time>-seed<seed>.csv (the seed that drew the order and the sides, so the file records it),
    written at the first choice. seed None: a fresh random one."""
    if not (comparison or "").strip():
        raise UserError("rating: no comparison results to rate; run the comparison above first, or give the path "
                        "of a comparison_results.json.")
    path = page_path(comparison, settings, "comparison results")
    report = load_comparison(path)
    seed = random.SystemRandom().randrange(2 ** 31) if seed is None else seed
    sheet = path.parent / f"ratings-{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}.csv"
    return RatingSession.from_comparison(report, seed, sheet)


def rating_outputs(session: RatingSession | None) -> tuple:
    """(session, position shown or -1 for none, question, answer A, answer B, win rate line, sheet path) for the
    page (-1, not None: a number field the browser holds sends an empty value back as 0)."""
    if session is None:
        return None, -1, "", "", "", "", ""
    position = session.current()
    question, answer_a, answer_b = session.view(position)
    if position is None:
        question = f"All {len(session.items)} questions are rated."
    saved = str(session.sheet) if session.saved else ""
    return session, -1 if position is None else position, question, answer_a, answer_b, session.summary(), saved


def rate(session: RatingSession | None, position: Any, choice: str) -> tuple:
    """A, B or tie for the question shown at `position`: recorded, the sheet saved, the next question shown.
    A second click on a question already rated changes nothing."""
    if session is None:
        raise UserError("rating: no rating in progress; press Start rating first.")
    if position is None or position == "" or int(position) < 0:
        return rating_outputs(session)  # everything is rated already
    if session.choose(int(position), choice):
        session.save()
    return rating_outputs(session)


def build(settings: WebuiSettings, shared) -> None:
    """The tab's components (elem_ids: compare-*, rate-*) and their events."""
    import gradio as gr

    gr.Markdown(t("compare.intro"))
    with gr.Row():
        questions = gr.Textbox(label=t("compare.questions"), lines=6, elem_id="compare-questions", scale=2)
        with gr.Column(scale=1):
            file_text = gr.Textbox(label=t("compare.file"), elem_id="compare-file")
            upload = gr.File(label=t("compare.upload"), file_types=[".json", ".jsonl", ".txt"], type="filepath",
                             elem_id="compare-upload")
    with gr.Row():
        batch_size = gr.Number(32, label=t("compare.batch_size"), precision=0, minimum=1, elem_id="compare-batch-size")
        max_new_tokens = gr.Number(0, label=t("compare.max_new_tokens"), precision=0, minimum=0,
                                   elem_id="compare-max-new-tokens")
        system = gr.Textbox(label=t("compare.system"), elem_id="compare-system")
        output = gr.Textbox(DEFAULT_OUTPUT, label=t("compare.output"), elem_id="compare-output")
    run = gr.Button(t("compare.run"), variant="primary", elem_id="compare-run")
    status = gr.Textbox(label=t("compare.status"), interactive=False, elem_id="compare-status")
    report = gr.HTML(elem_id="compare-report")

    gr.Markdown(t("rate.heading"))
    with gr.Row():
        comparison = gr.Textbox(label=t("rate.comparison"), elem_id="rate-comparison", scale=3)
        start = gr.Button(t("rate.start"), elem_id="rate-start", scale=1)
    session = gr.State(None)
    position = gr.Number(-1, visible=False, elem_id="rate-position")  # the question the rater sees; -1: none
    question = gr.Textbox(label=t("rate.question"), interactive=False, elem_id="rate-question")
    with gr.Row():
        answer_a = gr.Textbox(label=t("rate.answer_a"), interactive=False, lines=6, elem_id="rate-answer-a")
        answer_b = gr.Textbox(label=t("rate.answer_b"), interactive=False, lines=6, elem_id="rate-answer-b")
    with gr.Row():
        button_a = gr.Button(t("rate.a"), elem_id="rate-a")
        button_tie = gr.Button(t("rate.tie"), elem_id="rate-tie")
        button_b = gr.Button(t("rate.b"), elem_id="rate-b")
    with gr.Row():
        winrate = gr.Textbox(label=t("rate.winrate"), interactive=False, elem_id="rate-winrate")
        sheet = gr.Textbox(label=t("rate.file"), interactive=False, elem_id="rate-file")

    @shows_user_errors
    def on_run(model, adapter, config, typed, path, uploaded, batch, tokens, system_prompt, folder):
        yield "Loading the models and answering the questions...", gr.update(), gr.update()
        done = run_comparison(settings, model, adapter, config, typed, path, uploaded, batch, tokens, system_prompt,
                              folder)
        page = Path(done["files"][1]).read_text(encoding="utf-8")  # the .html the run wrote, as it was saved
        shown = done["files"][0]
        try:  # relative to the working directory, as a path typed into the page is read
            shown = shown.relative_to(settings.workdir.resolve())
        except ValueError:
            pass
        yield done["status"], report_frame(page), str(shown)

    run.click(on_run, [shared.model, shared.adapter, shared.config, questions, file_text, upload, batch_size,
                       max_new_tokens, system, output], [status, report, comparison], concurrency_id="compare-run",
              concurrency_limit=1)  # two runs at once would hold two copies of the models

    rating_components = [session, position, question, answer_a, answer_b, winrate, sheet]
    start.click(shows_user_errors(lambda path: rating_outputs(start_rating(settings, path))), [comparison],
                rating_components)
    for button, choice in ((button_a, "A"), (button_b, "B"), (button_tie, "tie")):
        # One rating at a time: the session is one object, and a double click must see the first click's result.
        button.click(shows_user_errors(functools.partial(rate, choice=choice)),
                     [session, position], rating_components, concurrency_id="rating", concurrency_limit=1)
