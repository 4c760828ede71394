"""`qwentune export` end to end on the tiny Qwen2 and its trained adapter, and its refusals."""

from __future__ import annotations

import json

import pytest

from qwentune import cli

PROMPTS = ["What is the capital of France?", "保持健康的三个提示。", "Give three tips for staying healthy."]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def _export(tmp_path, tiny_model_dir, trained, prompts_file, *options):
    return cli.main(["export", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", str(trained / "out"),
                     "--prompts_file", str(prompts_file), "--max_new_tokens", "12", *options])


def test_export_writes_each_type_a_modelfile_and_a_record_and_the_merge_agrees(tmp_path, tiny_model_dir, trained,
                                                                                 prompts_file, capsys):
    out = tmp_path / "export"
    code = _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out),
                   "--gguf_type", "f16", "q8_0")
    captured = capsys.readouterr()
    printed = captured.out
    assert code in (0, None), captured.err[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-f16.gguf", "model-q8_0.gguf",
                                                     "qwentune_export.json"]
    record = json.loads((out / "qwentune_export.json").read_text(encoding="utf-8"))
    assert record["files"]["model-f16.gguf"]["bytes"] == (out / "model-f16.gguf").stat().st_size
    sides = {side["name"]: side for side in record["verification"]["sides"]}
    assert sides["merged"]["agreed"] == sides["merged"]["total"] == len(PROMPTS)
    assert "FROM ./model-f16.gguf" in (out / "Modelfile").read_text(encoding="utf-8").splitlines()
    assert "every side that must agree does." in printed


def test_export_again_into_the_same_directory_replaces_the_earlier_export(tmp_path, tiny_model_dir, trained,
                                                                            prompts_file):
    out = tmp_path / "export"
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out), "--gguf_type", "f32",
                   "--verify", "false") in (0, None)
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out), "--gguf_type", "q4_0",
                   "--verify", "false") in (0, None)
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-q4_0.gguf", "qwentune_export.json"]
    assert json.loads((out / "qwentune_export.json").read_text(encoding="utf-8"))["verification"] is None


def test_lora_only_writes_the_base_and_the_adapter_and_a_modelfile_with_both(tmp_path, tiny_model_dir, trained,
                                                                             prompts_file):
    out = tmp_path / "lora"
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out), "--lora_only",
                   "--gguf_type", "f16", "--verify", "false") in (0, None)
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "adapter.gguf", "base-f16.gguf",
                                                     "qwentune_export.json"]
    lines = (out / "Modelfile").read_text(encoding="utf-8").splitlines()
    assert "FROM ./base-f16.gguf" in lines and "ADAPTER ./adapter.gguf" in lines


def test_k_quants_come_from_llama_cpps_quantizer_and_are_verified_in_llama_cpp(tmp_path, tiny_model_dir, trained,
                                                                             prompts_file, capsys):
    pytest.importorskip("llama_cpp")
    from qwentune.export.verify import gguf_file_type

    out = tmp_path / "export"
    code = _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out), "--gguf_type", "q4_k_m")
    printed = capsys.readouterr().out
    assert code in (0, 1), printed  # a 4-bit file's replies may differ: that is a rate to read, not a failure
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-q4_k_m.gguf", "qwentune_export.json"]
    assert gguf_file_type(out / "model-q4_k_m.gguf") == "q4_k_m"
    assert "GGUF q4_k_m (llama.cpp)" in printed


def test_k_quants_without_llama_cpp_are_one_line_naming_the_extra(tmp_path, tiny_model_dir, trained, prompts_file,
                                                                 capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    out = tmp_path / "export"
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out),
                   "--gguf_type", "q4_k_m") == 2
    err = capsys.readouterr().err
    assert '.[llama]' in err and len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("options, message", [
    (["--gguf_type", "iq2_xs"], "i-quants"),
    (["--gguf_type", "f17"], "not a type qwentune writes"),
    (["--max_new_tokens", "0"], "--max_new_tokens is 0"),
])
def test_bad_options_are_one_line_before_anything_is_written(tmp_path, tiny_model_dir, trained, prompts_file, capsys,
                                                             options, message):
    out = tmp_path / "export"
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out), *options) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_an_output_dir_holding_other_files_is_refused(tmp_path, tiny_model_dir, trained, prompts_file, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out)) == 2
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me" and len(list(out.iterdir())) == 1


def test_lora_only_without_an_adapter_is_refused(tmp_path, tiny_model_dir, prompts_file, capsys):
    code = cli.main(["export", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", "null", "--lora_only",
                     "--output_dir", str(tmp_path / "x"), "--prompts_file", str(prompts_file)])
    assert code == 2 and "--lora_only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_verify_refuses_a_missing_gguf_file(tmp_path, tiny_model_dir, capsys):
    code = cli.main(["verify", "--model_name_or_path", str(tiny_model_dir), "--gguf", str(tmp_path / "none.gguf")])
    assert code == 2 and "none.gguf" in capsys.readouterr().err


def test_verify_refuses_a_file_that_is_not_a_gguf_model_before_loading(tmp_path, capsys):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model", encoding="utf-8")
    code = cli.main(["verify", "--model_name_or_path", str(tmp_path / "no-model-needed"), "--gguf", str(text)])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable GGUF file" in err and len(err.strip().splitlines()) == 1


def test_verify_refuses_a_gguf_of_another_model(tmp_path, tiny_model_dir, tiny_tokenizer, prompts_file, capsys):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from qwentune.export.gguf import write_gguf

    narrower = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
    other = write_gguf(narrower, tiny_tokenizer, tmp_path / "other.gguf", "f32")
    code = cli.main(["verify", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", "null", "--server",
                     "false", "--prompts_file", str(prompts_file), "--gguf", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "width 32 (the model: 64)" in err, err


def test_max_new_tokens_beyond_the_models_positions_is_refused(tmp_path, tiny_model_dir, trained, prompts_file, capsys):
    out = tmp_path / "export"
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out),
                   "--max_new_tokens", "100000") == 2
    err = capsys.readouterr().err
    assert "more than the model's 512 positions" in err and not out.exists()


def test_sigterm_during_export_leaves_nothing_half_written(tmp_path, tiny_model_dir, trained, prompts_file):
    import signal
    import subprocess
    import sys

    out = tmp_path / "export"
    process = subprocess.Popen(
        [sys.executable, "-m", "qwentune.cli", "export", "--model_name_or_path", str(tiny_model_dir), "--adapter_path",
         str(trained / "out"), "--prompts_file", str(prompts_file), "--max_new_tokens", "200", "--output_dir", str(out),
         "--gguf_type", "f32", "f16"], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in process.stderr:
        if line.startswith("writing model-f32"):  # the temporary directory exists from here on
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 128 + signal.SIGTERM, rest
    assert "terminated" in rest and "Traceback" not in rest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".export", "export"))) == []


def test_a_killed_exports_temporary_directory_is_removed_by_the_next_export(tmp_path, tiny_model_dir, trained,
                                                                            prompts_file):
    import os

    out = tmp_path / "export"
    dead = tmp_path / ".export.tmp-999999999-abc"  # no such process: a run killed with SIGKILL left it
    alive = tmp_path / f".export.tmp-{os.getppid()}-abc"  # a running process's: left alone
    for leftover in (dead, alive):
        leftover.mkdir()
        (leftover / "model-f16.gguf").write_bytes(b"half")
    assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(out), "--gguf_type", "f32",
                   "--verify", "false") in (0, None)
    assert not dead.exists() and alive.is_dir()


def test_a_symlinked_output_dir_stays_a_link_to_the_new_export(tmp_path, tiny_model_dir, trained, prompts_file):
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    for gguf_type in ("f32", "q8_0"):  # the second export replaces the first through the link
        assert _export(tmp_path, tiny_model_dir, trained, prompts_file, "--output_dir", str(link), "--gguf_type",
                       gguf_type, "--verify", "false") in (0, None)
    assert link.is_symlink() and sorted(p.name for p in real.iterdir()) == ["Modelfile", "model-q8_0.gguf",
                                                                            "qwentune_export.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "prompts.txt", "real"]
