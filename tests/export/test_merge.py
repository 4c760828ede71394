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




def test_merge_replaces_only_a_previous_merged_model(trained, tiny_model_dir, tmp_path, capsys):
    """Issue 17 (outputs): --merge into a directory holding the user's files, or onto a file, is refused before
    the model loads and leaves them as they were; a previous merge (known by its qwentune_merge.json) is
    replaced whole."""
    import json

    from qwentune.cli import main

    def merge(target):
        capsys.readouterr()
        code = main(["infer", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", str(trained / "out"),
                     "--merge", str(target), "--merge_dtype", "fp32"])
        return code, capsys.readouterr().err.strip()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine", encoding="utf-8")
    assert merge(mine) == (2, f"error: {mine} already holds files that are not a qwentune merged model; choose "
                              f"another --merge or empty it.")
    a_file = tmp_path / "f.txt"
    a_file.write_text("mine", encoding="utf-8")
    assert merge(a_file) == (2, f"error: {a_file} is a file; give a directory path as --merge.")
    assert (mine / "keep.txt").read_text() == "mine" and a_file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "mine"]  # no .f.txt.old-*, no lock

    out = tmp_path / "merged"
    assert merge(out)[0] == 0
    record = json.loads((out / "qwentune_merge.json").read_text(encoding="utf-8"))
    assert record == {"base": str(tiny_model_dir.resolve()), "adapter": record["adapter"], "dtype": "float32"}
    (out / "stale.bin").write_bytes(b"")
    assert merge(out)[0] == 0 and not (out / "stale.bin").exists() and (out / "config.json").is_file()
