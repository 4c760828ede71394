"""The export tab's handlers called directly: merge (as `qwentune infer --merge`) and GGUF export with verification
(as `qwentune export`), on the tiny model and the adapter trained to answer the QA pairs."""

from __future__ import annotations

import json

import pytest

from qwentune.apps.webui import export_tab
from qwentune.errors import UserError
from tests.apps.webui.tab_helpers import page_config_file, page_settings
from tests.helpers import FP32, QA, silent


@pytest.fixture
def page(tmp_path, tmp_path_factory, tiny_model_dir, trained):
    return page_settings(tmp_path_factory, tiny_model_dir, trained, page_config_file(tmp_path, trained))


def test_merge_writes_a_model_that_loads_and_answers_as_the_adapter(page, tmp_path):
    from transformers import AutoModelForCausalLM

    from qwentune.config import GenerationConfig
    from qwentune.inference.generate import generate_batch
    from qwentune.models.load import load_for_inference

    out = tmp_path / "merged"
    status = export_tab.run_merge(page, page.model_name_or_path, page.adapter_path, page.config_path, str(out), "fp32")
    assert str(out) in status
    assert json.loads((out / "qwentune_merge.json").read_text(encoding="utf-8"))["dtype"] == "float32"
    assert AutoModelForCausalLM.from_pretrained(out).dtype.is_floating_point  # plain transformers loads it
    merged = load_for_inference(page.model_name_or_path, str(out), FP32, log=silent)
    greedy = GenerationConfig(max_new_tokens=24, repetition_penalty=1.0)
    assert [a.text for a in generate_batch(merged, [[{"role": "user", "content": q}] for q, _ in QA], greedy)] == [
        a for _, a in QA]


def test_merge_refusals_are_one_sentence_before_the_model_loads(page, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="already holds files that are not a qwentune merged model; choose another "
                                        "merged model folder or empty it"):  # break-it: was "another the merged"
        export_tab.run_merge(page, page.model_name_or_path, page.adapter_path, page.config_path, str(mine), "bf16")
    with pytest.raises(UserError, match="adapter: empty, so there is nothing to merge"):
        export_tab.run_merge(page, page.model_name_or_path, "", page.config_path, str(tmp_path / "m"), "bf16")
    with pytest.raises(UserError, match="^merged model folder: /root is outside the folders"):
        export_tab.run_merge(page, page.model_name_or_path, page.adapter_path, page.config_path, "/root", "bf16")
    assert (mine / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_gguf_export_writes_f16_a_modelfile_and_shows_the_verification(page, tmp_path):
    """As tests/export does: the questions the adapter learned, short replies (on the demo's questions the random
    tiny model's replies sit near ties, where f16 rounding may tip one)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(q for q, _ in QA) + "\n", encoding="utf-8")
    out = tmp_path / "export"
    status = export_tab.run_gguf_export(page, page.model_name_or_path, page.adapter_path, page.config_path, ["f16"],
                                        str(out), False, str(prompts), 12)
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-f16.gguf", "qwentune_export.json"]
    assert f"{out / 'model-f16.gguf'}: " in status and "ollama create my-model -f" in status
    record = json.loads((out / "qwentune_export.json").read_text(encoding="utf-8"))
    sides = {side["name"]: side for side in record["verification"]["sides"]}
    assert sides["merged"]["agreed"] == sides["merged"]["total"] == len(QA)
    assert "greedy replies compared with adapter on base" in status and "merged" in status
    assert status.startswith("**verified: every side that must agree does**")
    if "GGUF f16 (llama.cpp)" in sides:  # llama-cpp-python installed: the file itself answered
        assert sides["GGUF f16 (llama.cpp)"]["agreed"] == len(QA)


def test_gguf_export_refusals(page, tmp_path):
    with pytest.raises(UserError, match="--gguf_type: give at least one type"):
        export_tab.run_gguf_export(page, page.model_name_or_path, page.adapter_path, page.config_path, [],
                                   str(tmp_path / "e"), False)
    with pytest.raises(UserError, match="lora_only writes the adapter as a GGUF LoRA"):
        export_tab.run_gguf_export(page, page.model_name_or_path, "", page.config_path, ["f16"],
                                   str(tmp_path / "e"), True)
    with pytest.raises(UserError, match="^export folder: /root is outside the folders"):
        export_tab.run_gguf_export(page, page.model_name_or_path, page.adapter_path, page.config_path, ["f16"],
                                   "/root", False)
    with pytest.raises(UserError, match="verification prompts: /etc/hosts is outside the folders"):
        export_tab.run_gguf_export(page, page.model_name_or_path, page.adapter_path, page.config_path, ["f16"],
                                   str(tmp_path / "e"), False, "/etc/hosts")
    with pytest.raises(UserError, match="export: --max_new_tokens is 0; it must be at least 1"):
        export_tab.run_gguf_export(page, page.model_name_or_path, page.adapter_path, page.config_path, ["f16"],
                                   str(tmp_path / "e"), False, "", 0)
    assert not (tmp_path / "e").exists()
