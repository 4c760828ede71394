"""`qwentune serve`: a real uvicorn server on a free port of 127.0.0.1 over the tiny Qwen2 and the session's
trained adapter, asked with the real `openai` client (and with plain HTTP for requests the client would not
send)."""

import dataclasses
import errno
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwentune.apps.serve import InThread, answers_over_http, bind, create_app, served_names
from qwentune.apps.serve_requests import Served
from qwentune.cli import main
from qwentune.config import GenerationConfig
from qwentune.errors import UserError
from qwentune.inference.batching import Batcher
from qwentune.inference.context import model_positions
from qwentune.inference.generate import generate_batch, prompt_text
from qwentune.models.load import load_for_inference
from tests.helpers import FP32, QA, silent

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

GREEDY = GenerationConfig(max_new_tokens=24, do_sample=False, repetition_penalty=1.0)
KEY = "test-key"
SIDES = {"finetuned": True, "base": False}


def conversation(question):
    return [{"role": "user", "content": question}]


def start(loaded, max_waiting=64, max_batch_size=16, run_worker=True):
    served = Served(served_names(loaded, "tiny", "adapter"), loaded.tokenizer, GREEDY, model_positions(loaded.model))
    batcher = Batcher(loaded, GREEDY, max_waiting, max_batch_size)
    if run_worker:
        batcher.start()
    return batcher, InThread(create_app(served, batcher, api_key=KEY), bind("127.0.0.1", 0))


@pytest.fixture(scope="module")
def loaded(trained, tiny_model_dir):
    return load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)


@pytest.fixture(scope="module")
def expected(loaded):
    """generate_batch's greedy answer to each question, adapter on and off, computed before the server runs
    (one thread at a time uses the model)."""
    answers = {(name, q): generate_batch(loaded, [conversation(q)], GREEDY, adapter=adapter)[0]
               for name, adapter in SIDES.items() for q, _ in QA}
    sampling = dataclasses.replace(GREEDY, do_sample=True, temperature=1.5, top_p=0.95)
    answers[("sampled", QA[1][0])] = generate_batch(loaded, [conversation(QA[1][0])], sampling, False, seed=7)[0]
    return answers


@pytest.fixture(scope="module")
def server(loaded, expected):
    batcher, running = start(loaded)
    with running as url:
        yield url
    batcher.close(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key=KEY, max_retries=0, timeout=60)


def post(url, body, key=KEY, raw=None):
    """(status, parsed JSON) of a POST with plain HTTP, whatever the status."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def leave_without_reading(url, body, batcher):
    """POST a chat request, wait until the worker has taken it into a batch, and close the connection unread."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    data = json.dumps(body).encode()
    taken = batcher.stats["rows"]
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        while batcher.stats["rows"] == taken:
            threading.Event().wait(0.01)


def test_chat_answers_from_both_names_equal_generate_batch_with_the_adapter_on_and_off(client, expected):
    for name in SIDES:
        for question, _ in QA:
            answer = client.chat.completions.create(model=name, messages=conversation(question))
            want = expected[(name, question)]
            assert answer.choices[0].message.content == want.text
            assert answer.choices[0].finish_reason == ("stop" if want.stopped else "length")
            assert answer.usage.completion_tokens == want.new_tokens and answer.model == name
    assert [expected[("finetuned", q)].text for q, _ in QA] == [a for _, a in QA]  # the adapter answers
    assert [expected[("base", q)].text for q, _ in QA] != [a for _, a in QA]  # ... and the base does not


def test_streamed_chat_from_both_names_equals_the_plain_answer(client, expected):
    for name in SIDES:
        for question, _ in QA:
            chunks = list(client.chat.completions.create(model=name, messages=conversation(question), stream=True,
                                                         stream_options={"include_usage": True}))
            pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
            assert "".join(pieces) == expected[(name, question)].text
            assert chunks[0].choices[0].delta.role == "assistant"
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
            assert chunks[-1].usage.completion_tokens == expected[(name, question)].new_tokens


def test_text_completions_plain_and_streamed(client, loaded, expected):
    question = QA[1][0]
    prompt = prompt_text(loaded.tokenizer, conversation(question))  # the chat template by hand: the same tokens
    plain = client.completions.create(model="finetuned", prompt=prompt, max_tokens=20)
    assert plain.choices[0].text.strip() == expected[("finetuned", question)].text == QA[1][1]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="finetuned", prompt=prompt, max_tokens=20, stream=True))
    assert streamed == plain.choices[0].text


def test_models_lists_both_names(client):
    assert sorted(m.id for m in client.models.list()) == ["base", "finetuned"]


def test_max_tokens_and_stop_strings_end_a_reply(client, expected):
    question = QA[1][0]  # the adapter answers "Paris."
    short = client.chat.completions.create(model="base", messages=conversation(question), max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    cut = client.chat.completions.create(model="finetuned", messages=conversation(question), stop=["is."])
    assert cut.choices[0].message.content == "Par" and cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="finetuned", messages=conversation(question), stop="is.",
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Par"


def test_sixteen_concurrent_requests_are_all_answered_correctly(client, expected):
    asks = [(name, q) for name in SIDES for q, _ in QA] * 2
    assert len(asks) == 16

    def ask(item):
        name, question = item
        return client.chat.completions.create(model=name, messages=conversation(question)).choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, asks))
    assert answers == [expected[item].text for item in asks]


def test_sixteen_requests_waiting_together_are_answered_in_one_batch_per_name(loaded, expected):
    """Requests of one name are answered together (left-padded prompts of different lengths), each as alone."""
    batcher, running = start(loaded, run_worker=False)
    asks = [(name, q) for q, _ in QA for name in SIDES] * 2
    with running as url, ThreadPoolExecutor(16) as pool:
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
        futures = [pool.submit(lambda item: client.chat.completions.create(
            model=item[0], messages=conversation(item[1])).choices[0].message.content, item) for item in asks]
        while batcher.waiting < len(asks):
            threading.Event().wait(0.01)
        batcher.start()
        assert [f.result(60) for f in futures] == [expected[item].text for item in asks]
    batcher.close(timeout=10)
    assert batcher.stats == {"batches": 2, "rows": 16, "dropped": 0}


def test_a_temperature_too_small_to_sample_with_is_greedy(client, expected):
    """1e-300 would overflow the logits to inf (torch: probabilities contain nan); below 1e-5 is greedy."""
    question = QA[2][0]
    for temperature in (1e-300, 1e-6):
        answer = client.chat.completions.create(model="finetuned", messages=conversation(question),
                                                temperature=temperature, seed=3)
        assert answer.choices[0].message.content == expected[("finetuned", question)].text


def test_a_seeded_sampled_answer_repeats_and_equals_generate_batch_with_that_seed(loaded, expected):
    """Three identical seeded requests waiting together: each is answered alone (the rows of a batch would draw
    different samples from one generator), each the same as generate_batch with that seed."""
    question = QA[1][0]
    batcher, running = start(loaded, run_worker=False)
    with running as url, ThreadPoolExecutor(3) as pool:
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
        futures = [pool.submit(lambda: client.chat.completions.create(
            model="base", messages=conversation(question), temperature=1.5, top_p=0.95, seed=7)) for _ in range(3)]
        while batcher.waiting < 3:
            threading.Event().wait(0.01)
        batcher.start()
        answers = [f.result(60).choices[0].message.content for f in futures]
    batcher.close(timeout=10)
    assert answers == [expected[("sampled", question)].text] * 3 and batcher.stats["batches"] == 3
    assert answers[0] != expected[("base", question)].text  # it did sample


def test_a_client_that_leaves_mid_answer_is_dropped_and_the_server_goes_on(loaded, expected):
    batcher, running = start(loaded)
    question = QA[0][0]
    with running as url:
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="base", messages=conversation("tell me a long story"),
                                                max_tokens=450, stream=True)
        for _ in range(3):
            next(stream)
        stream.close()  # the client goes away mid-stream
        again = client.chat.completions.create(model="finetuned", messages=conversation(question))
        assert again.choices[0].message.content == expected[("finetuned", question)].text
        # Unread, its 450 tokens would keep the worker busy for seconds; dropped, it ended at the next step.
        assert batcher.stats["dropped"] == 1
        leave_without_reading(url, {"model": "base", "messages": conversation("tell me a long story"),
                                    "max_tokens": 450}, batcher)  # the same without streaming
        again = client.chat.completions.create(model="finetuned", messages=conversation(question))
        assert again.choices[0].message.content == expected[("finetuned", question)].text
        assert batcher.stats["dropped"] == 2
    batcher.close(timeout=10)


BAD = [  # (body, status, param)
    ({"model": "finetuned"}, 400, "messages"),
    ({"model": "finetuned", "messages": []}, 400, "messages"),
    ({"model": "finetuned", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     400, "messages[1].role"),
    ({"model": "finetuned", "messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400, "top_p"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, 400, "top_p"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 400, "max_tokens"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "hi " * 600}]}, 400, "messages"),
    ([1, 2], 400, None),
    ({"model": "finetuned", "messages": [{"role": ["user"], "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "finetuned", "messages": [{"role": {"a": 1}, "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": "\ud800"}]}, 400, "messages[0].content"),
    ({"model": "finetuned", "messages": [{"role": "user", "content": [{"type": "text", "text": "a\udfff"}]}]},
     400, "messages[0].content"),
    ({"model": "\ud800", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "temperature": 1, "seed": 2**100}, 400, "seed"),
    ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "temperature": 1, "seed": -1}, 400, "seed"),
]


@pytest.mark.parametrize("body,status,param", BAD, ids=[str(b[2]) + "-" + str(i) for i, b in enumerate(BAD)])
def test_a_bad_request_gets_an_openai_error_and_the_server_goes_on(server, client, expected, body, status, param):
    got, answer = post(f"{server}/chat/completions", body)
    assert got == status
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["param"] == param
    assert answer["error"]["message"]
    question = QA[3][0]
    again = client.chat.completions.create(model="finetuned", messages=conversation(question))
    assert again.choices[0].message.content == expected[("finetuned", question)].text


BAD_COMPLETIONS = [  # (body, param)
    ({"model": "base", "prompt": "\udfff"}, "prompt"),
    ({"model": "base", "prompt": ["x\ud800"]}, "prompt"),
    ({"model": "base", "prompt": "hi", "echo": True}, "echo"),
    ({"model": "base", "prompt": "hi", "echo": 1}, "echo"),
    ({"model": "base", "prompt": "hi", "best_of": True}, "best_of"),
    ({"model": "base", "prompt": "hi", "best_of": 2}, "best_of"),
    ({"model": "base", "prompt": "hi", "suffix": "end"}, "suffix"),
    ({"model": "base", "prompt": "hi", "suffix": 1}, "suffix"),
]


@pytest.mark.parametrize("body,param", BAD_COMPLETIONS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_COMPLETIONS)])
def test_a_bad_completion_request_gets_a_400_and_the_server_goes_on(server, client, body, param):
    got, answer = post(f"{server}/completions", body)
    assert got == 400 and answer["error"]["param"] == param and answer["error"]["message"]
    assert client.models.list().data


def test_malformed_json_wrong_keys_and_unknown_paths(server, client):
    status, answer = post(f"{server}/chat/completions", None, raw=b'{"model": "finetuned", "messages": [')
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    assert post(f"{server}/chat/completions", {"model": "base"}, key="wrong")[0] == 401
    for header in (f"bearer {KEY}", f"BEARER  {KEY}"):  # the scheme is case-insensitive (RFC 7235)
        request = urllib.request.Request(f"{server}/models", headers={"Authorization": header})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
    for header in (f"Bearer {KEY.upper()}", f"Basic {KEY}", KEY, f"Bearer{KEY}"):
        request = urllib.request.Request(f"{server}/models", headers={"Authorization": header})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 401
    status, answer = post(f"{server}/chat/completions", {"model": "base"}, key=None)
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    assert post(f"{server}/embeddings", {"model": "base"})[0] == 404
    status, answer = post(f"{server}/completions", {"model": "base", "prompt": ""})
    assert status == 400 and answer["error"]["param"] == "prompt"
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nope", messages=conversation("hi"))
    assert raised.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server, api_key="wrong", max_retries=0).models.list()


def test_a_full_queue_answers_503_then_serves(trained, tiny_model_dir, expected):
    own = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    batcher, running = start(own, max_waiting=1, max_batch_size=1, run_worker=False)  # nothing is answered yet
    question = QA[1][0]
    with running as url:
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
        first = []
        waiter = threading.Thread(target=lambda: first.append(client.chat.completions.create(
            model="finetuned", messages=conversation(question))))
        waiter.start()
        while batcher.waiting < 1:
            waiter.join(0.01)
        status, answer = post(f"{url}/chat/completions", {"model": "base", "messages": conversation(question)})
        assert status == 503 and answer["error"]["code"] == "queue_full" and "--max_queue" in answer["error"]["message"]
        batcher.start()  # the worker takes the waiting request: the queue has room again
        waiter.join(60)
        assert first[0].choices[0].message.content == expected[("finetuned", question)].text
        again = client.chat.completions.create(model="base", messages=conversation(question))
        assert again.choices[0].message.content == expected[("base", question)].text
    batcher.close(timeout=10)


def test_answers_over_http_are_generate_batch_greedy_answers(loaded, expected):
    """The helper `qwentune verify` asks the server through: its own server, plain HTTP, both sides."""
    for name, adapter in SIDES.items():
        replies = answers_over_http(loaded, [conversation(q) for q, _ in QA], GREEDY.max_new_tokens, adapter)
        assert replies == [expected[(name, q)].text for q, _ in QA]


def test_a_port_in_use_is_one_line_before_the_model_loads(tiny_model_dir, capsys):
    taken = bind("127.0.0.1", 0)
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}: the port is in use by another program"):
            bind("127.0.0.1", port)
        code = main(["serve", "--port", str(port), "--model_name_or_path", "/no/such/model", "--adapter_path", "null"])
    finally:
        taken.close()
    assert code == 2
    err = capsys.readouterr().err
    assert "--port" in err and "/no/such/model" not in err and len(err.strip().splitlines()) == 1


def test_an_empty_api_key_is_refused_in_one_line_before_the_model_loads(monkeypatch, capsys):
    monkeypatch.delenv("QWENTUNE_API_KEY", raising=False)
    code = main(["serve", "--api_key", "", "--port", "0", "--model_name_or_path", "/no/such/model",
                 "--adapter_path", "null"])
    err = capsys.readouterr().err
    assert code == 2 and "--api_key is empty" in err and "/no/such/model" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_port_that_cannot_be_bound_says_why_by_errno(monkeypatch):
    with pytest.raises(UserError, match="192.0.2.1 is not an address of this machine"):  # TEST-NET-1, nobody's
        bind("192.0.2.1", 0)

    def refused(code):
        def fake_bind(self, address):
            raise OSError(code, os.strerror(code))
        return fake_bind

    monkeypatch.setattr(socket.socket, "bind", refused(errno.EACCES))  # as a user other than root gets
    with pytest.raises(UserError, match="ports below 1024 need root"):
        bind("127.0.0.1", 80)
    monkeypatch.setattr(socket.socket, "bind", refused(errno.EINVAL))
    with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:8000: {os.strerror(errno.EINVAL)}"):
        bind("127.0.0.1", 8000)


def raw_request(url, head: bytes, then: bytes = b"") -> tuple[int, dict]:
    """(status, JSON body) of a request written by hand on a socket: `head` (request line and headers, up to
    the blank line) and `then`, part of a body; the answer is read until the server closes the connection."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + then)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_body_over_4_mib_is_413_before_it_is_read(server, client):
    big = 4 * 2**20 + 1
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {big}\r\n\r\n").encode()
    status, answer = raw_request(server, head, b"{" + b" " * 1000)  # told by Content-Length: not waited for
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b" " * 2**20  # found while reading: "{" and 4 MiB, and no more (unread bytes would reset the socket)
    body = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for _ in range(4))
    status, answer = raw_request(server, head, b"1\r\n{\r\n" + body)
    assert status == 413 and set(answer["error"]) == {"message", "type", "param", "code"}
    assert client.models.list().data


def test_a_request_being_checked_does_not_hold_up_other_clients(server, client, monkeypatch):
    """Checking and tokenizing a body runs in a worker thread: /health answers while it is under way."""
    from qwentune.apps import serve

    started, release = threading.Event(), threading.Event()
    real = serve.parse_chat

    def slow_parse(body, served):
        started.set()
        release.wait(20)
        return real(body, served)

    monkeypatch.setattr(serve, "parse_chat", slow_parse)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(post, f"{server}/chat/completions", {"model": "finetuned",
                                                                  "messages": conversation(QA[0][0])})
        try:
            assert started.wait(20)
            with urllib.request.urlopen(f"{server.rsplit('/v1', 1)[0]}/health", timeout=3) as response:
                assert json.loads(response.read()) == {"status": "ok"}
        finally:
            release.set()
        assert waiting.result(60)[0] == 200


def test_a_client_that_leaves_while_sending_its_body_is_not_an_error(loaded):
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    batcher, running = start(loaded)  # uvicorn's logging set-up first: it removes the handlers it finds
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        with running as url:
            host, port = url.split("//")[1].split("/")[0].split(":")
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"mo".encode())
                threading.Event().wait(0.2)  # the handler is reading the body
            state = running.server.server_state
            for _ in range(500):  # until the server has finished with the connection and its request
                if not state.connections and not state.tasks:
                    break
                threading.Event().wait(0.01)
            threading.Event().wait(0.1)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        batcher.close(timeout=10)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []
