"""`qwentune verify`: do the adapter on its base, the merged model, the GGUF in llama.cpp and the server answer alike?

Every side answers the same prompts greedily (no sampling, no repetition penalty: llama.cpp's penalty
counts a window of recent tokens, transformers' every token before) with replies of at most
max_new_tokens tokens, and is compared with the reference: the adapter on its base in fp32 (or the model
itself when there is no adapter). A pair agrees on a prompt when the replies are the same tokens (the
same text, for the server, which answers in text). The merged model (W + BA computed in fp32), the server (the
same weights) and GGUF files in f32 must give identical replies; f16 files must share 90% of the reference's tokens
before their replies part (REQUIRED_SAME_START: f16 rounding can only tip near ties); bf16 and quantized files round
the weights more, so their agreement is a rate to read, not a pass or fail.

llama.cpp runs through llama-cpp-python (an optional package that compiles llama.cpp): it tokenizes the
prompt text with the GGUF's own vocabulary and stops where its vocabulary says a turn ends, so the check
covers the exported tokenizer and stop tokens as well as the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Config, GenerationConfig
from ..errors import UserError
from ..inference.generate import answer_all, prompt_text
from ..models.load import LoadedModel
from ..shipped import shipped_file

# How much of the reference's tokens a GGUF file's replies must share before their first difference (1.0: identical
# replies). f32 computes what transformers computes. f16 keeps 11 significant bits: a reply can part only where two
# tokens were within rounding of each other (near ties: a 4-step demo adapter parted once in 20 replies, at token 17
# of 64), while a wrong export (weights, permutation, tokenizer) parts at once almost everywhere. Other types round
# more: their agreement is a rate to read.
REQUIRED_SAME_START = {"f32": 1.0, "f16": 0.9}
DEFAULT_PROMPTS = shipped_file("demo", "questions.json")  # the demo's 20 questions (apps.demo.DEMO_QUESTIONS)
LLAMA_CPP_HINT = "pip install llama-cpp-python (it compiles llama.cpp: minutes)"
# (model with its adapter, conversations, max new tokens) -> the server's greedy reply texts, adapter on.
ServerAnswers = Callable[[LoadedModel, list, int], list[str]]


@dataclass
class Replies:
    """One side's greedy replies, prompt by prompt."""

    name: str
    texts: list[str]
    tokens: list[tuple[int, ...]] | None  # None where only the text is known (the server)
    required: float | None  # the same start it must reach with the reference (1.0: identical); None: a rate to read
    note: str = ""  # e.g. the prompts llama.cpp tokenized differently from transformers


@dataclass
class Agreement:
    name: str
    agreed: int
    total: int
    required: float | None
    first_difference: str | None  # where the first prompt that differs first differs, in words
    note: str = ""
    same_start: float | None = None  # share of the reference's tokens (characters) before each reply's difference

    @property
    def failed(self) -> bool:
        if self.required is None:
            return False
        return self.agreed < self.total if self.required >= 1.0 else (self.same_start or 0.0) < self.required


def greedy_settings(max_new_tokens: int) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.0)


def transformers_replies(loaded: LoadedModel, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                         name: str, must_agree: bool, batch_size: int = 8) -> Replies:
    """Greedy replies from transformers' generate (the adapter on, where there is one)."""
    answers = answer_all(loaded, conversations, greedy_settings(max_new_tokens), batch_size, desc=name)
    return Replies(name, [a.text for a in answers], [a.tokens for a in answers], 1.0 if must_agree else None)


def gguf_file_type(path: str | Path) -> str:
    """A GGUF model file's type as `--gguf_type` names it ("f16", "q8_0", "q4_k_m", ...): its general.file_type
    (llama.cpp's LlamaFileType), read with gguf-py; "unknown" when the file does not say."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    try:
        kind = gguf.LlamaFileType(int(field.parts[field.data[0]][0]))
    except ValueError:
        return "unknown"
    return kind.name.lower().removeprefix("all_").removeprefix("mostly_")


def check_gguf_file(path: str | Path, loaded: LoadedModel) -> None:
    """UserError unless `path` is a readable GGUF model file shaped like `loaded`'s model (architecture, layers,
    width, embedding rows): a file of another model would only show up as replies that differ."""
    import gguf

    from ..models.gguf_source import require_gguf_model

    require_gguf_model(Path(path))  # UserError for a file that is not GGUF, cut short, or a LoRA adapter
    reader = gguf.GGUFReader(str(path))

    def value(key: str):
        field = reader.get_field(key)
        return field.contents() if field is not None else None

    model = loaded.model.get_base_model() if loaded.has_adapter else loaded.model
    arch = value("general.architecture")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    found = {"layers": value(f"{arch}.block_count"), "width": value(f"{arch}.embedding_length"),
             "vocabulary": len(tokens.data) if tokens is not None else None}
    expected = {"layers": model.config.num_hidden_layers, "width": model.config.hidden_size,
                "vocabulary": model.get_input_embeddings().weight.shape[0]}
    differing = [f"{key} {found[key]} (the model: {expected[key]})" for key in expected
                 if found[key] != expected[key]]
    if differing:
        raise UserError(f"--gguf {path}: a {arch} model with {', '.join(differing)}, not the model being verified; "
                        f"give a GGUF file exported from this base and adapter.")


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_replies(gguf_path: str | Path, tokenizer, conversations: list[list[dict[str, str]]],
                      max_new_tokens: int, lora_path: str | Path | None = None) -> Replies:
    """Greedy replies from llama.cpp (llama-cpp-python) on a GGUF model file.

    The prompt is the chat template's text (as transformers renders it), tokenized by llama.cpp with the
    GGUF's vocabulary (special tokens parsed); `lora_path`, a GGUF LoRA applied on top. A reply ends at a
    token llama.cpp's vocabulary calls an end of generation (llama_vocab_is_eog: eos, the end-of-turn
    token) or after max_new_tokens tokens.
    """
    import llama_cpp

    file_type = gguf_file_type(gguf_path)
    prompts = [prompt_text(tokenizer, c) for c in conversations]
    expected_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    context = max(len(ids) for ids in expected_ids) + max_new_tokens + 8
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=context, n_batch=context, n_threads=os.cpu_count(),
                          lora_path=str(lora_path) if lora_path else None, verbose=False,
                          # An f32 KV cache, so what is compared is the file: llama.cpp's default f16 cache alone
                          # moves logits by ~0.7% of their spread (measured on the tests' tiny models).
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    texts, tokens, mistokenized = [], [], []
    for index, (text, expected) in enumerate(zip(prompts, expected_ids)):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if ids != expected:
            mistokenized.append(index + 1)
        reply: list[int] = []
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or len(reply) == max_new_tokens:
                break
            reply.append(token)
        tokens.append(tuple(reply))
        texts.append(tokenizer.decode(reply, skip_special_tokens=True).strip())
    llm.close()
    note = f"prompts {mistokenized} tokenized differently from transformers" if mistokenized else ""
    name = f"GGUF {file_type}{' + LoRA' if lora_path else ''} (llama.cpp)"
    return Replies(name, texts, tokens, REQUIRED_SAME_START.get(file_type), note)


def _first_difference(reference: Replies, other: Replies, index: int, tokenizer) -> str:
    """Where prompt `index`'s replies first differ: the token position and both tokens (or the text)."""
    if reference.tokens is not None and other.tokens is not None:
        mine, theirs = reference.tokens[index], other.tokens[index]
        position = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))

        def token(ids: tuple[int, ...]) -> str:  # a byte token's text alone can be half a character: the id too
            return f"{tokenizer.decode([ids[position]])!r} ({ids[position]})" if position < len(ids) else "(end)"

        return f"prompt {index + 1}, token {position + 1}: {token(mine)} vs {token(theirs)}"
    mine, theirs = reference.texts[index], other.texts[index]
    position = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    return f"prompt {index + 1}, character {position + 1}: {mine[position:position + 12]!r} vs " \
           f"{theirs[position:position + 12]!r}"


def agreement(reference: Replies, other: Replies, tokenizer) -> Agreement:
    """How many prompts `other` answered exactly as `reference` did, and where the first difference is."""
    by_tokens = reference.tokens is not None and other.tokens is not None
    pairs = list(zip(reference.tokens, other.tokens) if by_tokens else zip(reference.texts, other.texts))
    same = [a == b for a, b in pairs]
    first = next((i for i, ok in enumerate(same) if not ok), None)
    # How far replies go together before they part: a quantized file that picks another word at token 60 of 64
    # differs, like one that differs from the first token; this tells the two apart.
    common = sum(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))) for a, b in pairs)
    length = sum(len(a) for a, _ in pairs)
    return Agreement(other.name, sum(same), len(same), other.required,
                     None if first is None else _first_difference(reference, other, first, tokenizer), other.note,
                     common / length if length else None)


def format_table(reference: Replies, agreements: list[Agreement]) -> str:
    """The printed table: one row per side compared with the reference."""
    width = max([len(a.name) for a in agreements] + [len(reference.name), 4])
    lines = [f"greedy replies compared with {reference.name}:",
             f"{'side':<{width}}  agree    same start  must  first difference"]
    for a in agreements:
        verdict = "-" if a.required is None else "all" if a.required >= 1.0 else f"{100 * a.required:.0f}%"
        start = f"{100 * a.same_start:.0f}%" if a.same_start is not None else "-"
        lines.append(f"{a.name:<{width}}  {a.agreed:>3}/{a.total:<3}  {start:>10}  {verdict:<4}  "
                     f"{a.first_difference or '-'}" + (f"  ({a.note})" if a.note else ""))
    failed = [a.name for a in agreements if a.failed]
    lines.append("FAILED: " + ", ".join(failed) + " answered differently." if failed
                 else "every side that must agree does.")
    lines.append("agree: replies identical throughout; same start: the share of the reference's tokens before a "
                 "reply's first difference; must: what a side must reach (all: every reply identical).")
    return "\n".join(lines)


def run_system_prompt(loaded: LoadedModel) -> str | None:
    """The system prompt the adapter's run trained with (data.system_prompt in the qwentune_config.yaml of
    the adapter's directory or, for a checkpoint, of the run above it); None when there is none."""
    from ..config import load_config
    from ..training.outputs import RUN_CONFIG

    location = loaded.description.get("finetuned")
    if not loaded.has_adapter or not location:
        return None
    for folder in (Path(location), Path(location).parent):
        if (folder / RUN_CONFIG).is_file():
            return load_config(folder / RUN_CONFIG).data.system_prompt
    return None


def check_max_new_tokens(max_new_tokens: int, command: str) -> None:
    """UserError for a verification reply length below 1 (before anything loads)."""
    if max_new_tokens < 1:
        raise UserError(f"{command}: --max_new_tokens is {max_new_tokens}; it must be at least 1.")


def verification_inputs(cfg: Config, prompts_file: str | os.PathLike | None, max_new_tokens: int, command: str,
                        log=print) -> tuple[LoadedModel, list[list[dict[str, str]]], str | None]:
    """What export and verify check with: cfg's model and adapter loaded in fp32 (GGUF files and the merge are
    computed from fp32 weights), the conversations (prompts_file's prompts, default DEFAULT_PROMPTS) and the
    system prompt (data.system_prompt, else the one the run trained with).

    UserError (naming `command`) for max_new_tokens below 1, a prompts file read_questions refuses, and a
    longest prompt that with max_new_tokens does not fit the model's positions."""
    from ..inference.context import model_positions
    from ..inference.generate import prompt_length
    from ..inference.prompts import read_questions
    from ..models.load import load_for_inference
    from ..models.precision import choose_precision

    check_max_new_tokens(max_new_tokens, command)
    questions = read_questions(prompts_file or DEFAULT_PROMPTS, "prompts")
    loaded = load_for_inference(cfg.model.model_name_or_path, cfg.eval.adapter_path,
                                choose_precision(bf16=False, fp16=False), cfg.model.trust_remote_code, log=log)
    system = cfg.data.system_prompt or run_system_prompt(loaded)
    conversations = [q.messages(system) for q in questions]
    positions = model_positions(loaded.model)
    longest = max(prompt_length(loaded.tokenizer, c) for c in conversations)
    if positions is not None and longest + max_new_tokens > positions:
        raise UserError(f"{command}: the longest prompt ({longest} tokens) plus --max_new_tokens {max_new_tokens} "
                        f"is more than the model's {positions} positions; lower --max_new_tokens to at most "
                        f"{max(positions - longest, 0)}, or shorten the prompts.")
    return loaded, conversations, system


def replies_before_merge(loaded: LoadedModel, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                         server_answers: ServerAnswers | None = None, log=print) -> tuple[Replies, list[Replies]]:
    """The reference replies (the adapter on its base, or the model) and, given server_answers, the server's."""
    name = "adapter on base" if loaded.has_adapter else "model"
    log(f"verify: {name}")
    reference = transformers_replies(loaded, conversations, max_new_tokens, name, True)
    sides = []
    if server_answers is not None:
        log("verify: the server")
        sides.append(Replies("server", server_answers(loaded, conversations, max_new_tokens), None, 1.0))
    return reference, sides


def gguf_replies(paths: list[str | Path], tokenizer, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                 notes: list[str], lora_path: str | Path | None = None, log=print) -> list[Replies]:
    """Each GGUF file's replies in llama.cpp; a note instead when llama-cpp-python is not installed."""
    if paths and not llama_cpp_available():
        notes.append(f"the GGUF files were not run in llama.cpp: llama-cpp-python is not installed ({LLAMA_CPP_HINT})")
        return []
    sides = []
    for path in paths:
        log(f"verify: llama.cpp on {Path(path).name}")
        sides.append(llama_cpp_replies(path, tokenizer, conversations, max_new_tokens, lora_path))
    return sides


def verify(loaded: LoadedModel, conversations: list[list[dict[str, str]]], gguf_files: list[str | Path],
           max_new_tokens: int = 64, server_answers: ServerAnswers | None = None, log=print
           ) -> tuple[Replies, list[Agreement], list[str]]:
    """The reference replies, each other side's agreement with them, and notes on sides not checked.

    Sides, in this order (the merge changes `loaded` in place, so it comes after what needs the adapter):
    the server (given server_answers, e.g. apps.serve.answers_over_http: the server lives in apps/, above
    this folder), the merged model (with an adapter), each GGUF file in llama.cpp.
    """
    notes: list[str] = []
    reference, sides = replies_before_merge(loaded, conversations, max_new_tokens, server_answers, log)
    if loaded.has_adapter:
        log("verify: merged model")
        merged = LoadedModel(loaded.model.merge_and_unload(), loaded.tokenizer, False,
                             {**loaded.description, "kind": "merged"})
        sides.append(transformers_replies(merged, conversations, max_new_tokens, "merged", True))
    sides += gguf_replies(gguf_files, loaded.tokenizer, conversations, max_new_tokens, notes, log=log)
    return reference, [agreement(reference, side, loaded.tokenizer) for side in sides], notes
