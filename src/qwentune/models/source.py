"""Where a model comes from: a local directory, a .gguf file, the embedded demo model, or a hub id.

Resolved once per run, before anything is loaded, so that a wrong path or an unreachable hub is
one sentence at the start rather than a traceback after minutes of work.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fsutil import read_json_object
from .gguf_source import materialize
from .hub import is_local_reference, modelscope_snapshot, require_hub, selected_hub


def local_model_hint(option: str = "--model_name_or_path") -> str:
    return f"pass a local model directory as {option}, or try `qwentune demo` (no model hub needed)."



def resolve_model_source(name: str, option: str = "--model_name_or_path") -> str:
    """A local model directory as is; the embedded demo model or a .gguf file as its converted directory;
    a hub id if it is in the local hub cache or the hub is reachable (with --hub modelscope: ModelScope's copy,
    as the local directory modelscope keeps it in). UserError otherwise, naming
    `option` (the caller's flag that gave `name`) as the thing to fix; a config.json that is not a
    JSON object is named as such (transformers would otherwise fail in the tokenizer, blaming it)."""
    name = materialize(name)
    if is_local_reference(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise UserError(f"{name}: model directory not found; check {option}.")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(f"{path}: not a model directory (no config.json); point {option} at one.")
        read_json_object(config_file, "restore the model's config.json (copy it again from where the model came from).")
        return str(path)
    if selected_hub() == "modelscope":  # Qwen's models have the same ids there (Qwen/Qwen2.5-0.5B-Instruct)
        return modelscope_snapshot(name, f"model '{name}'", local_model_hint(option))
    from huggingface_hub import try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name
    except ValueError:  # huggingface_hub's HFValidationError: not a valid id; the hub check below says so
        pass
    require_hub(f"model '{name}'", local_model_hint(option))
    return name
