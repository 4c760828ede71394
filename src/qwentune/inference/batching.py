"""Many callers, one model: a bounded queue of requests and one worker thread that owns the model.

The worker takes the oldest waiting request together with every other waiting request of the same side
(adapter on or off) and the same sampling settings, up to a batch size, and answers them with one left-padded
generate call (generate.generate_new_tokens, the call behind every answer qwentune gives). Rows of one batch
may ask for different numbers of tokens and different stop strings: a StoppingCriteria (_Rows) follows every
row, token by token, ends it at the end-of-turn token, its own token limit or a stop string, hands its text
out as it grows, and drops a row whose caller has gone (`cancelled`); when every row has ended, generate
returns. Requests that arrive while a batch runs wait for the next one (no continuous batching).

Events go to each request's `on_event`, called on the worker thread; it must not block (the HTTP server puts
them on an unbounded asyncio queue), so a caller that stops reading never holds the worker up.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..config import GenerationConfig
from ..models.load import LoadedModel
from .generate import finished_text, generate_new_tokens, left_padded

log = logging.getLogger(__name__)

# A sampling temperature below this is answered greedily, as temperature 0 is. Sampling divides the logits by
# the temperature: at 1e-300 they overflow float32 to inf and the softmax gives nan (a 500 from torch), and
# already at 1e-5 a logit gap of 0.001 weighs e^100 to one, so the draw is the argmax in all but exact ties.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class Sampling:
    """What the rows of one batch share: the side, and how tokens are chosen. `seed` (sampling only): None draws
    a fresh one per batch; a request that names one is answered in a batch of its own, because the rows of a
    batch draw from one generator, so only alone does a seed give the same answer every time."""

    adapter: bool
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @classmethod
    def of(cls, adapter: bool, do_sample: bool, temperature: float, top_p: float, repetition_penalty: float,
           seed: int | None) -> "Sampling":
        """Greedy rows share one key whatever temperature, top_p or seed they name (none of them matters); a
        temperature below GREEDY_BELOW is greedy."""
        if not do_sample or temperature < GREEDY_BELOW:
            return cls(adapter, False, 1.0, 1.0, repetition_penalty, None)
        return cls(adapter, True, temperature, top_p, repetition_penalty, seed)


@dataclass(frozen=True)
class Delta:
    text: str  # the next piece of the reply (only for a request with stream=True)


@dataclass(frozen=True)
class Finished:
    text: str  # the whole reply
    finish_reason: str  # "stop" (end-of-turn token, eos or a stop string) or "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int  # generated tokens, the stop token not counted


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass
class Request:
    """One prompt to answer. `prompt_ids`: its tokens (chat template applied); `max_tokens` >= 1."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling
    on_event: Callable[[Delta | Finished | Failed], None]
    stop: tuple[str, ...] = ()
    stream: bool = False
    strip: bool = True  # a chat reply is stripped of surrounding whitespace; a text completion is not
    cancelled: threading.Event = field(default_factory=threading.Event)


class QueueFull(Exception):
    pass


class _Rows(StoppingCriteria):
    """Follows each row of a running batch (transformers calls a StoppingCriteria once per step, after the
    step's token is appended): returns which rows have ended, and sends each request its events."""

    def __init__(self, requests: list[Request], tokenizer, stop_ids: set[int]):
        self.requests, self.tokenizer, self.stop_ids = requests, tokenizer, stop_ids
        self.ids: list[list[int]] = [[] for _ in requests]
        self.sent = [""] * len(requests)
        self.done = [False] * len(requests)
        self.dropped = [False] * len(requests)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()
        for row, request in enumerate(self.requests):
            if self.done[row]:
                continue
            if request.cancelled.is_set():  # its caller has gone: no more work for it
                self.done[row] = self.dropped[row] = True
                continue
            if newest[row] in self.stop_ids:
                self.finish(row, "stop")
                continue
            self.ids[row].append(newest[row])
            text = self._decoded(row) if request.stream or request.stop else ""
            cut = _first_stop(text, request.stop)
            if cut is not None:
                self.finish(row, "stop", text[:cut])
            elif len(self.ids[row]) >= request.max_tokens:
                self.finish(row, "length")
            elif request.stream:
                self._send_growth(row, _settled(text, request))
        return torch.tensor(self.done, device=input_ids.device)

    def finish(self, row: int, reason: str, text: str | None = None) -> None:
        request = self.requests[row]
        self.done[row] = True
        raw = self._decoded(row) if text is None else text
        final = finished_text(raw, stopped=reason == "stop", strip=request.strip)
        if request.stream:
            self._send_growth(row, final)
        _emit(request, Finished(final, reason, len(request.prompt_ids), len(self.ids[row])))

    def finish_all(self, reason: str) -> None:
        for row in range(len(self.requests)):
            if not self.done[row]:
                self.finish(row, reason)

    def fail_all(self, message: str) -> None:
        for row, request in enumerate(self.requests):
            if not self.done[row]:
                self.done[row] = True
                _emit(request, Failed(message))

    def _decoded(self, row: int) -> str:
        return self.tokenizer.decode(self.ids[row], skip_special_tokens=True)

    def _send_growth(self, row: int, text: str) -> None:
        # Only text that extends what was sent goes out; a decode that rewrote earlier text (a tokenizer that
        # cleans up spaces, say) sends nothing more rather than contradict what the client already has.
        if len(text) > len(self.sent[row]) and text.startswith(self.sent[row]):
            _emit(self.requests[row], Delta(text[len(self.sent[row]):]))
            self.sent[row] = text


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return min(found) if found else None


def _settled(text: str, request: Request) -> str:
    """The part of a growing reply that the finished reply is sure to start with: without a half character at
    the end, the tail a stop string may still begin in, and (for a stripped reply) leading whitespace and
    trailing whitespace that the end may strip."""
    text = text.rstrip("\ufffd")
    if request.stop:
        text = text[:max(0, len(text) - (max(map(len, request.stop)) - 1))]
    return text.strip() if request.strip else text


def _emit(request: Request, event) -> None:
    try:
        request.on_event(event)
    except RuntimeError:  # the caller's event loop is closed (the server is stopping): the row is abandoned
        request.cancelled.set()


class Batcher:
    """The queue and the worker thread. `settings`: the configured generation settings (max_new_tokens is
    replaced by each batch's largest max_tokens; the rest by each batch's Sampling). At most `max_waiting`
    requests wait (submit raises QueueFull beyond), besides the batch being answered; a batch holds at most
    `max_batch_size` rows."""

    def __init__(self, loaded: LoadedModel, settings: GenerationConfig, max_waiting: int, max_batch_size: int):
        self.loaded, self.settings = loaded, settings
        self.max_waiting, self.max_batch_size = max_waiting, max_batch_size
        self.stop_ids = set(loaded.stop_ids)
        self._waiting: deque[Request] = deque()
        self._condition = threading.Condition()
        self._closed = False
        # Counts for tests and benchmarks: batches run, rows answered, rows dropped because their caller left.
        self.stats = {"batches": 0, "rows": 0, "dropped": 0}
        self._thread = threading.Thread(target=self._work, name="qwentune-generate", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop after the running batch; requests still waiting are told the server is stopping."""
        with self._condition:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            self._condition.notify_all()
        for request in left:
            _emit(request, Failed("the server is stopping"))
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def waiting(self) -> int:
        """How many requests wait (the batch being answered not counted)."""
        with self._condition:
            return len(self._waiting)

    def submit(self, request: Request) -> None:
        """Queue `request`; QueueFull when `max_waiting` requests already wait."""
        with self._condition:
            if self._closed:
                raise QueueFull("the server is stopping")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(request)
            self._condition.notify()

    def _next_batch(self) -> list[Request] | None:
        with self._condition:
            while True:
                while self._waiting and self._waiting[0].cancelled.is_set():
                    self._waiting.popleft()
                    self.stats["dropped"] += 1
                if self._waiting or self._closed:
                    break
                self._condition.wait()
            if self._closed:
                return None
            key = self._waiting[0].sampling
            size = 1 if key.do_sample and key.seed is not None else self.max_batch_size
            batch = [r for r in self._waiting if r.sampling == key and not r.cancelled.is_set()][:size]
            taken = set(map(id, batch))
            left = [r for r in self._waiting if id(r) not in taken]
            self._waiting = deque(r for r in left if not r.cancelled.is_set())
            self.stats["dropped"] += len(left) - len(self._waiting)
            self.stats["batches"] += 1
            self.stats["rows"] += len(batch)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self.answer(batch)

    def answer(self, batch: list[Request]) -> None:
        """Answer the requests of one batch (they share one Sampling) with one generate call; every request
        gets Finished, or Failed when generation raised."""
        sampling = batch[0].sampling
        settings = dataclasses.replace(
            self.settings, max_new_tokens=max(r.max_tokens for r in batch), do_sample=sampling.do_sample,
            temperature=sampling.temperature, top_p=sampling.top_p, repetition_penalty=sampling.repetition_penalty)
        rows = _Rows(batch, self.loaded.tokenizer, self.stop_ids)
        try:
            encoded = left_padded([r.prompt_ids for r in batch], self.loaded.tokenizer.pad_token_id,
                                  self.loaded.model.device)
            seed = random.randrange(2**31) if sampling.seed is None else sampling.seed
            generate_new_tokens(self.loaded, encoded, settings, sampling.adapter, seed,
                                stopping_criteria=StoppingCriteriaList([rows]))
        except Exception as exc:  # one batch's failure (out of memory, say) is told to its callers; the worker goes on
            log.exception("generation failed")
            rows.fail_all(f"generation failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
            return
        rows.finish_all("length")  # rows generate stopped at the batch's token limit
        self.stats["dropped"] += sum(rows.dropped)
