"""Load a tokenizer from a local directory or the hub, ready for chat fine-tuning.

Two Qwen facts shape this module. Base checkpoints (Qwen2-0.5B) say eos is
`<|endoftext|>` while the chat template ends every turn with `<|im_end|>`; Instruct
checkpoints say eos is `<|im_end|>`. We train on, and stop at, the end-of-turn token
the template actually writes, whatever eos says. And padding must never be confused
with it: labels are built by position, never by comparing token ids with pad.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .gguf_source import materialize
from .hub import is_local_reference, modelscope_snapshot, require_hub, selected_hub

# Chat templates qwentune ships (package data, with their sources named inside): chatml.jinja is
# Qwen2's ChatML, for tokenizers that ship without a template (older Qwen base checkpoints).
TEMPLATES = Path(__file__).resolve().parent / "templates"
CHATML_TEMPLATE = (TEMPLATES / "chatml.jinja").read_text(encoding="utf-8")

LOCAL_HINT = "pass a local tokenizer or model directory instead (e.g. --tokenizer_name ./models/Qwen2-0.5B)."


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """AutoTokenizer with a chat template and a pad token guaranteed; UserError on any failure."""
    from transformers import AutoTokenizer

    name_or_path = materialize(name_or_path)  # the embedded demo model or a .gguf file: a converted directory
    path = Path(name_or_path).expanduser()
    if is_local_reference(name_or_path):
        if not path.is_dir():
            raise UserError(f"{name_or_path}: tokenizer directory not found; check the path or use a hub id.")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:  # missing or unreadable vocabulary / config files
            raise UserError(
                f"{path}: cannot load a tokenizer from this directory ({str(exc).splitlines()[0]}); it needs "
                f"tokenizer_config.json and the vocabulary files (tokenizer.json, or vocab.json + merges.txt)."
            ) from None
    else:
        tokenizer = _load_from_hub(name_or_path, trust_remote_code)
    return prepare_tokenizer(tokenizer, name_or_path)


def _load_from_hub(hub_id: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    if selected_hub() == "modelscope":  # --hub modelscope: the repository's local copy, loaded as a directory
        local = modelscope_snapshot(hub_id, f"tokenizer '{hub_id}'", LOCAL_HINT)
        return AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
    try:  # already in the local hub cache: no network needed
        return AutoTokenizer.from_pretrained(hub_id, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # not cached (huggingface_hub's errors are OSError or ValueError)
        pass
    require_hub(f"tokenizer '{hub_id}'", LOCAL_HINT)
    try:
        return AutoTokenizer.from_pretrained(hub_id, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # not on the hub, gated, or not a tokenizer
        raise UserError(f"cannot load tokenizer '{hub_id}' from the hub ({str(exc).splitlines()[0]}); check the id.") from None


def prepare_tokenizer(tokenizer, source: str = "tokenizer"):
    """Give the tokenizer a chat template and a pad token if it lacks them."""
    if not tokenizer.chat_template:
        if "<|im_start|>" not in tokenizer.get_vocab():
            raise UserError(
                f"{source}: the tokenizer has no chat template and no ChatML tokens; use a chat or Qwen tokenizer."
            )
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else tokenizer.eos_token
    return tokenizer


def check_tokenizer_fits(tokenizer, tokenizer_name: str, embedding_rows: int, model_name: str,
                         max_token_id: int | None = None) -> None:
    """UserError when the tokenizer can give ids the model has no embedding row for: len(tokenizer), or the
    largest id actually used (`max_token_id`, of tokenized data), beyond `embedding_rows` (the model's input
    embedding, config.vocab_size) would fail deep in the embedding lookup (an IndexError or a CUDA assert)."""
    needed = max(len(tokenizer), (max_token_id or 0) + 1)
    if needed > embedding_rows:
        raise UserError(f"the tokenizer {tokenizer_name} has {needed} tokens but the model {model_name}'s embedding has "
                        f"{embedding_rows} rows; use the model's own tokenizer (drop --tokenizer_name).")


def control_tokens(tokenizer) -> tuple[str, ...]:
    """Special-token texts (`<|im_start|>`, `<|im_end|>`, ...): they must never come from message contents."""
    special = set(tokenizer.all_special_tokens)
    special |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return tuple(sorted(special))


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant reply (`<|im_end|>` for Qwen)."""
    probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "ZQXJ"}]
    rendered = tokenizer.apply_chat_template(probe, tokenize=False)
    tail = rendered[rendered.rfind("ZQXJ") + len("ZQXJ"):]
    special = set(control_tokens(tokenizer))
    return next((token for token in tokenizer.tokenize(tail) if token in special), None)


def stop_token_ids(tokenizer) -> list[int]:
    """Ids generation stops at: the end-of-turn token the template writes, and eos (once each)."""
    tokens = [end_of_turn_token(tokenizer), tokenizer.eos_token]
    return list(dict.fromkeys(tokenizer.convert_tokens_to_ids(t) for t in tokens if t))


def align_special_tokens(model, tokenizer) -> None:
    """Give the model's config and generation config the tokenizer's special tokens: eos (with the
    end-of-turn token, so generation stops there too), and bos and pad where the tokenizer has them.

    transformers' Trainer aligns eos, bos and pad the same way when they differ (trainer_utils.
    align_special_tokens), printing a warning; done here, the model says what qwentune trains it for.
    """
    stops = stop_token_ids(tokenizer)
    for config in (model.config, model.generation_config):
        config.eos_token_id = stops
        for name in ("bos_token_id", "pad_token_id"):
            if getattr(tokenizer, name) is not None:
                setattr(config, name, getattr(tokenizer, name))


def save_generation_config(model, tokenizer, directory) -> None:
    """generation_config.json whose stop tokens include the end-of-turn token (and eos)."""
    align_special_tokens(model, tokenizer)
    model.generation_config.save_pretrained(directory)
