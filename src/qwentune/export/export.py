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

from ..config import Config
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


def check_export_dir(output_dir: str | Path, option: str = "--output_dir") -> None:
    """Refuse, before the model loads, an output directory that is a file or holds anything but an earlier export
    (UserError naming `option`, what chose the directory)."""
    check_output_dir(output_dir, EXPORT, option)


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
           system_prompt: str | None = None, log=print, option: str = "--output_dir") -> ExportResult:
    """Write the GGUF files (model-<type>.gguf, or base-<type>.gguf + adapter.gguf with lora_only), the
    Modelfile and the record into output_dir; with verify, compare greedy replies to `conversations`.

    `loaded` must be in fp32 (load_for_inference with choose_precision(bf16=False, fp16=False)); it is
    merged in place. UserError: lora_only without an adapter, an output_dir check_export_dir refuses.
    """
    check_export_dir(output_dir, option)
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
    with atomic_output_dir(output_dir, EXPORT, option) as tmp:
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


def run_export(cfg: Config, output_dir: str | Path, gguf_types: list[str], *, prompts_file: str | None = None,
               max_new_tokens: int = 64, lora_only: bool = False, verify: bool = True, command: str = "export",
               option: str = "--output_dir", log=print) -> ExportResult:
    """`qwentune export` as a function: cfg's model and adapter (verify.verification_inputs: fp32, the prompts
    of prompts_file or the demo's, the run's system prompt) exported into output_dir as `gguf_types`.

    The types and output_dir are checked before the model loads, and output_dir is held (fsutil.hold_output)
    until it is written: UserError naming `option` when another task is writing it. Other UserErrors: as
    check_gguf_types, verification_inputs and export say."""
    from ..fsutil import hold_output
    from .verify import check_max_new_tokens, verification_inputs

    check_max_new_tokens(max_new_tokens, command)
    types = check_gguf_types(gguf_types)
    check_export_dir(output_dir, option)
    with hold_output(output_dir, option):
        loaded, conversations, system = verification_inputs(cfg, prompts_file, max_new_tokens, command, log)
        return export(loaded, output_dir, types, conversations, lora_only=lora_only, verify=verify,
                      max_new_tokens=max_new_tokens, system_prompt=system, log=log, option=option)


def report_lines(result: ExportResult) -> list[str]:
    """What an export wrote and how it verified, as `qwentune export` prints it: each file with its size, type
    and seconds, the Ollama command for the Modelfile, the notes, and the verification table."""
    from .verify import format_table

    lines = [f"{result.output_dir / name}: {info['bytes'] / 1e6:.1f} MB ({info['type']}, {info['seconds']} s)"
             for name, info in result.files.items()]
    lines.append(f"{result.output_dir / 'Modelfile'}: ollama create my-model -f {result.output_dir / 'Modelfile'}")
    lines += [f"note: {note}" for note in result.notes]
    if result.reference is not None:
        lines.append(format_table(result.reference, result.agreements))
    return lines
