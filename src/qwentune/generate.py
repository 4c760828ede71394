"""Load a model for answering (base, base + adapter, or merged), and generate: batched or streamed.

One loaded base serves both sides of a comparison: with a LoRA adapter attached,
`adapter=False` runs the very same weights with the adapter switched off, which is
exactly the base model (tested bit for bit) at no extra memory.
Generation always stops at the end-of-turn token as well as at eos: Qwen base models say
eos is <|endoftext|>, but a chat reply ends with <|im_end|>.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .config import GenerationConfig
from .errors import UserError


@dataclass
class Answer:
    text: str
    new_tokens: int
    seconds: float
    stopped: bool  # ended at an end-of-turn / eos token, not at max_new_tokens


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    has_adapter: bool
    description: dict = field(default_factory=dict)  # what was loaded, for reports

    @property
    def stop_ids(self) -> list[int]:
        from .tokenizer import end_of_turn_token

        tokens = [end_of_turn_token(self.tokenizer), self.tokenizer.eos_token]
        return list(dict.fromkeys(self.tokenizer.convert_tokens_to_ids(t) for t in tokens if t))

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


def find_adapter(path: str | Path) -> tuple[str, Path, str]:
    """What a fine-tuned path holds: ("adapter" | "merged", directory, how it was chosen).

    A training output directory gives its final adapter, else the best checkpoint by eval loss
    (from run_summary.json), else the newest checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{path}: not found; give an adapter directory, a training output directory or a model.")
    if (path / "adapter_config.json").is_file():
        return "adapter", path, "the adapter in this directory"
    if (path / "config.json").is_file():
        return "merged", path, "a full (merged) model"
    summary_file = path / "run_summary.json"
    if summary_file.is_file():
        best = json.loads(summary_file.read_text(encoding="utf-8")).get("best_checkpoint")
        if best and (Path(best) / "adapter_config.json").is_file():
            return "adapter", Path(best), "the best checkpoint by eval loss"
    from .fsutil import numbered_checkpoints

    candidates = [p for p in numbered_checkpoints(path) if (p / "adapter_config.json").is_file()]
    if candidates:
        return "adapter", candidates[-1], "the newest checkpoint (no final adapter yet)"
    raise UserError(f"{path}: holds no adapter (adapter_config.json), checkpoint or model; check the path.")


def inference_dtype(device: str) -> torch.dtype:
    from .model import cpu_has_native_bf16

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.float16


def load_for_inference(base: str, finetuned: str | None = None, dtype: torch.dtype | None = None,
                       trust_remote_code: bool = False, log=print) -> LoadedModel:
    """The base model, with the fine-tuned adapter attached when `finetuned` is an adapter."""
    from transformers import AutoModelForCausalLM

    from .model import detect_device, resolve_model_source
    from .tokenizer import load_tokenizer

    device = detect_device()
    dtype = dtype or inference_dtype(device)
    kind, location, how = find_adapter(finetuned) if finetuned else ("base", None, "")
    source = str(location) if kind == "merged" else resolve_model_source(base)
    # The tokenizer saved with the adapter (qwentune saves it) wins; a bare adapter uses the base's.
    has_own_tokenizer = location is not None and (location / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(location) if has_own_tokenizer else source, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise UserError(f"cannot load model '{source}' ({str(exc).splitlines()[0]}).") from None
    if kind == "adapter":
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(location))
        except Exception as exc:
            raise UserError(
                f"{location}: this adapter does not fit base model '{base}' ({str(exc).splitlines()[0][:200]}); "
                f"give the base model it was trained on (see base_model_name_or_path in adapter_config.json)."
            ) from None
    if finetuned:
        log(f"fine-tuned side: {how}: {location}")
    model.to(device).eval()
    return LoadedModel(model, tokenizer, kind == "adapter",
                       {"base": base, "finetuned": str(location) if location else None, "kind": kind,
                        "dtype": str(dtype).replace("torch.", ""), "device": device})


def _generation_kwargs(loaded: LoadedModel, settings: GenerationConfig) -> dict:
    kwargs = dict(max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                  repetition_penalty=settings.repetition_penalty, eos_token_id=loaded.stop_ids,
                  pad_token_id=loaded.tokenizer.pad_token_id)
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:  # greedy: make sure a model's own sampling defaults do not switch it back on
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def prompt_text(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_length(tokenizer, messages: list[dict[str, str]]) -> int:
    return len(tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"])


def reply_text(tokenizer, ids: list[int], stopped: bool) -> str:
    """The reply's text. A reply cut at max_new_tokens can end inside a multi-byte character (Qwen's
    tokens are bytes), which decodes to U+FFFD; that half character is dropped."""
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return text if stopped else text.rstrip("\ufffd").rstrip()


@torch.no_grad()
def generate_batch(loaded: LoadedModel, conversations: list[list[dict[str, str]]], settings: GenerationConfig,
                   adapter: bool = True, seed: int = 42) -> list[Answer]:
    """Answer each conversation (its last message is the user's); left-padded batch, one generate call."""
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"  # generation continues at the right edge of every row
    encoded = tokenizer([prompt_text(tokenizer, c) for c in conversations], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(loaded.model.device)
    torch.manual_seed(seed)
    started = time.perf_counter()
    with loaded.adapter(adapter):
        output = loaded.model.generate(**encoded, **_generation_kwargs(loaded, settings))
    seconds = time.perf_counter() - started
    new = output[:, encoded["input_ids"].shape[1]:]
    stops = set(loaded.stop_ids)
    answers = []
    for row in new.tolist():
        end = next((i for i, token in enumerate(row) if token in stops), None)
        kept = row[:end] if end is not None else row
        answers.append(Answer(reply_text(tokenizer, kept, stopped=end is not None), len(kept),
                              seconds / len(conversations), end is not None))
    return answers


def stream(loaded: LoadedModel, messages: list[dict[str, str]], settings: GenerationConfig, adapter: bool = True,
           seed: int = 42) -> Iterator[str]:
    """Yield the reply's text piece by piece as it is generated (greedy: the same text as generate_batch)."""
    from transformers import TextIteratorStreamer

    tokenizer = loaded.tokenizer
    encoded = tokenizer([prompt_text(tokenizer, messages)], return_tensors="pt",
                        add_special_tokens=False).to(loaded.model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            torch.manual_seed(seed)
            with torch.no_grad(), loaded.adapter(adapter):
                loaded.model.generate(**encoded, streamer=streamer, **_generation_kwargs(loaded, settings))
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if errors:
        raise errors[0]


def save_generation_config(model, tokenizer, directory: str | Path) -> None:
    """generation_config.json whose stop tokens include the end-of-turn token (and eos)."""
    from .tokenizer import end_of_turn_token

    generation = model.generation_config
    stops = [tokenizer.convert_tokens_to_ids(t) for t in (end_of_turn_token(tokenizer), tokenizer.eos_token) if t]
    generation.eos_token_id = list(dict.fromkeys(stops))
    generation.pad_token_id = tokenizer.pad_token_id
    generation.save_pretrained(directory)


def merge_adapter(loaded: LoadedModel, output_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Fold the adapter into the base weights and save a plain transformers model (safetensors).

    Load in fp32 for merging (W + BA computed exactly), then pass the dtype to store it in.
    """
    from .fsutil import atomic_output_dir

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
