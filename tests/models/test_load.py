"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json

import pytest

from qwentune.errors import UserError
from qwentune.models.load import find_adapter, load_for_inference
from tests.helpers import build_tiny_tokenizer, silent


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


