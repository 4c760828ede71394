"""Generate answers: batched (left padding, prompts of similar length together) or streamed.

Generation always stops at the end-of-turn token as well as at eos: Qwen base models say
eos is <|endoftext|>, but a chat reply ends with <|im_end|>.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from tqdm.auto import tqdm

from ..config import GenerationConfig
from ..models.load import LoadedModel


@dataclass
class Answer:
    text: str
    seconds: float
    stopped: bool  # ended at an end-of-turn / eos token, not at max_new_tokens
    tokens: tuple[int, ...]  # the reply's token ids, the stop token excluded

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)


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
    return finished_text(tokenizer.decode(ids, skip_special_tokens=True), stopped)


def finished_text(text: str, stopped: bool, strip: bool = True) -> str:
    """A decoded reply as it is given out: without surrounding whitespace (`strip`; a raw text completion keeps
    its leading space) and, when it was cut at a token limit (not `stopped`), without the half character at
    its end."""
    if strip:
        text = text.strip()
    if not stopped:
        text = text.rstrip("\ufffd")
    return text.rstrip() if strip else text


def left_padded(rows: list[list[int]], pad_id: int, device) -> dict:
    """`input_ids` and `attention_mask` (int64, [len(rows), longest row]) for token-id rows padded on the left,
    as the tokenizer pads with padding_side="left"; built without the tokenizer, whose padding setting a call
    with padding=True changes for its duration (a server reading prompts on another thread must not see that)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            ids[index, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[index, width - len(row):] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def generate_new_tokens(loaded: LoadedModel, encoded: dict, settings: GenerationConfig, adapter: bool = True,
                        seed: int = 42, **extra) -> torch.Tensor:
    """The tokens generated after the left-padded prompts in `encoded` ([rows, new tokens], int64; a row that
    stopped early is filled with the pad id), with the adapter on or off. `extra` goes to generate (a
    stopping_criteria list, say). The one generate call behind every answer qwentune gives."""
    torch.manual_seed(seed)
    with loaded.adapter(adapter):
        output = loaded.model.generate(**encoded, **_generation_kwargs(loaded, settings), **extra)
    return output[:, encoded["input_ids"].shape[1]:]


@torch.no_grad()
def generate_batch(loaded: LoadedModel, conversations: list[list[dict[str, str]]], settings: GenerationConfig,
                   adapter: bool = True, seed: int = 42) -> list[Answer]:
    """Answer each conversation (its last message is the user's); left-padded batch, one generate call."""
    tokenizer = loaded.tokenizer
    # Left padding: generation continues at the right edge of every row. Asked for in this call only,
    # so the shared tokenizer keeps its own padding side for its other users (training pads right).
    encoded = tokenizer([prompt_text(tokenizer, c) for c in conversations], return_tensors="pt", padding=True,
                        padding_side="left", add_special_tokens=False).to(loaded.model.device)
    started = time.perf_counter()
    new = generate_new_tokens(loaded, encoded, settings, adapter, seed)
    seconds = time.perf_counter() - started
    stops = set(loaded.stop_ids)
    answers = []
    for row in new.tolist():
        end = next((i for i, token in enumerate(row) if token in stops), None)
        kept = row[:end] if end is not None else row
        answers.append(Answer(reply_text(tokenizer, kept, stopped=end is not None), seconds / len(conversations),
                              end is not None, tuple(kept)))
    return answers


def stream(loaded: LoadedModel, messages: list[dict[str, str]], settings: GenerationConfig, adapter: bool = True,
           seed: int = 42) -> Iterator[str]:
    """Yield the reply's text piece by piece as it is generated (greedy: the same text as generate_batch).

    generate runs in a worker thread. A consumer that stops reading early (closes the generator: a web page
    whose visitor left, a cancelled request) stops it within a token, and the worker has ended when close()
    returns: whoever serializes use of the model can hand it on at once, with nothing still generating on it."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    tokenizer = loaded.tokenizer
    encoded = tokenizer([prompt_text(tokenizer, messages)], return_tensors="pt",
                        add_special_tokens=False).to(loaded.model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []
    stop = threading.Event()

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    def run() -> None:
        try:
            torch.manual_seed(seed)
            with torch.no_grad(), loaded.adapter(adapter):
                loaded.model.generate(**encoded, streamer=streamer, stopping_criteria=StoppingCriteriaList(
                    [StopWhenAsked()]), **_generation_kwargs(loaded, settings))
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, name="qwentune-stream", daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:  # also when the consumer closed the generator early
        stop.set()
        worker.join()
    if errors:
        raise errors[0]


def answer_all(loaded, prompts, settings, batch_size: int, adapter: bool = True, seed: int = 42,
               desc: str = "generating") -> list:
    """Answer every prompt, returned in the given order.

    Batches hold prompts of similar length (longest first), because a left-padded batch computes
    every row at its longest prompt's length (test_questions.json, SmolLM2 template: padding in
    batches of 8 falls from 25% to 11% of the computed prompt tokens).
    """
    order = sorted(range(len(prompts)), key=lambda i: -prompt_length(loaded.tokenizer, prompts[i]))
    answers: list = [None] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        chunk = order[start:start + batch_size]
        for index, answer in zip(chunk, generate_batch(loaded, [prompts[i] for i in chunk], settings, adapter, seed)):
            answers[index] = answer
    return answers
