"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json

import pytest

from qwentune.cli import main
from qwentune.errors import UserError
from qwentune.models.load import find_adapter, load_for_inference
from tests.helpers import QA, build_tiny_tokenizer, silent, write_gguf


def test_find_adapter_picks_final_then_best_then_newest(trained, tmp_path):
    assert find_adapter(trained / "out") == ("adapter", trained / "out", "the adapter in this directory")
    run = tmp_path / "run"
    for step in (2, 10):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    assert find_adapter(run)[1] == run / "checkpoint-10"
    (run / "run_summary.json").write_text(json.dumps({"best_checkpoint": str(run / "checkpoint-2")}))
    assert find_adapter(run)[1:] == (run / "checkpoint-2", "the best checkpoint by eval loss")
    with pytest.raises(UserError, match="holds no adapter"):
        find_adapter(tmp_path)


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
