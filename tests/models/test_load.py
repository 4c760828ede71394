"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json
import signal

import pytest

from qwentune import cli
from qwentune.errors import UserError
from qwentune.models.load import find_adapter, load_for_inference
from qwentune.training.train import train
from tests.helpers import FP32, build_tiny_tokenizer, signal_self_at, silent, tiny_config


def test_find_adapter_picks_final_then_best_then_newest(trained, tmp_path):
    assert find_adapter(trained / "out") == ("adapter", trained / "out", "the adapter in this directory")
    run = tmp_path / "run"
    for step in (2, 10):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    assert find_adapter(run)[1] == run / "checkpoint-10"
    # The summary names the best checkpoint relative to the run ("checkpoint-2"); older summaries put the
    # output directory in front of it as typed where training ran, which is read by the checkpoint's name.
    for best in ("checkpoint-2", "stl/int/checkpoint-2", str(run / "checkpoint-2"), "/elsewhere/int/checkpoint-2"):
        (run / "run_summary.json").write_text(json.dumps({"best_checkpoint": best}))
        assert find_adapter(run)[1:] == (run / "checkpoint-2", "the best checkpoint by eval loss"), best
    with pytest.raises(UserError, match="holds no adapter"):
        find_adapter(tmp_path)


def test_a_best_checkpoint_that_is_not_there_is_an_error(tmp_path, tiny_model_dir, capsys):
    run = tmp_path / "run"
    for step in (8, 13):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    (run / "checkpoint-8" / "adapter_config.json").unlink()  # the best one lost its adapter
    (run / "run_summary.json").write_text(json.dumps({"best_checkpoint": "checkpoint-8"}))
    with pytest.raises(UserError, match=r"run_summary.json: the best checkpoint it names, .*checkpoint-8, is missing"):
        find_adapter(run)
    (run / "checkpoint-8" / "adapter_config.json").parent.rmdir()  # or is gone altogether: never checkpoint-13
    assert cli.main(["infer", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", str(run),
                     "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run / 'run_summary.json'}" in err and "checkpoint-8" in err


def test_the_best_checkpoint_from_another_directory(tmp_path, tiny_model_dir, monkeypatch):
    """Issue 17 case 3: a run trained into a relative output directory, read from another directory."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    # Evaluated and saved at step 2 (the best, the only evaluation); stopped by SIGTERM after step 3, saved unevaluated.
    settings = dict(output_dir="stl/int", save_steps=2, eval_steps=2)
    result = train(tiny_config(tmp_path, tiny_model_dir, **settings), log=silent, callbacks=(signal_self_at(2),))
    assert result.interrupted_by == signal.SIGTERM
    run = work / "stl" / "int"
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["best_checkpoint"] == "checkpoint-2" and (run / "checkpoint-3").is_dir()

    monkeypatch.chdir(elsewhere)
    assert find_adapter(run)[1:] == (run / "checkpoint-2", "the best checkpoint by eval loss")
    loaded = load_for_inference(str(tiny_model_dir), str(run), FP32, log=silent)
    assert loaded.description["finetuned"] == str(run / "checkpoint-2")  # absolute in reports: true from anywhere

    # Finished where it started, then run again from elsewhere (nothing left to train): transformers drops the
    # best checkpoint it saved as "stl/int/checkpoint-N", which does not resolve from here; qwentune finds it.
    monkeypatch.chdir(work)
    best = train(tiny_config(tmp_path, tiny_model_dir, **settings), log=silent).summary["best_checkpoint"]
    assert best in ("checkpoint-2", "checkpoint-4")
    monkeypatch.chdir(elsewhere)
    again = train(tiny_config(tmp_path, tiny_model_dir, **settings | dict(output_dir=run)), log=silent).summary
    assert again["steps"] == 4 and again["best_checkpoint"] == best and (run / best).is_dir()


def test_adapter_on_a_different_base_is_refused(trained, tmp_path):
    other = build_tiny_tokenizer()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(other), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "other")
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(UserError, match="does not fit base model"):
        load_for_inference(str(tmp_path / "other"), str(trained / "out"), log=silent)


