"""The page's loaded-model cache and its config: one model per (base, adapter, precision, files) shared by every
session, loaded through the CLI's own loader."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from qwentune.apps.webui.models import ModelCache, ModelSpec, load_shared, row_config
from qwentune.errors import UserError
from tests.apps.webui.tab_helpers import page_config_file, page_settings
from tests.helpers import FP32, QA


@pytest.fixture
def page(tmp_path, tmp_path_factory, tiny_model_dir, trained):
    return page_settings(tmp_path_factory, tiny_model_dir, trained, page_config_file(tmp_path, trained))


def spec_of(page, adapter=None):
    cfg = row_config(page, page.config_path, page.model_name_or_path,
                      page.adapter_path if adapter is None else adapter)
    return ModelSpec.of(cfg, FP32)


def test_row_config_takes_the_model_row_and_refuses_paths_outside_the_page(page, tmp_path):
    cfg = row_config(page, page.config_path, page.model_name_or_path, "")
    assert cfg.model.model_name_or_path == page.model_name_or_path and cfg.eval.adapter_path is None
    assert cfg.generation.max_new_tokens == 24  # from the page's config file
    assert row_config(page, page.config_path, page.model_name_or_path, page.adapter_path).eval.adapter_path == str(
        Path(page.adapter_path).resolve())
    assert row_config(page, "", "Qwen/Qwen2-0.5B", "").model.model_name_or_path == "Qwen/Qwen2-0.5B"  # a hub id
    with pytest.raises(UserError, match="Config file: /etc/passwd is outside the folders this page may use"):
        row_config(page, "/etc/passwd", page.model_name_or_path, "")
    with pytest.raises(UserError, match="Adapter: ../../.. is outside the folders"):
        row_config(page, "", page.model_name_or_path, "../../..")


def test_one_model_per_spec_shared_and_loaded_once(page):
    loads = []

    def counting(spec, log):
        loads.append(spec)
        return load_shared(spec, log)

    cache = ModelCache(keep=1, loader=counting)
    spec = spec_of(page)
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(spec, log=lambda m: None))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and got[0] is got[1] is got[2]  # three sessions at once: one load
    shared = got[0]
    assert shared.pair.shared and shared.has_finetuned  # one copy of the base serves both sides
    assert shared.side("base")[1] is False and shared.side("finetuned")[1] is True
    assert shared.description("base")["kind"] == "base" and shared.description("finetuned")["kind"] == "adapter"

    alone = cache.get(spec_of(page, adapter=""), log=lambda m: None)  # another model: the first is dropped
    assert len(loads) == 2 and cache.loaded() == [alone.spec]
    with pytest.raises(UserError, match="no fine-tuned model"):
        alone.side("finetuned")


def test_an_adapter_rewritten_on_disk_is_loaded_again(page, trained, tmp_path):
    """Training into the adapter's folder while the page runs: the next question gets the new adapter."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained / "out", copy)
    cache = ModelCache(keep=2)
    first = cache.get(spec_of(page, adapter=str(copy)), log=lambda m: None)
    assert cache.get(spec_of(page, adapter=str(copy)), log=lambda m: None) is first
    weights = copy / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000_000))
    assert cache.get(spec_of(page, adapter=str(copy)), log=lambda m: None) is not first


def test_generation_on_one_model_runs_one_at_a_time(page):
    from qwentune.config import GenerationConfig
    from qwentune.inference.generate import generate_batch

    shared = ModelCache().get(spec_of(page), log=lambda m: None)
    order = []

    def session(name):
        with shared.generating():
            order.append(f"{name} start")
            time.sleep(0.2)  # without the lock the other session would start meanwhile
            loaded, adapter_on = shared.side("finetuned")
            generate_batch(loaded, [[{"role": "user", "content": QA[0][0]}]],
                           GenerationConfig(max_new_tokens=8, repetition_penalty=1.0), adapter_on)
            order.append(f"{name} end")

    threads = [threading.Thread(target=session, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [entry.split()[1] for entry in order] == ["start", "end", "start", "end"]
    assert not shared.busy()
