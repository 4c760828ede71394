"""`qwentune serve`: an OpenAI-compatible HTTP API over one loaded model (FastAPI + uvicorn).

With an adapter, one copy of the base weights answers as two models: `finetuned` (adapter on) and `base`
(adapter off, exactly the base model: LoadedModel.adapter); a merged or plain model answers under its own
name. Endpoints: POST /v1/chat/completions (streamed or not), POST /v1/completions, GET /v1/models (and
/v1/models/{name}), GET /health. One worker thread owns the model (inference/batching.py): handlers check a
request (serve_requests.py), queue it and wait for its events; requests of one name and one sampling setting
are answered together in a batch. Replies end at the end-of-turn token (and eos). A bounded queue answers 503
when full; a client that goes away mid-answer has its row dropped from the batch. Mistakes get OpenAI's
error body and a 4xx status, and the server goes on serving.

Why not `transformers serve` (transformers 5.24, cli/serve.py + cli/serving/): it loads a model per request
by hub id or path and has no way to load a PEFT adapter, let alone answer with it on and off from one loaded
base; its default path runs one model.generate per request on its inference thread (no batching), and its
continuous batching takes one generation config for all requests (a TODO in chat_completion.py), so neither
batches per side nor switches the adapter per batch; it stops at the model's generation_config eos, which for
a Qwen base model is <|endoftext|>, not the end-of-turn <|im_end|>; its errors are FastAPI's
{"detail": ...} with 422 for unknown fields, not OpenAI's error body; and it has no API key and no bounded
queue. What it does well (an SSE stream per request fed from the generate thread, cancelling on disconnect)
is done here the same way, over qwentune's own loading and generation.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition.
import asyncio
import errno
import hmac
import json
import socket
import time
import uuid

from ..errors import UserError
from ..inference.batching import Batcher, Delta, Failed, Finished, QueueFull, Request
from .serve_requests import ApiError, Parsed, Served, parse_chat, parse_completion

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# A request body larger than this is refused (413) before it is read whole: an 8 MB chat took ~24 s to check
# and tokenize. 4 MiB is far above what a model's positions hold (32k tokens are ~128 KB of text).
MAX_BODY = 4 * 1024 * 1024


class _Gone(Exception):
    """The client disconnected while sending its request: there is nobody to answer."""


def create_app(served: Served, batcher: Batcher, api_key: str | None = None):
    """The FastAPI application answering for `served` through `batcher` (already started); `api_key`: when
    given, every /v1 request must carry `Authorization: Bearer <api_key>` (else 401)."""
    from fastapi import FastAPI
    from fastapi import Request as HttpRequest
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    app = FastAPI(title="qwentune", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        # 413: the rest of the body is not read, so the connection cannot carry another request.
        headers = {503: {"Retry-After": "1"}, 413: {"Connection": "close"}}.get(error.status)
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(_Gone)  # quietly: the disconnect is the client's choice, not the server's error
    async def gone(_request, _error: _Gone):
        return Response(status_code=499)

    @app.exception_handler(HTTPException)  # unknown paths and methods, in the same error body
    async def http_error(_request, error: HTTPException):
        return JSONResponse(ApiError(error.status_code, str(error.detail)).body(), status_code=error.status_code)

    def check_key(request: HttpRequest) -> None:
        if api_key is not None:
            scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
            # The scheme is case-insensitive (RFC 7235: "bearer KEY" is as good as "Bearer KEY"); the key is not.
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                raise ApiError(401, "missing or wrong API key; send the key given to `qwentune serve --api_key` as "
                                    "'Authorization: Bearer KEY'.", code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: HttpRequest):
        check_key(request)
        return {"object": "list", "data": [_model_card(name, created) for name in served.names]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: HttpRequest):
        check_key(request)
        if name not in served.names:
            raise ApiError(404, f"the model '{name}' does not exist here.", "model", "model_not_found")
        return _model_card(name, created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HttpRequest):
        check_key(request)
        # Checking and tokenizing a long body takes CPU time: in a thread, so the event loop serves others meanwhile.
        parsed = await run_in_threadpool(parse_chat, await _json(request), served)
        return await _answer(request, parsed, "chat")

    @app.post("/v1/completions")
    async def completions(request: HttpRequest):
        check_key(request)
        parsed = await run_in_threadpool(parse_completion, await _json(request), served)
        return await _answer(request, parsed, "text")

    async def _answer(http: HttpRequest, parsed: Parsed, kind: str):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()  # unbounded: the worker never waits on a slow reader
        row = Request(parsed.prompt_ids, parsed.max_tokens, parsed.sampling,
                      lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
                      parsed.stop, parsed.stream, parsed.strip)
        try:
            batcher.submit(row)
        except QueueFull as full:
            raise ApiError(503, f"the server is busy ({full}); try again shortly, or start it with a larger "
                                f"--max_queue.", code="queue_full", kind="server_error") from None
        answer_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        if parsed.stream:
            return StreamingResponse(_sse(events, row, parsed, kind, answer_id), media_type="text/event-stream")
        final = await _final_or_gone(http, events, row)
        if final is None:  # the client has gone; nobody reads this
            return JSONResponse({}, status_code=499)
        if isinstance(final, Failed):
            raise ApiError(500, final.message, kind="server_error")
        return _whole(final, parsed, kind, answer_id)

    return app


async def _json(request):
    """The request body parsed as JSON (in a worker thread); 413 beyond MAX_BODY, told by Content-Length or
    found while reading; _Gone when the client disconnects before it has sent it all."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    too_large = ApiError(413, f"the request body is larger than {MAX_BODY // 2**20} MiB; shorten the prompt.",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Gone() from None
    try:
        return await run_in_threadpool(json.loads, b"".join(chunks))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc}); send a JSON object.") from None


async def _final_or_gone(http, events: asyncio.Queue, row: Request):
    """The request's Finished or Failed event, or None when the client disconnects first (the row is then
    cancelled, so the batch stops computing it)."""
    async def disconnected() -> None:
        while (await http.receive())["type"] != "http.disconnect":
            pass

    async def final():
        while not isinstance(event := await events.get(), (Finished, Failed)):
            pass
        return event

    waiting = [asyncio.ensure_future(final()), asyncio.ensure_future(disconnected())]
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        return waiting[0].result() if waiting[0] in done else None
    finally:
        for task in waiting:
            task.cancel()
        row.cancelled.set()  # harmless once finished; stops the row when the client went away


async def _sse(events: asyncio.Queue, row: Request, parsed: Parsed, kind: str, answer_id: str):
    """Server-sent events as OpenAI streams them: a first chunk (chat: the assistant role), one chunk per
    piece of text, a last chunk with finish_reason, a usage chunk when stream_options.include_usage, then
    [DONE]. A client that disconnects cancels this generator (Starlette), which cancels the row."""
    created = int(time.time())

    def chunk(piece: str | None = None, finish_reason: str | None = None, role: str | None = None) -> str:
        if kind == "chat":
            delta = {"role": role} if role else ({"content": piece} if piece is not None else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish_reason}
        return _event(_envelope(answer_id, kind, parsed.model, created, [choice], chunked=True))

    try:
        if kind == "chat":
            yield chunk(role="assistant")
        while True:
            event = await events.get()
            if isinstance(event, Delta):
                yield chunk(event.text)
            elif isinstance(event, Finished):
                yield chunk(finish_reason=event.finish_reason)
                if parsed.include_usage:
                    yield _event({**_envelope(answer_id, kind, parsed.model, created, [], chunked=True),
                                  "usage": _usage(event)})
                yield "data: [DONE]\n\n"
                return
            else:  # Failed: the stream has begun (status 200), so the error goes in the stream, as OpenAI does
                yield _event(ApiError(500, event.message, kind="server_error").body())
                return
    finally:
        row.cancelled.set()


def _whole(final: Finished, parsed: Parsed, kind: str, answer_id: str) -> dict:
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": final.text}, "logprobs": None,
                  "finish_reason": final.finish_reason}
    else:
        choice = {"index": 0, "text": final.text, "logprobs": None, "finish_reason": final.finish_reason}
    return {**_envelope(answer_id, kind, parsed.model, int(time.time()), [choice]), "usage": _usage(final)}


def _envelope(answer_id: str, kind: str, model: str, created: int, choices: list, chunked: bool = False) -> dict:
    kinds = {"chat": "chat.completion", "text": "text_completion"}
    name = kinds[kind] + (".chunk" if chunked and kind == "chat" else "")
    return {"id": answer_id, "object": name, "created": created, "model": model, "system_fingerprint": None,
            "choices": choices}


def _usage(final: Finished) -> dict:
    return {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
            "total_tokens": final.prompt_tokens + final.completion_tokens}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "qwentune"}


def bind(host: str, port: int, command: str = "serve") -> socket.socket:
    """A TCP socket bound to host:port (port 0: one the system picks), made before the model loads so a port
    in use is one line, not a traceback minutes later; UserError when it cannot be bound."""
    if not 0 <= port <= 65535:
        raise UserError(f"{command}: --port {port} is not a port; give one from 1 to 65535.")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        raise UserError(f"{command}: --host {host} is not an address of this machine; give e.g. 127.0.0.1 or 0.0.0.0.") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"{command}: cannot listen on {host}:{port}: {_bind_failure(exc, host, port)}.") from None
    sock.set_inheritable(True)
    return sock


def _bind_failure(exc: OSError, host: str, port: int) -> str:
    """Why a bind failed, in words that say what to change (by errno; otherwise the system's own message)."""
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use by another program; choose another with --port, or stop that program"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; give one of its addresses with --host (127.0.0.1: this " \
               f"machine only, 0.0.0.0: all)"
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return "ports below 1024 need root; choose one from 1024 up with --port"
    return f"{exc.strerror or exc}"


def served_names(loaded, model_name_or_path: str, adapter_path: str | None) -> dict[str, bool]:
    """Model name -> adapter on: `base` and `finetuned` for a base with an adapter; a merged or plain model
    answers under the name it was given by (adapter on is then the model as it is)."""
    if loaded.has_adapter:
        return {"base": False, "finetuned": True}
    own = adapter_path if loaded.description.get("kind") == "merged" else model_name_or_path
    return {str(own).rstrip("/") or str(own): True}


def check_serve_options(max_queue: int, max_batch_size: int) -> None:
    if max_queue < 1:
        raise UserError(f"serve: --max_queue is {max_queue}; it must be at least 1.")
    if max_batch_size < 1:
        raise UserError(f"serve: --max_batch_size is {max_batch_size}; it must be at least 1.")


def serve(cfg, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_queue: int = 64,
          max_batch_size: int = 16, log=print) -> None:
    """Load cfg's model (model_name_or_path + adapter_path, precision from bf16 / fp16) and answer on host:port
    until interrupted. UserError, before the model loads, for bad options, missing packages or a port in use."""
    check_serve_options(max_queue, max_batch_size)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("serve needs FastAPI and uvicorn, which qwentune's dependencies bring: pip install -e . "
                        "again.") from None
    if api_key is not None and not api_key:
        raise UserError("serve: --api_key is empty; give a key, or leave the option out.")
    sock = bind(host, port)
    batcher = None
    try:
        from ..inference.context import model_positions
        from ..models.load import load_for_inference
        from ..models.precision import choose_precision

        loaded = load_for_inference(cfg.model.model_name_or_path, cfg.eval.adapter_path,
                                    choose_precision(cfg.training.bf16, cfg.training.fp16),
                                    cfg.model.trust_remote_code, log=log)
        served = Served(served_names(loaded, cfg.model.model_name_or_path, cfg.eval.adapter_path), loaded.tokenizer,
                        cfg.generation, model_positions(loaded.model), cfg.data.system_prompt)
        batcher = Batcher(loaded, cfg.generation, max_queue, max_batch_size).start()
        app = create_app(served, batcher, api_key)
        shown = f"[{host}]" if ":" in host else host
        log(f"serving {', '.join(served.names)} at http://{shown}:{sock.getsockname()[1]}/v1 (OpenAI API"
            f"{', key required' if api_key else ''}); Ctrl-C stops")
        if api_key is None and host not in LOOPBACK:
            log(f"warning: --host {host} lets other machines use this server and no --api_key is set")
        uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3)).run(sockets=[sock])
    finally:
        if batcher is not None:
            batcher.close(timeout=5)
        sock.close()


class InThread:
    """uvicorn serving `app` on `sock` from a thread of this process (for tests, benchmarks, notebooks):
    `with InThread(app, sock) as url:` gives http://host:port/v1 once it accepts connections."""

    def __init__(self, app, sock: socket.socket):
        import threading

        import uvicorn

        self.sock = sock
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped before it started serving")
            time.sleep(0.01)
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def answers_over_http(loaded, conversations: list[list[dict[str, str]]], max_tokens: int,
                      adapter: bool = True) -> list[str]:
    """Greedy replies to `conversations` (adapter on or off) from this server, started on a free port of
    127.0.0.1 in this process for the purpose and asked one conversation at a time over plain HTTP (urllib:
    no openai package needed), then stopped; the server's side of `qwentune verify`. RuntimeError with the
    server's message when it refuses a request (a prompt that does not fit the model's positions, say)."""
    import urllib.error
    import urllib.request

    from ..config import GenerationConfig
    from ..inference.context import model_positions

    settings = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, repetition_penalty=1.0)
    served = Served(served_names(loaded, "model", None), loaded.tokenizer, settings, model_positions(loaded.model))
    name = next((n for n, on in served.names.items() if on == adapter or not loaded.has_adapter), None)
    batcher = Batcher(loaded, settings, max_waiting=1, max_batch_size=1).start()
    replies = []
    try:
        with InThread(create_app(served, batcher), bind("127.0.0.1", 0)) as url:
            for messages in conversations:
                body = json.dumps({"model": name, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
                request = urllib.request.Request(f"{url}/chat/completions", body.encode(),
                                                 {"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=3600) as response:
                        replies.append(json.loads(response.read())["choices"][0]["message"]["content"])
                except urllib.error.HTTPError as error:
                    raise RuntimeError(f"the server refused a request: {json.loads(error.read())['error']['message']}")
    finally:
        batcher.close(timeout=10)
    return replies
