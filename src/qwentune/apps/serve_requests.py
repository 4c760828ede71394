"""The checks on an OpenAI-style request body, in one place for /v1/chat/completions and /v1/completions: what
the caller may set (model, messages or prompt, max_tokens, temperature, top_p, seed, stop, stream, n = 1) and
what it turns into (the prompt's tokens, a token limit that fits the model's positions, the sampling key the
batcher groups by). Every mistake is an ApiError that the server answers with OpenAI's error body
{"error": {"message", "type", "param", "code"}} and a 4xx status; nothing here touches the model.

OpenAI semantics: temperature 0 is greedy (and so is one below batching.GREEDY_BELOW, 1e-5); no temperature means the configured generation settings; top_p
applies when sampling; a seed makes a sampled answer repeat (such a request is answered alone, see
batching.Sampling), and without one every sampled answer is drawn afresh; max_tokens (or
max_completion_tokens) defaults to the configured max_new_tokens, shortened to what the model's positions
leave after the prompt. Fields of OpenAI's API this server cannot honour (n > 1, logprobs, tools, a
response_format other than text, nonzero presence / frequency penalties, echo, best_of, suffix) are refused
rather than ignored; fields it does not know are ignored, as OpenAI's own clients send a few (user, ...).
A chat request may set `chat_template_kwargs: {"enable_thinking": true|false}` (vLLM's and SGLang's field) to
switch Qwen3's thinking for that request; without it the server's generation.enable_thinking applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import GenerationConfig
from ..inference.batching import Sampling
from ..inference.generate import prompt_text
from ..inference.prompts import is_utf8_text

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4  # OpenAI's limit on stop strings
MAX_SEED = 2**63 - 1


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Served:
    """What the server answers with: model names -> adapter on (True) / off (False), and its defaults."""

    names: dict[str, bool]
    tokenizer: object
    settings: GenerationConfig
    positions: int | None  # prompt + reply tokens the model was built for (None: unknown)
    system_prompt: str | None = None  # for a chat that has no system message, as `qwentune infer` does


@dataclass(frozen=True)
class Parsed:
    model: str
    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    strip: bool = True  # a chat reply is stripped of surrounding whitespace; a text completion is not


def parse_chat(body, served: Served) -> Parsed:
    _object(body)
    messages = _messages(body.get("messages"), served.system_prompt)
    text = prompt_text(served.tokenizer, messages, _enable_thinking(body, served.settings.enable_thinking))
    return _parsed(body, served, served.tokenizer(text, add_special_tokens=False)["input_ids"])


def parse_completion(body, served: Served) -> Parsed:
    _object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string (one prompt per request).", "prompt")
    if not prompt:
        raise ApiError(400, "'prompt' is empty; give the text to continue.", "prompt")
    _utf8(prompt, "prompt")
    # By identity and type: `True in (None, False, 1, "")` holds in Python (True == 1), which let echo: true in.
    harmless = {"echo": lambda v: v is None or v is False,
                "best_of": lambda v: v is None or (type(v) is int and v == 1),
                "suffix": lambda v: v is None or v == ""}
    for unsupported, fine in harmless.items():
        if not fine(body.get(unsupported)):
            raise ApiError(400, f"'{unsupported}' is not supported by this server; leave it out.", unsupported)
    # As the model reads plain text (with its tokenizer's special tokens); the reply is kept as generated.
    return dataclasses.replace(_parsed(body, served, served.tokenizer(prompt)["input_ids"]), strip=False)


def _enable_thinking(body: dict, default: bool | None) -> bool | None:
    """The request's chat_template_kwargs.enable_thinking, else `default`; ApiError for anything else there."""
    extra = body.get("chat_template_kwargs")
    if extra is None:
        return default
    if not isinstance(extra, dict) or set(extra) - {"enable_thinking"}:
        raise ApiError(400, "'chat_template_kwargs' may only hold enable_thinking (true or false).",
                       "chat_template_kwargs")
    value = extra.get("enable_thinking", default)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, "'chat_template_kwargs.enable_thinking' must be true or false.",
                       "chat_template_kwargs.enable_thinking")
    return value


def _object(body) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object.")


def _messages(messages, system_prompt: str | None) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects.", "messages")
    out = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'.", where)
        given = message.get("role")
        role = ROLES.get(given) if isinstance(given, str) else None  # a list or object is no role (nor hashable)
        if role is None:
            raise ApiError(400, f"{where}.role is {given!r}; use system, user or assistant.",
                           f"{where}.role")
        if role == "system" and index != 0:
            raise ApiError(400, f"{where} is a system message; only the first message may be one.", f"{where}.role")
        out.append({"role": role, "content": _content(message.get("content"), f"{where}.content")})
    if out[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's (the one to answer).", f"messages[{len(out) - 1}].role")
    if out[0]["role"] != "system" and system_prompt:
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def _content(content, where: str) -> str:
    if isinstance(content, str):
        return _utf8(content, where)
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return _utf8("".join(p["text"] for p in content), where)
    raise ApiError(400, f"{where} must be text (a string, or a list of {{type: text, text}} parts).", where)


def _utf8(text: str, where: str) -> str:
    """`text`, or 400 when it holds a lone surrogate (JSON's "\\ud800" escapes one): such text is no Unicode
    the tokenizer can read, and it would otherwise fail there (500)."""
    if not is_utf8_text(text):
        raise ApiError(400, f"{where} is not valid UTF-8 text: it holds a lone surrogate (an unpaired \\ud800-"
                            f"\\udfff escape); send UTF-8 text.", where)
    return text


def _parsed(body: dict, served: Served, prompt_ids: list[int]) -> Parsed:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"'model' is required; this server answers as {_names(served)}.", "model")
    if model not in served.names:
        # repr: a name holding a lone surrogate could not be written in the UTF-8 answer
        raise ApiError(404, f"the model {model!r} does not exist here; this server answers as {_names(served)}.",
                       "model", "model_not_found")
    n = body.get("n", 1)
    if n is not None and (_integer(n, "n") != 1):
        raise ApiError(400, f"'n' is {n}; this server gives one answer per request (n = 1).", "n")
    for unsupported in ("logprobs", "top_logprobs", "tools", "functions", "tool_choice", "function_call"):
        if body.get(unsupported) not in (None, False, [], 0):
            raise ApiError(400, f"'{unsupported}' is not supported by this server; leave it out.", unsupported)
    if body.get("response_format") not in (None, {"type": "text"}):
        raise ApiError(400, "'response_format' other than text is not supported by this server.", "response_format")
    for penalty in ("presence_penalty", "frequency_penalty"):
        if body.get(penalty) not in (None, 0, 0.0):
            raise ApiError(400, f"'{penalty}' is not supported by this server; leave it out or set it to 0.", penalty)
    settings = served.settings
    temperature = _number(body.get("temperature"), "temperature", 0.0, 2.0)
    top_p = _number(body.get("top_p"), "top_p", 0.0, 1.0, low_open=True)
    seed = _integer(body.get("seed"), "seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:  # torch's generator takes a 64-bit seed
        raise ApiError(400, f"'seed' is {seed}; it must be from 0 to {MAX_SEED} (2**63 - 1).", "seed")
    do_sample = settings.do_sample if temperature is None else temperature > 0
    sampling = Sampling.of(served.names[model], do_sample, settings.temperature if temperature is None else temperature,
                           settings.top_p if top_p is None else top_p, settings.repetition_penalty,
                           seed)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, "'stream' must be true or false.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object.", "stream_options")
    return Parsed(model, prompt_ids, _max_tokens(body, settings, served.positions, len(prompt_ids)), sampling,
                  _stops(body.get("stop")), bool(stream), bool(options.get("include_usage")))


def _max_tokens(body: dict, settings: GenerationConfig, positions: int | None, prompt_tokens: int) -> int:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    asked = _integer(body.get(name), name)
    if asked is not None and asked < 1:
        raise ApiError(400, f"'{name}' is {asked}; it must be at least 1.", name)
    room = None if positions is None else positions - prompt_tokens
    if room is not None and room < 1:
        raise ApiError(400, f"the prompt is {prompt_tokens} tokens; the model has {positions} positions, so it leaves "
                            f"no room for a reply: shorten it.", "messages" if "messages" in body else "prompt",
                       "context_length_exceeded")
    if asked is None:
        return settings.max_new_tokens if room is None else min(settings.max_new_tokens, room)
    if room is not None and asked > room:
        raise ApiError(400, f"the prompt is {prompt_tokens} tokens and '{name}' is {asked}; the model has {positions} "
                            f"positions: ask for at most {room} tokens, or shorten the prompt.", name,
                       "context_length_exceeded")
    return asked


def _stops(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
        raise ApiError(400, f"'stop' must be a non-empty string or a list of at most {MAX_STOPS} of them.", "stop")
    return tuple(stops)


def _number(value, name: str, low: float, high: float, low_open: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ApiError(400, f"'{name}' must be a number.", name)
    if value < low or value > high or (low_open and value == low):
        bounds = f"{'above' if low_open else 'at least'} {low:g} and at most {high:g}"
        raise ApiError(400, f"'{name}' is {value}; it must be {bounds}.", name)
    return float(value)


def _integer(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer.", name)
    return value


def _names(served: Served) -> str:
    return " or ".join(f"'{name}'" for name in served.names)
