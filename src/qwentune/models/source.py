"""Where a model comes from: a local directory, a .gguf file, the embedded demo model, or a hub id.

Resolved once per run, before anything is loaded, so that a wrong path or an unreachable hub is
one sentence at the start rather than a traceback after minutes of work.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .gguf_source import materialize
from .hub import is_local_reference, require_hub

LOCAL_MODEL_HINT = "pass a local model directory as --model_name_or_path, or try `qwentune demo` (no model hub needed)."


def resolve_model_source(name: str) -> str:
    """A local model directory as is; the embedded demo model or a .gguf file as its converted directory;
    a hub id if it is in the local hub cache or the hub is reachable. UserError otherwise."""
    name = materialize(name)
    if is_local_reference(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise UserError(f"{name}: model directory not found; check --model_name_or_path.")
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a model directory (no config.json); point --model_name_or_path at one.")
        return str(path)
    from huggingface_hub import try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name
    except ValueError:  # huggingface_hub's HFValidationError: not a valid id; the hub check below says so
        pass
    require_hub(f"model '{name}'", LOCAL_MODEL_HINT)
    return name
