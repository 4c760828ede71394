"""The one way qwentune loads a model: for training, for answering, for evaluating and for comparing.

Every caller resolves the source once (source.py), chooses a precision once (precision.py) and comes
here. For answering, a LoRA adapter is attached to the base rather than merged into it, so one copy
of the base weights serves both sides of a comparison: with the adapter switched off, the very same
weights are exactly the base model (tested bit for bit), at no extra memory.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..fsutil import numbered_checkpoints, read_json_object
from . import import_peft, peft_checkpointing_probe_quiet
from .gguf_source import materialize
from .hub import is_local_reference
from .lora_precision import add_lora_inside_base_multiply
from .precision import Precision, choose_precision
from .source import resolve_model_source
from .tokenizer import check_tokenizer_fits, load_tokenizer, stop_token_ids


def load_model(source: str, precision: Precision, *, quantization=None, attn_implementation: str = "sdpa",
               trust_remote_code: bool = False):
    """AutoModelForCausalLM from a resolved `source` (see resolve_model_source), on precision.device in
    precision.dtype; `quantization` is a transformers BitsAndBytesConfig or None. UserError when the
    files cannot be read as a causal LM."""
    from transformers import AutoModelForCausalLM

    device = precision.device
    if device == "cuda":  # one card per process under torchrun / accelerate launch
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=precision.dtype, quantization_config=quantization, trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation, device_map={"": device} if quantization is not None else None)
    except (OSError, ValueError) as exc:  # missing or unreadable files, an unknown architecture
        raise UserError(f"cannot load model '{source}' ({str(exc).splitlines()[0]}); check --model_name_or_path.") from None
    if quantization is None:
        model.to(device)
    return model


def quantization_config(use_4bit: bool, precision: Precision):
    """NF4 with double quantization (the QLoRA recipe, bitsandbytes); None without use_4bit."""
    if not use_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError('model.use_4bit needs bitsandbytes: pip install -e ".[qlora]", or set use_4bit: false.') from None
    if precision.device == "mps":
        raise UserError("model.use_4bit is not supported on Apple MPS by bitsandbytes; set use_4bit: false.")
    import torch
    from transformers import BitsAndBytesConfig

    compute = precision.dtype if precision.dtype != torch.float16 or precision.device == "cuda" else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


@dataclass
class LoadedModel:
    """A model ready to answer: the base, base + adapter, or a merged model, with its tokenizer."""

    model: object
    tokenizer: object
    has_adapter: bool
    description: dict = field(default_factory=dict)  # what was loaded, for reports

    @property
    def stop_ids(self) -> list[int]:
        return stop_token_ids(self.tokenizer)

    @contextlib.contextmanager
    def adapter(self, enabled: bool):
        """Run the block with the adapter on (the fine-tuned model) or off (the base model)."""
        if not enabled and self.description.get("kind") == "merged":
            raise UserError("a merged model has no adapter to switch off; load the base model separately.")
        if enabled or not self.has_adapter:
            yield
        else:
            with self.model.disable_adapter():
                yield


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _fine_tuned_file(path: Path, log=print) -> tuple[str, Path, str]:
    """A file given as the fine-tuned side: a GGUF model is a whole model (like a merged directory),
    converted once to safetensors; anything else is one sentence saying what to give instead."""
    if path.suffix.lower() == ".gguf":
        return "merged", Path(materialize(str(path), log)), f"the whole model in the GGUF file {path} (not an adapter), converted once to"
    if path.name in ADAPTER_FILES:
        raise UserError(f"{path}: a file of an adapter; give the directory that holds it ({path.parent}).")
    raise UserError(f"{path}: a file, not an adapter; give an adapter directory (with adapter_config.json), a training "
                    f"output directory, or a whole model (a model directory or a .gguf file).")


def find_adapter(path: str | Path, log=print) -> tuple[str, Path, str]:
    """What a fine-tuned path holds: ("adapter" | "merged", directory, how it was chosen).

    A training output directory gives its final adapter, else the best checkpoint by eval loss
    (run_summary.json's best_checkpoint, a checkpoint of this directory by name), else the newest
    checkpoint; a best checkpoint that is not there is a UserError, never another checkpoint instead.
    A directory with a model (config.json) or a GGUF model file is a whole ("merged") model; a GGUF file
    is converted once to a model directory (gguf_source), and a GGUF LoRA adapter is refused. UserError
    for anything else.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return _fine_tuned_file(path, log)
    if not path.is_dir():
        raise UserError(f"{path}: not found; give an adapter directory, a training output directory or a model.")
    if (path / "adapter_config.json").is_file():
        return "adapter", path, "the adapter in this directory"
    if (path / "config.json").is_file():
        return "merged", path, "a full (merged) model"
    summary_file = path / "run_summary.json"
    if summary_file.is_file():
        best = json.loads(summary_file.read_text(encoding="utf-8")).get("best_checkpoint")
        if best:
            # Saved as "checkpoint-8"; older versions saved the output directory as typed in front of it
            # ("stl/int/checkpoint-8"), relative to where training ran: either way, the checkpoint of this run.
            checkpoint = path / Path(best).name
            if not (checkpoint / "adapter_config.json").is_file():
                raise UserError(
                    f"{summary_file}: the best checkpoint it names, {checkpoint}, is missing or holds no adapter; "
                    f"restore it, or give a checkpoint directory as the adapter path."
                )
            return "adapter", checkpoint, "the best checkpoint by eval loss"
    candidates = [p for p in numbered_checkpoints(path) if (p / "adapter_config.json").is_file()]
    if candidates:
        return "adapter", candidates[-1], "the newest checkpoint (no final adapter yet)"
    raise UserError(f"{path}: holds no adapter (adapter_config.json), checkpoint or model; check the path.")


def check_adapter_files(directory: Path) -> None:
    """UserError naming the file when an adapter directory cannot be what peft loads: adapter_config.json
    that is not a JSON object, no weights file next to it (peft would then look for them on the hub), or
    an adapter_model.safetensors that safetensors cannot open (damaged, cut short, not safetensors)."""
    read_json_object(directory / "adapter_config.json", "restore it from the training output, or train again.")
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        if (directory / "adapter_model.bin").is_file():
            return
        raise UserError(f"{directory}: holds adapter_config.json but no adapter weights (adapter_model.safetensors); "
                        f"copy the weights file next to it, or give the training output directory.")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except SafetensorError as exc:
        raise UserError(f"{weights}: not a readable safetensors file ({str(exc).splitlines()[0][:200]}); it is "
                        f"damaged or incomplete: copy it again, or train again.") from None


def load_for_inference(base: str, finetuned: str | None = None, precision: Precision | None = None,
                       trust_remote_code: bool = False, log=print, base_option: str = "--model_name_or_path"
                       ) -> LoadedModel:
    """The base model, with the fine-tuned adapter attached when `finetuned` is an adapter
    (precision: default choose_precision(), bf16 where the hardware has it); `base_option`: the flag
    that gave `base`, named in messages about it."""
    precision = precision or choose_precision()
    kind, location, how = find_adapter(finetuned, log) if finetuned else ("base", None, "")
    source = str(location) if kind == "merged" else resolve_model_source(base, base_option)
    # The tokenizer saved with the adapter (qwentune saves it) wins; a bare adapter uses the base's.
    has_own_tokenizer = location is not None and (location / "tokenizer_config.json").is_file()
    tokenizer_source = str(location) if has_own_tokenizer else source
    tokenizer = load_tokenizer(tokenizer_source, trust_remote_code)
    model = load_model(source, precision, trust_remote_code=trust_remote_code)
    check_tokenizer_fits(tokenizer, tokenizer_source, model.get_input_embeddings().num_embeddings, source)
    if kind == "adapter":
        check_adapter_files(location)
        try:
            with peft_checkpointing_probe_quiet():
                model = import_peft().PeftModel.from_pretrained(model, str(location))
        except (RuntimeError, ValueError, KeyError) as exc:  # shapes or module names that do not match the base
            raise UserError(
                f"{location}: this adapter does not fit base model '{base}' ({str(exc).splitlines()[0][:200]}); "
                f"give the base model it was trained on (see base_model_name_or_path in adapter_config.json)."
            ) from None
        add_lora_inside_base_multiply(model)  # bf16 / fp16 weights would otherwise round much of the adapter away
    if finetuned:
        log(f"fine-tuned side: {how}: {location}")
    model.eval()
    # Recorded in metrics.json and comparison reports, which are read from elsewhere: local paths absolute.
    return LoadedModel(model, tokenizer, kind == "adapter",
                       {"base": str(Path(base).expanduser().resolve()) if is_local_reference(base) else base,
                        "finetuned": str(location.resolve()) if location else None, "kind": kind,
                        "dtype": str(precision.dtype).replace("torch.", ""), "device": precision.device})
