"""Fold a LoRA adapter into its base model and save a plain transformers model (safetensors)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..fsutil import atomic_output_dir
from ..models.load import LoadedModel
from ..models.tokenizer import save_generation_config


def merge_adapter(loaded: LoadedModel, output_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Merge and save into output_dir (written whole or not at all); returns output_dir.

    Load `loaded` in fp32 for merging, so W + BA is computed exactly, then pass the dtype to store it in.
    """
    if loaded.description.get("kind") == "merged":  # a merged directory or a GGUF model given as --adapter_path
        raise UserError(f"{loaded.description['finetuned']}: already a whole model, with no adapter to merge; "
                        f"use it as it is.")
    if not loaded.has_adapter:
        raise UserError("--merge needs an adapter (--adapter_path) to merge into the base model.")
    merged = loaded.model.merge_and_unload()
    if dtype is not None:
        merged = merged.to(dtype)
    with atomic_output_dir(output_dir) as tmp:
        merged.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        save_generation_config(merged, loaded.tokenizer, tmp)
    return Path(output_dir)
