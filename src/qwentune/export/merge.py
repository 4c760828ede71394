"""Fold a LoRA adapter into its base model and save a plain transformers model (safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from ..fsutil import OutputKind, atomic_output_dir, check_output_dir
from ..models.load import LoadedModel
from ..models.tokenizer import save_generation_config

# The merge's own record (what was merged, in which dtype) also marks a directory as a merged output: an
# existing --merge directory is replaced only when it holds one, never a directory with the user's files.
MERGE_RECORD = "qwentune_merge.json"
MERGED = OutputKind("merged model", ("config.json", MERGE_RECORD))
# --merge_dtype's choices: the precision the merged weights are stored in.
MERGE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def check_merge_dir(output_dir: str | Path, option: str = "--merge") -> None:
    """Refuse, before the model loads, a merge path that is a file or a directory holding anything but a
    previous merged model (UserError naming `option`, what chose the path)."""
    check_output_dir(output_dir, MERGED, option)


def merge_model(base: str, adapter: str | None, output_dir: str | Path, dtype_name: str = "bf16",
                trust_remote_code: bool = False, log=print, option: str = "--merge") -> Path:
    """What `qwentune infer --merge DIR --merge_dtype NAME` does: load `base` with `adapter` in fp32 (so W + BA
    is exact), merge, and save into output_dir with the weights in `dtype_name` (a MERGE_DTYPES name); returns
    output_dir. The caller checks (check_merge_dir) and holds (fsutil.hold_output) output_dir from before this
    call. UserError: no adapter, an adapter that is already a whole model, and load_for_inference's own."""
    from ..models.load import load_for_inference
    from ..models.precision import choose_precision

    if not adapter:
        raise UserError(f"{option} needs an adapter (--adapter_path) to merge into the base model.")
    if dtype_name not in MERGE_DTYPES:
        raise UserError(f"{option}: unknown merge dtype {dtype_name!r}; choose one of {', '.join(MERGE_DTYPES)}.")
    loaded = load_for_inference(base, adapter, choose_precision(bf16=False, fp16=False), trust_remote_code, log=log)
    return merge_adapter(loaded, output_dir, dtype=MERGE_DTYPES[dtype_name], option=option)


def merge_adapter(loaded: LoadedModel, output_dir: str | Path, dtype: torch.dtype | None = None,
                  option: str = "--merge") -> Path:
    """Merge and save into output_dir (written whole or not at all); returns output_dir.

    Load `loaded` in fp32 for merging, so W + BA is computed exactly, then pass the dtype to store it in.
    Besides the model, tokenizer and generation config, MERGE_RECORD says what was merged. Raises UserError
    for a whole model without an adapter, and for an output_dir check_merge_dir refuses.
    """
    check_merge_dir(output_dir, option)
    if loaded.description.get("kind") == "merged":  # a merged directory or a GGUF model given as --adapter_path
        raise UserError(f"{loaded.description['finetuned']}: already a whole model, with no adapter to merge; "
                        f"use it as it is.")
    if not loaded.has_adapter:
        raise UserError(f"{option} needs an adapter (--adapter_path) to merge into the base model.")
    merged = loaded.model.merge_and_unload()
    if dtype is not None:
        merged = merged.to(dtype)
    with atomic_output_dir(output_dir, MERGED, option) as tmp:
        merged.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        save_generation_config(merged, loaded.tokenizer, tmp)
        record = {"base": loaded.description.get("base"), "adapter": loaded.description.get("finetuned"),
                  "dtype": str(merged.dtype).removeprefix("torch.")}
        (tmp / MERGE_RECORD).write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return Path(output_dir)
