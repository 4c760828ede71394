"""A long chat fits the model's positions: the oldest turns go, the system prompt and the newest question stay
(issue 17, case 13)."""

import io

import pytest

from qwentune.config import GenerationConfig
from qwentune.inference.generate import prompt_length
from tests.helpers import QA, build_tiny_qwen2, silent

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def turns(n):
    out = []
    for i in range(n):
        question, answer = QA[i % len(QA)]
        out += [{"role": "user", "content": f"{question} ({i})"}, {"role": "assistant", "content": answer}]
    return out


def test_fit_drops_the_oldest_turns_and_keeps_the_system_prompt_and_the_question(tiny_tokenizer):
    from qwentune.inference.context import fit_conversation

    newest = {"role": "user", "content": QA[0][0]}
    messages = [SYSTEM, *turns(6), newest]
    full = prompt_length(tiny_tokenizer, messages)
    assert fit_conversation(tiny_tokenizer, messages, 16, full + 16) is messages  # fits exactly: untouched
    assert fit_conversation(tiny_tokenizer, messages, 16, None) is messages  # positions unknown: untouched
    for positions in range(full + 15, 0, -7):
        fitted = fit_conversation(tiny_tokenizer, messages, 16, positions)
        alone = prompt_length(tiny_tokenizer, [SYSTEM, newest])
        if alone + 16 > positions:
            assert fitted is None
            continue
        assert fitted[0] == SYSTEM and fitted[-1] == newest and fitted[1]["role"] == "user"
        assert fitted[1:] == messages[len(messages) - len(fitted) + 1:]  # a tail of the turns: the oldest went
        assert prompt_length(tiny_tokenizer, fitted) + 16 <= positions
        if len(fitted) + 2 <= len(messages):  # keeping one more turn (a question and its reply) would not fit
            assert prompt_length(tiny_tokenizer, [SYSTEM, *messages[len(messages) - len(fitted) - 1:]]) + 16 > positions
    without_system = turns(3) + [newest]
    fitted = fit_conversation(tiny_tokenizer, without_system, 16, prompt_length(tiny_tokenizer, without_system) + 10)
    assert fitted[0]["role"] == "user" and fitted[-1] == newest and len(fitted) < len(without_system)


@pytest.fixture(scope="module")
def short_model(tmp_path_factory, tiny_tokenizer):
    """The tiny Qwen2 with 96 positions, so that a few turns fill them."""
    from qwentune.models.load import load_for_inference
    from tests.helpers import FP32

    path = build_tiny_qwen2(tmp_path_factory.mktemp("short_qwen2"), tiny_tokenizer, positions=96)
    return load_for_inference(str(path), None, FP32, log=silent)


def test_a_long_chat_drops_its_oldest_turns_says_so_once_and_skips_a_question_that_cannot_fit(short_model):
    from qwentune.inference.chat import chat

    seen = []  # the length of every prompt the model is given: the forward passes of more than one token

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:  # each later step of a generate call feeds one token
            seen.append(ids.shape[1])

    handle = short_model.model.register_forward_pre_hook(record, with_kwargs=True)
    questions = [f"{QA[i % len(QA)][0]} ({i})" for i in range(8)]
    script = [*questions[:6], "What is the capital of France? " * 12, *questions[6:], "/exit"]
    out = io.StringIO()
    settings = GenerationConfig(max_new_tokens=12, repetition_penalty=1.0)
    try:
        chat(short_model, settings, "You are a helpful assistant.", 42, stdin=io.StringIO("\n".join(script) + "\n"),
             stdout=out)
    finally:
        handle.remove()
    text = out.getvalue()
    notice = ("(the conversation is longer than the model's 96 positions allow with max_new_tokens 12; dropping "
              "the oldest turns from now on, keeping the system prompt)")
    assert text.count(notice) == 1
    skipped = [line for line in text.splitlines() if "does not fit the model's 96 positions, so it is skipped" in line]
    assert len(skipped) == 1 and "this question is " in skipped[0]
    assert text.count("model> ") == len(questions)  # every other question answered, the session went on
    assert len(seen) == len(questions) and max(seen) + 12 <= 96


def test_interactive_compare_skips_a_question_that_cannot_fit_and_goes_on(short_model, tmp_path):
    from qwentune.apps.compare import Pair
    from qwentune.apps.interactive import Session

    script = ["What is the capital of France? " * 12, QA[1][0], "/exit"]
    out = io.StringIO()
    Session(Pair(short_model, short_model), GenerationConfig(max_new_tokens=12, repetition_penalty=1.0), None, 42,
            stdin=io.StringIO("\n".join(script) + "\n"), stdout=out, save_path=str(tmp_path / "s.jsonl")).run()
    text = out.getvalue()
    assert text.count("it does not fit the model's 96 positions, so it is skipped") == 1
    assert text.count("[base] ") == text.count("[fine-tuned] ") == 1  # the next question was answered
