"""`qwentune webui` in a real browser: the command started as a user starts it (its own process, on a free port
of 127.0.0.1, in a fresh working directory holding the tiny Qwen2 and a small QA file), driven through Debian's
headless Chromium by Playwright, by the page's elem_ids.

The walk: data preview with the loss mask -> a 4-step training whose progress and loss curve appear -> a chat
answer from both models -> compare 3 questions -> rate 3 -> the win rate, whose sheet `qwentune rating import`
reads. Then two browser sessions at once (one training, one chatting), and the page in Chinese and English.

Screenshots of every step go to the test's tmp_path, and also to $QWENTUNE_SCREENSHOTS when it is set: that is
how README's docs/images/webui.png is made (README, Test).

Skips without Chromium or Playwright (CI installs both: .ci/run); Playwright's own browser download is not
needed, the system browser is launched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import interrupt_and_wait, qa_file

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Generous: two cores shared by other jobs; a first model load or a training process's imports take a while.
SLOW_MS = 180_000  # waits for work: a preview, a training, a reply, a comparison
FIND_MS = 30_000  # waits for a component to be there and clickable (a missing elem_id fails after this)
QUESTIONS = ["What is the capital of France?", "法国的首都是哪里？", "2+2?"]
# The working directory's config: fast settings the form starts from (the walk types its own on top).
CONFIG = """\
model:
  model_name_or_path: tiny-qwen2
data:
  val_size: 4
training:
  num_train_epochs: 1
  gradient_accumulation_steps: 1
  learning_rate: 0.003
  bf16: false
  logging_steps: 1
  eval_steps: 2
  save_steps: 1000
eval:
  adapter_path: null
generation:
  max_new_tokens: 16
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Webui:
    """A running `qwentune webui`: its URL, working directory and log."""

    def __init__(self, work: Path, port: int, process: subprocess.Popen, log: Path):
        self.work, self.port, self.process, self.log = work, port, process, log
        self.url = f"http://127.0.0.1:{port}/"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]


@pytest.fixture(scope="module")
def webui(tmp_path_factory, tiny_model_dir):
    """`qwentune webui --config webui.yaml` in its own process and working directory; interrupted (Ctrl-C, as a
    user stops it) at the end, killed if it does not stop."""
    work = tmp_path_factory.mktemp("webui_work")
    shutil.copytree(tiny_model_dir, work / "tiny-qwen2")  # the page reads models under its working directory only
    qa_file(work)
    (work / "webui.yaml").write_text(CONFIG, encoding="utf-8")
    port = _free_port()
    log = work.parent / f"{work.name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "qwentune.cli", "webui", "--config", "webui.yaml",
                                    "--port", str(port)], cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Webui(work, port, process, log)
    try:
        deadline = time.monotonic() + SLOW_MS / 1000
        while True:
            assert process.poll() is None, f"qwentune webui exited with {process.returncode}:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"qwentune webui did not open port {port}:\n{server.log_tail()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield server
    finally:
        interrupt_and_wait(process)
    # Every error the walk could cause was a page message; a traceback in the server's log is a bug of ours.
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace"), server.log_tail(6000)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, through Playwright (no browser download: the system one is launched)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium): the web page is tested in it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra has it)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shots(tmp_path):
    """shot(page, name, also=None): a screenshot of the page's viewport to tmp_path/name.png, and to
    $QWENTUNE_SCREENSHOTS as name.png (and also.png: README's picture is webui.png)."""
    extra = os.environ.get("QWENTUNE_SCREENSHOTS")

    def shot(page, name: str, also: str | None = None) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            for copy in filter(None, (name, also)):
                shutil.copy(path, Path(extra) / f"{copy}.png")
        return path

    return shot


def open_page(browser, webui, locale="en-US"):
    """A new browser session (its own cookies, its own page state) on the page, loaded."""
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(FIND_MS)
    page.goto(webui.url)
    page.wait_for_selector("#app-model textarea, #app-model input", timeout=SLOW_MS)
    return page


def field(page, elem_id: str):
    """The text or number input inside the component with this elem_id."""
    return page.locator(f"#{elem_id}").locator("textarea, input:not([type=hidden])").first


def fill(page, elem_id: str, value) -> None:
    box = field(page, elem_id)
    box.fill(str(value))
    box.press("Tab")  # blur: the component sends its value (Gradio's change and blur events)


def scroll_to(page, elem_id: str) -> None:
    """The component at the top of the viewport (for the screenshot that follows)."""
    page.evaluate("(id) => document.getElementById(id).scrollIntoView({block: 'start'})", elem_id)


def open_tab(page, name: str) -> None:
    page.click(f"#tab-{name}-button")
    page.wait_for_selector(f"#tab-{name}", state="visible")


# The component's text (an input's value, else what it shows) tested against a regex in the page, until it matches
# or an error toast appears (then its text is returned, so the test fails at once with the page's message).
_MATCHES = """([id, source]) => {
    const toast = document.querySelector('[data-testid="toast-body"].error, .toast-body.error');
    if (toast) return {error: toast.innerText};
    const el = document.getElementById(id);
    if (!el) return false;
    const box = el.querySelector('textarea, input:not([type=hidden])');
    const text = box ? box.value : el.innerText;
    return new RegExp(source).test(text) ? {text} : false;
}"""


def wait_text(page, webui, elem_id: str, pattern: str, timeout: float = SLOW_MS) -> str:
    """The text of component elem_id once it matches `pattern` (a JavaScript regex); fails with what it shows,
    the page's error toast or the server's log when it does not within `timeout` ms."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        found = page.wait_for_function(_MATCHES, arg=[elem_id, pattern], timeout=timeout, polling=250).json_value()
    except PlaywrightTimeout:
        shown = page.evaluate("""(id) => { const el = document.getElementById(id); if (!el) return null;
            const box = el.querySelector('textarea, input'); return box ? box.value : el.innerText; }""", elem_id)
        raise AssertionError(f"#{elem_id} never matched /{pattern}/; it shows {shown!r}\n"
                             f"server log:\n{webui.log_tail()}") from None
    assert "error" not in found, f"the page shows an error while waiting for #{elem_id}: {found['error']}"
    return found["text"]


def bot_replies(page, elem_id: str) -> list[str]:
    return page.locator(f"#{elem_id} [data-testid=bot]").all_inner_texts()


def wait_reply(page, webui, elem_id: str, count: int = 1) -> str:
    """The last bot message of chatbot elem_id once it has `count` non-empty ones."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("""([id, count]) => {
            const toast = document.querySelector('[data-testid="toast-body"].error, .toast-body.error');
            if (toast) return true;
            const replies = [...document.querySelectorAll('#' + id + ' [data-testid=bot]')];
            return replies.filter(r => r.innerText.trim()).length >= count;
        }""", arg=[elem_id, count], polling=250, timeout=SLOW_MS)
    except PlaywrightTimeout:
        raise AssertionError(f"no reply in #{elem_id}: {bot_replies(page, elem_id)}\n{webui.log_tail()}") from None
    toast = page.locator('[data-testid="toast-body"]')
    assert not toast.count(), f"the page shows an error: {toast.all_inner_texts()}"
    return bot_replies(page, elem_id)[-1]


def start_training(page, webui, output_dir: str, max_steps: int) -> None:
    """The train tab's form filled (dataset, output directory, steps, batch, length) and Start pressed."""
    open_tab(page, "train_tab")
    for key, value in (("dataset_name", "qa.jsonl"), ("output_dir", output_dir), ("max_steps", max_steps),
                       ("per_device_train_batch_size", 4), ("max_length", 64)):
        fill(page, f"train-key-{key}", value)
    page.click("#train-start")


def test_the_whole_path_in_one_page(browser, webui, shots):
    """data -> train -> chat -> compare -> rate, as a user clicks through it."""
    assert f"http://127.0.0.1:{webui.port}" in webui.log_tail()  # bound to this machine only
    page = open_page(browser, webui)

    # Data: the QA file rendered as training tokenizes it, the prompt masked and the answer trained.
    open_tab(page, "data_tab")
    fill(page, "data-dataset", "qa.jsonl")
    page.click("#data-preview-button")
    page.wait_for_selector("#data-preview span.qt-tok.qt-trained", timeout=SLOW_MS)
    assert page.locator("#data-preview span.qt-tok.qt-masked").count() > 0
    assert page.locator("#data-preview span.qt-tok.qt-trained").count() > 0
    assert "巴黎" in page.inner_text("#data-preview")  # an answer of the file, decoded
    scroll_to(page, "data-preview")
    shots(page, "webui-1-data")

    # Train: 4 steps; the status reaches step 4/4 and finished, the loss curve has its points.
    start_training(page, webui, "runs/walk", 4)
    status = wait_text(page, webui, "train-status", r"step 4/4.*")
    wait_text(page, webui, "train-status", r"^finished")
    page.wait_for_selector("#train-loss g.mark-line path", timeout=SLOW_MS)
    assert (webui.work / "runs" / "walk" / "adapter_model.safetensors").is_file(), status
    scroll_to(page, "train-status")
    shots(page, "webui-2-train", also="webui")

    # Chat: the trained adapter in the model row, both models answer.
    fill(page, "app-adapter", "runs/walk")
    open_tab(page, "chat_tab")
    page.click("#chat-side input[value=both]")
    fill(page, "chat-input", QUESTIONS[0])
    page.click("#chat-send")
    assert wait_reply(page, webui, "chat-finetuned")
    assert wait_reply(page, webui, "chat-base")
    shots(page, "webui-3-chat")

    # Compare: three typed questions, the report with each of them.
    open_tab(page, "compare_tab")
    fill(page, "compare-questions", "\n".join(QUESTIONS))
    page.click("#compare-run")
    status = wait_text(page, webui, "compare-status", r"^3 questions answered")
    report = page.frame_locator("#compare-report iframe")
    for question in QUESTIONS:
        assert report.get_by_text(question, exact=False).count() > 0, question
    scroll_to(page, "compare-report")
    shots(page, "webui-4-compare")

    # Rate: three blind choices; the running tally counts them and the saved sheet says the same.
    wait_text(page, webui, "rate-comparison", r"comparison_results\.json$")
    page.click("#rate-start")
    for done, button in enumerate(("rate-a", "rate-b", "rate-tie"), start=1):
        shown = wait_text(page, webui, "rate-question", r"\S")
        assert shown in QUESTIONS, shown
        page.click(f"#{button}")
        winrate = wait_text(page, webui, "rate-winrate", rf"\({done} rated of 3\)")
    tally = re.fullmatch(r"fine-tuned (\d+) - base (\d+) - tie (\d+): (\d+)% \(3 rated of 3\)", winrate)
    assert tally, winrate
    wins, losses, ties, percent = map(int, tally.groups())
    assert (ties, wins + losses) == (1, 2) and percent == round(100 * (wins + ties / 2) / 3)
    sheet = webui.work / wait_text(page, webui, "rate-file", r"ratings-.*\.csv$")
    assert sheet.is_file(), sheet
    scroll_to(page, "rate-comparison")
    shots(page, "webui-5-rating")

    imported = subprocess.run([sys.executable, "-m", "qwentune.cli", "rating", "import", "--sheet", str(sheet),
                               "--output", str(webui.work / "scores.json")], cwd=webui.work, capture_output=True,
                              text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    scores = json.loads((webui.work / "scores.json").read_text(encoding="utf-8"))
    assert sorted(s["rated"] for s in scores.values()) == [3, 3]
    # A chosen answer scores 5, the other 1, a tie 3 each (rating_view.SCORES): the sheet agrees with the tally.
    (finetuned,) = (s["mean"] for name, s in scores.items() if name.lower().startswith("fine"))
    assert finetuned == pytest.approx((5 * wins + 1 * losses + 3 * ties) / 3, abs=1e-3), (scores, winrate)
    pairing = re.search(r"^(.+) vs .+: (\d+) wins?, (\d+) loss(?:es)?, (\d+) ties?: win rate (\d+)%", imported.stdout,
                        re.MULTILINE)
    assert pairing, imported.stdout
    first, *counts = pairing.groups()
    imported_wins, imported_losses, imported_ties, imported_percent = map(int, counts)
    if not first.startswith("fine-tuned"):
        imported_wins, imported_losses, imported_percent = imported_losses, imported_wins, 100 - imported_percent
    assert (imported_wins, imported_losses, imported_ties) == (wins, losses, ties), imported.stdout
    assert imported_percent == percent, imported.stdout


def test_two_sessions_at_once_one_training_one_chatting(browser, webui, shots):
    """One browser session trains while another chats: the chat is answered during the training, and the first
    session still sees the training advance afterwards."""
    trainer = open_page(browser, webui)
    chatter = open_page(browser, webui)
    start_training(trainer, webui, "runs/load", 100_000)
    try:
        first = wait_text(trainer, webui, "train-status", r"^training.*step [1-9]\d*/100000")
        open_tab(chatter, "chat_tab")
        chatter.click("#chat-side input[value=base]")
        fill(chatter, "chat-input", QUESTIONS[1])
        chatter.click("#chat-send")
        assert wait_reply(chatter, webui, "chat-base")
        shots(chatter, "webui-6-load-chat")
        during = wait_text(trainer, webui, "train-status", r"^training.*step \d+/100000")
        step = int(re.search(r"step (\d+)/", during).group(1))
        assert step >= int(re.search(r"step (\d+)/", first).group(1))
        # Still advancing after the chat, shown in the first session without a reload.
        wait_text(trainer, webui, "train-status", rf"step (?!{step}/)\d+/100000")
        scroll_to(trainer, "train-status")
        shots(trainer, "webui-6-load-train")
    finally:
        trainer.click("#train-stop")
    wait_text(trainer, webui, "train-status", r"^stopped")


@pytest.mark.parametrize("locale, language", [("zh-CN", 1), ("en-US", 0)])
def test_the_page_speaks_the_browsers_language(browser, webui, locale, language):
    from qwentune.apps.webui.app import TEXT

    page = open_page(browser, webui, locale=locale)
    page.wait_for_function("([id, text]) => document.getElementById(id).innerText.includes(text)",
                           arg=["app-title", TEXT["app.title"][language]])
    assert TEXT["app.model"][language] in page.inner_text("#app-model")
    assert TEXT["app.title"][1 - language] not in page.inner_text("#app-title")
