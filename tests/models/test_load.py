"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json
import signal

import pytest

from qwentune import cli
from qwentune.cli import main
from qwentune.errors import UserError
from qwentune.models.load import find_adapter, load_for_inference
from qwentune.training.train import train
from tests.helpers import FP32, QA, build_tiny_tokenizer, signal_self_at, silent, tiny_config, write_gguf


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




@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir):
    """The tiny model exported as a real GGUF file, as `qwentune export` or llama.cpp would give a fine-tuned model."""
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tuned-f32.gguf", tiny_model_dir)


def answer_of(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out


def test_a_gguf_model_as_the_fine_tuned_side_is_that_whole_model(tiny_gguf, tiny_model_dir, tmp_path, monkeypatch,
                                                                 capsys):
    """Not "not found": a GGUF file is a whole model, so the fine-tuned side is that model (as a merged model
    directory would be), converted once; infer, evaluate and compare all find it through find_adapter."""
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    kind, location, how = find_adapter(tiny_gguf)
    assert (kind, location.parent) == ("merged", tmp_path / "cache" / "models") and str(tiny_gguf) in how
    assert (location / "config.json").is_file() and (location / "tokenizer_config.json").is_file()

    settings = ["--max_new_tokens", "12", "--repetition_penalty", "1.0", "--prompt", QA[0][0]]
    direct = answer_of(capsys, ["infer", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", "null",
                                *settings])
    # No base model is needed for a whole model: the default (a hub id) is not even looked up.
    assert answer_of(capsys, ["infer", "--adapter_path", str(tiny_gguf), *settings]) == direct != ""
    capsys.readouterr()
    assert main(["infer", "--adapter_path", str(tiny_gguf), "--merge", str(tmp_path / "merged")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == f"error: {location}: already a whole model, with no adapter to merge; use it as it is."

    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps([q for q, _ in QA], ensure_ascii=False), encoding="utf-8")
    answer_of(capsys, ["compare", "--base-model", str(tiny_model_dir), "--finetuned-model", str(tiny_gguf),
                       "--questions-file", str(questions), "--output", str(tmp_path / "r.json"),
                       "--max_new_tokens", "8"])
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["finetuned_kind"] == "merged"
    # The same weights on both sides here, so the same answers: the GGUF really is the model that answered.
    assert all(r["base"]["answer"] == r["finetuned"]["answer"] for r in report["results"])


def test_a_gguf_lora_adapter_or_another_file_says_what_it_is(trained, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    adapter = write_gguf(tmp_path / "lora.gguf", tiny_model_dir, gguf_type="adapter")
    message = (f"{adapter}: a LoRA adapter in GGUF form (for llama.cpp's --lora), not a model; qwentune attaches "
               f"PEFT adapters: give the adapter or training output directory as --adapter_path and the base model "
               f"as --model_name_or_path.")
    with pytest.raises(UserError) as caught:
        find_adapter(adapter)
    assert str(caught.value) == message
    for argv in (["infer", "--adapter_path", str(adapter), "--prompt", "hi"],
                 ["infer", "--model_name_or_path", str(adapter), "--adapter_path", "null", "--prompt", "hi"]):
        capsys.readouterr()
        assert main(argv) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "cache" / "models").exists()  # nothing converted

    weights = trained / "out" / "adapter_model.safetensors"
    with pytest.raises(UserError, match=f"a file of an adapter; give the directory that holds it \\({trained / 'out'}\\)"):
        find_adapter(weights)
    notes = tmp_path / "notes.txt"
    notes.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="notes.txt: a file, not an adapter; give an adapter directory"):
        find_adapter(notes)
    with pytest.raises(UserError, match="nothing.gguf: not found"):
        find_adapter(tmp_path / "nothing.gguf")


@pytest.mark.parametrize("damage, message", [
    ({"adapter_model.safetensors": None}, r"holds adapter_config.json but no adapter weights"),
    ({"adapter_model.safetensors": b"garbage, not safetensors"}, r"adapter_model.safetensors: not a readable "
                                                                 r"safetensors file"),
    ({"adapter_config.json": b'{"r": 8,'}, r"adapter_config.json: not valid JSON \(line 1\)"),
], ids=["config-only", "garbage-weights", "bad-config"])
def test_a_broken_adapter_folder_names_the_file(trained, tiny_model_dir, tmp_path, damage, message):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(trained / "out", adapter, ignore=shutil.ignore_patterns("checkpoint-*"))
    for name, content in damage.items():
        if content is None:
            (adapter / name).unlink()
        else:
            (adapter / name).write_bytes(content)
    with pytest.raises(UserError, match=message) as caught:
        load_for_inference(str(tiny_model_dir), str(adapter), log=silent)
    assert "does not fit" not in str(caught.value)


@pytest.mark.parametrize("config_text, message", [("{bad", r"config.json: not valid JSON \(line 1\)"),
                                                  ("[1, 2]", r"config.json: not a JSON object")])
def test_a_model_folder_with_a_broken_config_json_names_that_file_not_the_tokenizer(tiny_model_dir, tmp_path,
                                                                                    config_text, message):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "config.json").write_text(config_text, encoding="utf-8")
    with pytest.raises(UserError, match=message) as caught:
        load_for_inference(str(model), None, log=silent)
    assert "tokenizer" not in str(caught.value)


@pytest.mark.parametrize("base, message", [("nobody/no-such-model", r"as --base-model, or try"),
                                           ("./no-such-model-dir", r"model directory not found; check --base-model\.")])
def test_compare_names_its_own_base_model_option(trained, base, message, monkeypatch):
    from qwentune.apps.compare import load_pair

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=message) as caught:
        load_pair(base, str(trained / "out"), log=silent)
    assert "--model_name_or_path" not in str(caught.value)


def test_a_model_folder_whose_tokenizer_outgrows_the_embedding_is_refused(tiny_model_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    tokenizer.add_tokens([f"extra_token_{i}" for i in range(8)])
    tokenizer.save_pretrained(model)
    with pytest.raises(UserError, match=r"has \d+ tokens but the model .*'s embedding has \d+ rows"):
        load_for_inference(str(model), None, log=silent)
