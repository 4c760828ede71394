"""`qwentune export`: the fine-tuned model as GGUF files for llama.cpp / Ollama / LM Studio, an Ollama
Modelfile beside them, and a check that they answer as the adapter does (verify.py).

One model is held in memory, in fp32: the adapter's greedy replies are taken first, then the adapter
is merged into the base (W + BA in fp32), the GGUF files are written from the merged weights, and the
merged model and each GGUF file (in llama.cpp) answer the same prompts. With lora_only the base is
written without the adapter, and the adapter as a GGUF LoRA that llama.cpp (`--lora`) and Ollama
(`ADAPTER`) apply on top of it.

The output directory is written whole or not at all; qwentune_export.json records what was written,
the sizes, the seconds each file took and the verification table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..fsutil import OutputKind, atomic_output_dir, check_output_dir
from ..models.load import LoadedModel
from .gguf import check_gguf_type, check_writable, write_gguf
from .gguf_lora import write_lora_gguf
from .llama_quantize import K_QUANTS, check_k_quant, quantize_gguf
from .modelfile import modelfile_text
from .verify import Agreement, Replies, agreement, gguf_replies, replies_before_merge, transformers_replies

EXPORT_RECORD = "qwentune_export.json"
EXPORT = OutputKind("GGUF export", (EXPORT_RECORD,))


def check_gguf_types(types: list[str]) -> list[str]:
    """The requested types, each once, in order; UserError for a type we cannot write (GGUF_TYPES)."""
    if not types:
        raise UserError("--gguf_type: give at least one type, e.g. --gguf_type q8_0.")
    for name in types:
        if name.lower() in K_QUANTS:
            check_k_quant(name.lower())
        else:
            check_gguf_type(name)
    return list(dict.fromkeys(name.lower() for name in types))


def check_exportable(loaded: LoadedModel, lora_only: bool) -> None:
    """UserError, before minutes of work, for a model or tokenizer write_gguf would refuse, and lora_only
    without an adapter."""
    if lora_only and not loaded.has_adapter:
        raise UserError("--lora_only writes the adapter as a GGUF LoRA; give --adapter_path with an adapter.")
    model = loaded.model.get_base_model() if loaded.has_adapter else loaded.model
    check_writable(model, loaded.tokenizer)


def check_export_dir(output_dir: str | Path) -> None:
    """Refuse, before the model loads, an --output_dir that is a file or holds anything but an earlier export."""
    check_output_dir(output_dir, EXPORT, "--output_dir")


@dataclass
class ExportResult:
    output_dir: Path
    files: dict[str, dict] = field(default_factory=dict)  # file name -> type, bytes, seconds
    agreements: list[Agreement] = field(default_factory=list)
    reference: Replies | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return not any(a.failed for a in self.agreements)


def _write_timed(result: ExportResult, folder: Path, name: str, kind: str, write) -> Path:
    started = time.perf_counter()
    path = write(folder / name)
    result.files[name] = {"type": kind, "bytes": path.stat().st_size,
                          "seconds": round(time.perf_counter() - started, 1)}
    return path


def export(loaded: LoadedModel, output_dir: str | Path, gguf_types: list[str], conversations: list[list[dict]],
           *, lora_only: bool = False, verify: bool = True, max_new_tokens: int = 64,
           system_prompt: str | None = None, log=print) -> ExportResult:
    """Write the GGUF files (model-<type>.gguf, or base-<type>.gguf + adapter.gguf with lora_only), the
    Modelfile and the record into output_dir; with verify, compare greedy replies to `conversations`.

    `loaded` must be in fp32 (load_for_inference with choose_precision(bf16=False, fp16=False)); it is
    merged in place. UserError: lora_only without an adapter, an output_dir check_export_dir refuses.
    """
    check_export_dir(output_dir)
    check_exportable(loaded, lora_only)
    prefix = "base" if lora_only else "model"
    names = {t: f"{prefix}-{t}.gguf" for t in gguf_types}
    adapter_name = "adapter.gguf" if lora_only else None
    modelfile, has_template = modelfile_text(names[gguf_types[0]], loaded.tokenizer, system_prompt, adapter_name)
    result = ExportResult(Path(output_dir))
    if not has_template:
        result.notes.append("the chat template is not one a Go template can reproduce message by message, so the "
                            "Modelfile has no TEMPLATE: Ollama reads the template from the GGUF itself")
    tokenizer = loaded.tokenizer
    sides: list[Replies] = []
    if verify:
        result.reference, sides = replies_before_merge(loaded, conversations, max_new_tokens, log=log)
    with atomic_output_dir(output_dir, EXPORT, "--output_dir") as tmp:
        if lora_only:
            _write_timed(result, tmp, adapter_name, "lora",
                         lambda path: write_lora_gguf(loaded.model, loaded.model.base_model.config, path))
            model = loaded.model.unload()  # the base without the adapter (peft: unload does not merge)
        else:
            model = loaded.model.merge_and_unload() if loaded.has_adapter else loaded.model
        for gguf_type in gguf_types:
            log(f"writing {names[gguf_type]}")
            if gguf_type in K_QUANTS:  # llama.cpp's quantizer, from an exact f32 file (written once, kept if asked)
                source = tmp / names.get("f32", f".{prefix}-f32.gguf")
                if not source.is_file():
                    write_gguf(model, tokenizer, source, "f32")
                _write_timed(result, tmp, names[gguf_type], gguf_type,
                             lambda path, t=gguf_type, s=source: quantize_gguf(s, path, t))
            else:
                _write_timed(result, tmp, names[gguf_type], gguf_type,
                             lambda path, t=gguf_type: write_gguf(model, tokenizer, path, t))
        (tmp / f".{prefix}-f32.gguf").unlink(missing_ok=True)
        (tmp / "Modelfile").write_text(modelfile, encoding="utf-8")
        if verify:
            if loaded.has_adapter and not lora_only:
                merged = LoadedModel(model, tokenizer, False, {**loaded.description, "kind": "merged"})
                sides.append(transformers_replies(merged, conversations, max_new_tokens, "merged", True))
            sides += gguf_replies([tmp / names[t] for t in gguf_types], tokenizer, conversations, max_new_tokens,
                                  result.notes, tmp / adapter_name if adapter_name else None, log)
            result.agreements = [agreement(result.reference, side, tokenizer) for side in sides]
        record = {"base": loaded.description.get("base"), "adapter": loaded.description.get("finetuned"),
                  "files": result.files, "modelfile_template": has_template, "notes": result.notes,
                  "verification": None if not verify else {
                      "reference": result.reference.name, "max_new_tokens": max_new_tokens,
                      "prompts": len(conversations),
                      "sides": [{"name": a.name, "agreed": a.agreed, "total": a.total, "same_start": a.same_start,
                                 "required_same_start": a.required,
                                 "first_difference": a.first_difference, "note": a.note} for a in result.agreements]}}
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return result
