"""qwentune as a package: every subpackage and file under src/ is in the wheel, the wheel alone runs `qwentune
demo` from an empty directory (the config templates, demo data and chat templates are package data), with no
warning lines, and serves `qwentune webui`'s page with every tab. The demo is shortened (2 training steps, 4
held-out examples, 8 new tokens) but runs end to end."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import tomllib

from qwentune.errors import UserError
from qwentune.models.gguf_source import cache_root, embedded_demo_gguf
from tests.helpers import REPO, interrupt_and_wait

PROGRESS_BAR = re.compile(r"\d+%\||it/s\]|s/it\]")


def test_the_wheel_lists_every_package_under_src():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    assert listed == on_disk | {"qwentune.shipped.config", "qwentune.shipped.demo"}


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """qwentune built as a wheel from a copy of the repository and installed, alone, into a folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    for name in ("src", "config", "data/demo", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        copy(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--wheel-dir", str(tmp), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp.glob("qwentune-*.whl")
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return site


def test_the_wheel_holds_every_file_under_src(installed_wheel):
    """A subpackage left out of pyproject's list, or a data file (a template, the page's assets) left out of its
    package data, is missing from the wheel although the checkout runs."""
    def files(root):  # what a checkout holds for the package, not tools' caches in it (__pycache__, .ruff_cache)
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file()
                and not any(part == "__pycache__" or part.startswith(".") for part in p.relative_to(root).parts)}

    missing = files(REPO / "src" / "qwentune") - files(installed_wheel / "qwentune")
    assert not missing, sorted(map(str, missing))


def test_the_wheel_serves_the_web_page_with_every_tab(installed_wheel, tmp_path):
    """`qwentune webui` from the wheel alone, in an empty directory: the page's config lists every tab and the
    elem_ids the browser test drives (tests/apps/webui/test_browser.py runs the page itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"PYTHONPATH": str(installed_wheel), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    empty = tmp_path / "empty"
    empty.mkdir()
    log = tmp_path / "webui.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(installed_wheel / "bin" / "qwentune"), "webui", "--port",
                                   str(port)], env=env, cwd=empty, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as response:
                    config = json.load(response)
                break
            except OSError:
                time.sleep(0.5)
    finally:
        interrupt_and_wait(server)
    elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    tabs = ("data_tab", "train_tab", "evaluate_tab", "chat_tab", "compare_tab", "export_tab")
    expected = {"app-model", "app-adapter", "app-config", *(f"tab-{tab}" for tab in tabs),
                "data-preview", "train-start", "train-key-max_steps", "chat-send", "compare-run", "rate-winrate",
                "eval-run", "export-run"}
    assert expected <= elem_ids, sorted(expected - elem_ids)
    assert "Traceback" not in log.read_text()


def test_the_wheel_runs_the_demo_from_an_empty_directory_without_warnings(installed_wheel, tmp_path):
    try:
        embedded_demo_gguf()
    except UserError as error:  # neither installed nor downloadable (offline)
        pytest.skip(str(error))
    # Only the wheel's folder added to this interpreter's libraries; the converted demo model's cache kept.
    env = {"PYTHONPATH": str(installed_wheel), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "QWENTUNE_CACHE": str(cache_root())}
    where = subprocess.run([sys.executable, "-c", "import qwentune; print(qwentune.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(installed_wheel)), where  # the wheel's copy, not the checkout's
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run([sys.executable, str(installed_wheel / "bin" / "qwentune"), "demo", "--max_steps", "2",
                          "--max_eval_samples", "4", "--max_new_tokens", "8"], env=env, cwd=empty,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for step in ("1/4 training", "2/4 evaluating", "3/4 answering", "4/4 done"):
        assert step in run.stdout
    table = run.stdout[run.stdout.index("held out"):]  # the registry's headline metrics, labelled, with units
    for row in ("perplexity", "ROUGE-L", "BLEU-4", "stopped by itself", "0-100, higher is better"):
        assert row in table, row
    results = empty / "results" / "demo"
    report = json.loads((results / "comparison_results.json").read_text(encoding="utf-8"))
    assert len(report["results"]) == 20 and report["models"]["one_base_copy"]
    assert (results / "comparison_results.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (results / "adapter" / "adapter_model.safetensors").is_file()
    lines = [line for line in re.split(r"[\r\n]+", run.stdout + run.stderr) if line.strip()]
    noisy = [line for line in lines if not PROGRESS_BAR.search(line)
             and re.search(r"warn|deprecat|traceback|\[transformers\]", line, re.IGNORECASE)]
    assert not noisy, noisy
