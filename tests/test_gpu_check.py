"""benchmarks/gpu_check.py: its card-fitting rule, and its --device cpu --tiny smoke run, run the way the GPU
machine would run it: with nothing installed but torch, transformers, peft, accelerate, their dependencies and
bitsandbytes (which travels as a wheel), so that a module the GPU machine lacks (datasets, gguf, jieba,
tensorboard, pyarrow, pytest) fails here first."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

GPU_MACHINE = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


def gpu_check_module(monkeypatch):
    """benchmarks/gpu_check.py imported; what it sets at import (sys.path, HF_HUB_OFFLINE) is undone after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_fits_counts_the_reserved_peak_and_the_memory_outside_the_allocator(monkeypatch):
    fits = gpu_check_module(monkeypatch).fits
    mib, gib = 2 ** 20, 2 ** 30
    assert fits(15 * gib, gib // 2, 16_376)
    assert fits(16_376 * mib - 100, 100, 16_376)  # exactly full
    assert not fits(16_376 * mib - 100, 101, 16_376)
    assert not fits(15 * gib, gib, 16_376)  # the CUDA context tips it over
    assert not fits(12 * gib, 0, 12_288 - 1)


def distributions(names) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions `names` need, with every requirement that applies without extras."""
    from packaging.requirements import Requirement

    found, todo = {}, list(names)
    while todo:
        key = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if key in found:
            continue
        try:
            found[key] = dist = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue  # a platform-only requirement (triton, nvidia-*) not installed on this CPU machine
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def gpu_machine_site(target: Path) -> Path:
    """A directory of links to the installed files of GPU_MACHINE's distributions and their dependencies only."""
    target.mkdir()
    for dist in distributions(GPU_MACHINE).values():
        if dist.files is None:
            pytest.skip(f"{dist.metadata['Name']} was installed without a RECORD; cannot tell its files")
        root = Path(dist.locate_file(""))
        for top in {file.parts[0] for file in dist.files if file.parts[0] != ".."}:
            if (root / top).exists() and not (target / top).exists():
                (target / top).symlink_to(root / top)
    return target


def test_tiny_gpu_check_passes_on_cpu_with_only_what_the_gpu_machine_has(tmp_path):
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed (the test extra installs it)")
    site = gpu_machine_site(tmp_path / "site")
    assert not (site / "datasets").exists() and (site / "transformers").exists()
    output = tmp_path / "table.json"
    # -S: no site-packages but the links; the script puts this checkout's src/ on the path itself.
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-S", "benchmarks/gpu_check.py", "--device", "cpu", "--tiny",
                           "--output", str(output)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    print(f"gpu_check --tiny took {time.perf_counter() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    rows = json.loads(output.read_text(encoding="utf-8"))["rows"]
    assert [row["check"].split(":")[0] for row in rows] == ["speed"] * 3 + ["QLoRA memory", "resume", "merge", "stop"]
    for row in rows:  # PASS, or a measured figure; never FAIL or SKIPPED
        assert row["result"] == "PASS" or re.match(r"^(peak RSS )?[\d,.]+ ", row["result"]), row
        assert f"| {row['check']} | {row['result']} |" in done.stdout
