"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""


import torch

from qwentune.config import GenerationConfig
from qwentune.export.merge import merge_adapter
from qwentune.inference.generate import generate_batch
from qwentune.models.load import find_adapter, load_for_inference
from tests.helpers import FP32, QA, silent

GREEDY = GenerationConfig(max_new_tokens=40, do_sample=False, repetition_penalty=1.0)


def questions():
    return [[{"role": "user", "content": q}] for q, _ in QA]


def test_merged_model_equals_base_plus_adapter(trained, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    ids = torch.tensor([[1, 5, 9, 20, 33, 2, 40]])
    with torch.no_grad():
        adapted = loaded.model(ids).logits
    merge_adapter(loaded, tmp_path / "merged", dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()  # plain transformers
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted, atol=1e-5, rtol=1e-5)
    assert find_adapter(tmp_path / "merged")[0] == "merged"
    as_merged = load_for_inference(str(tiny_model_dir), str(tmp_path / "merged"), FP32, log=silent)
    assert [a.text for a in generate_batch(as_merged, questions(), GREEDY)] == [a for _, a in QA]


