"""The tokenizer inside a GGUF file: byte-level BPE ("gpt2" in llama.cpp's terms) with its whole vocabulary, merges,
special tokens, chat template, and the end-of-turn token llama.cpp stops at.

llama.cpp does not run the tokenizer.json pre-tokenizer; it picks a built-in split regex by the name in
tokenizer.ggml.pre (llama-vocab.cpp). The name is derived here from the tokenizer's own pre-tokenizer, so a
tokenizer whose splitting llama.cpp has no name for is refused rather than silently tokenized differently.
"""

from __future__ import annotations

import json

import gguf

from ..errors import UserError
from ..models.tokenizer import end_of_turn_token

# The split regexes of tokenizer.json files -> llama.cpp's name for the same split (llama-vocab.cpp lists the
# regex each name runs; transformers' GGUF reader maps the names back the same way).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_NAMES = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}


def _describe(step: dict) -> str:
    return step.get("type", "?") + (f"({step['pattern']})" if "pattern" in step else "")


def _spec(tokenizer) -> dict:
    """The tokenizer's tokenizer.json content (the `tokenizers` library's own serialization)."""
    return json.loads(tokenizer.backend_tokenizer.to_str())


def pre_tokenizer_name(tokenizer, spec: dict | None = None) -> str:
    """llama.cpp's tokenizer.ggml.pre name for this byte-level BPE tokenizer's pre-tokenizer:

    - Split(Qwen2's regex, isolated) + ByteLevel(no regex) -> "qwen2" (Qwen2, Qwen2.5, Qwen3);
    - Split(Llama 3's regex) + ByteLevel(no regex) -> "llama-bpe";
    - Digits(individual) + ByteLevel(GPT-2 regex) -> "smollm" (each digit alone, then GPT-2's split: SmolLM2);
    - ByteLevel(GPT-2 regex) alone -> "gpt-2" (llama.cpp spells it with the hyphen; "gpt2" is refused).
    Raises UserError naming any other pre-tokenizer, or one that adds a prefix space (llama.cpp's BPE adds none).
    """
    pre = (spec or _spec(tokenizer)).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    byte_level = steps[-1] if steps and kinds[-1] == "ByteLevel" else None
    name = None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        gpt2_regex = byte_level.get("use_regex", True)
        if kinds == ["ByteLevel"] and gpt2_regex:
            name = "gpt-2"
        elif kinds == ["Digits", "ByteLevel"] and gpt2_regex and steps[0].get("individual_digits"):
            name = "smollm"
        elif kinds == ["Split", "ByteLevel"] and not gpt2_regex and not steps[0].get("invert") \
                and str(steps[0].get("behavior", "")).lower() == "isolated":
            name = SPLIT_NAMES.get((steps[0].get("pattern") or {}).get("Regex"))
    if name is None:
        described = " + ".join(_describe(step) for step in steps) or "none"
        raise UserError(f"GGUF export: the tokenizer's pre-tokenizer {described} has no llama.cpp equivalent that "
                        f"qwentune knows (Qwen2/Qwen3, Llama 3, SmolLM2 and GPT-2 splits), so llama.cpp would "
                        f"tokenize differently; merge with `qwentune infer --merge DIR` and convert DIR with llama.cpp's converter.")
    return name


def vocabulary(tokenizer, rows: int) -> tuple[list[str], list[int]]:
    """(tokens, token types) for ids 0..rows-1: the byte-level vocabulary and the added tokens in id order, control
    for special ones and user-defined for the others (llama.cpp matches both whole in text), and "[PAD<id>]"
    (user-defined, as llama.cpp's converter writes them) for embedding rows past the tokenizer (Qwen2's embedding
    has 151936 rows for ~151646 tokens). Raises UserError when the tokenizer has ids beyond `rows`."""
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= rows:
        raise UserError(f"GGUF export: the tokenizer has token id {max(by_id)} but the model's embedding has {rows} "
                        f"rows; export with the model's own tokenizer.")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(rows):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.USER_DEFINED)
        elif index in added:
            tokens.append(added[index].content)
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def merges(tokenizer, spec: dict | None = None) -> list[str]:
    """The BPE merges as llama.cpp stores them, "left right" in priority order."""
    found = (spec or _spec(tokenizer))["model"].get("merges") or []
    return [pair if isinstance(pair, str) else " ".join(pair) for pair in found]


def _adds(tokenizer, token_id: int | None, at_start: bool) -> bool:
    """Whether the tokenizer puts token_id at the start (or end) of a plain encoded text."""
    if token_id is None:
        return False
    ids = tokenizer("Hi")["input_ids"]
    return bool(ids) and ids[0 if at_start else -1] == token_id


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, rows: int) -> None:
    """Put the whole tokenizer into `writer`'s key-values for a model whose embedding has `rows` rows.

    eos stays the tokenizer's own; tokenizer.ggml.eot_token_id is the token the chat template ends a turn with
    (<|im_end|>), so llama.cpp stops there also for Qwen base checkpoints whose eos is <|endoftext|>. Raises
    UserError for a tokenizer that is not a fast byte-level BPE one, and as pre_tokenizer_name and vocabulary do.
    """
    spec = _spec(tokenizer) if getattr(tokenizer, "backend_tokenizer", None) is not None else {}
    model_type = spec.get("model", {}).get("type")
    if model_type != "BPE" or "ByteLevel" not in json.dumps(spec.get("decoder")):
        raise UserError(f"GGUF export: the tokenizer ({type(tokenizer).__name__}, model {model_type}) is not a "
                        f"byte-level BPE tokenizer, the only kind qwentune writes as GGUF (Qwen, Llama 3, SmolLM2).")
    tokens, types = vocabulary(tokenizer, rows)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer, spec))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges(tokenizer, spec))
    for token_id, add in ((tokenizer.bos_token_id, writer.add_bos_token_id),
                          (tokenizer.eos_token_id, writer.add_eos_token_id),
                          (tokenizer.unk_token_id, writer.add_unk_token_id),
                          (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(_adds(tokenizer, tokenizer.bos_token_id, at_start=True))
    writer.add_add_eos_token(_adds(tokenizer, tokenizer.eos_token_id, at_start=False))
    if isinstance(tokenizer.chat_template, str) and tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
        turn_end = end_of_turn_token(tokenizer)
        if turn_end is not None:
            writer.add_eot_token_id(tokenizer.convert_tokens_to_ids(turn_end))
