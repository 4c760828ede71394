"""The chat tab's handler called directly (the browser test drives the page itself), on the tiny model and the
adapter trained to answer the QA pairs."""

from __future__ import annotations

import threading
import time

import pytest

from qwentune.apps.webui import chat_tab
from qwentune.apps.webui.models import MODELS, ModelSpec, row_config
from qwentune.errors import UserError
from tests.apps.webui.tab_helpers import page_config_file, page_settings
from tests.helpers import QA

GREEDY = dict(max_new_tokens=12, temperature=0.7, top_p=0.9, repetition_penalty=1.0, do_sample=False)


@pytest.fixture
def page(tmp_path, tmp_path_factory, tiny_model_dir, trained):
    config = page_config_file(tmp_path, trained)
    return page_settings(tmp_path_factory, tiny_model_dir, trained, config)


def ask(page, side, message, state=None, adapter=None, system="", **settings):
    """Every yield of one chat turn: (base window, fine-tuned window, state, input box, status)."""
    settings = {**GREEDY, **settings}
    return list(chat_tab.respond(page, page.model_name_or_path, page.adapter_path if adapter is None else adapter,
                                 page.config_path, side, system, settings["max_new_tokens"], settings["temperature"],
                                 settings["top_p"], settings["repetition_penalty"], settings["do_sample"], message,
                                 state))


def replies(yields, window):
    """The assistant text of the last message of a window (0: base, 1: fine-tuned) at every yield."""
    return [y[window][-1]["content"] if y[window] and y[window][-1]["role"] == "assistant" else None for y in yields]


def grows(texts):
    """The reply appeared piece by piece: more than one distinct text, each one extending the one before."""
    texts = [x for x in texts if x]
    return len(set(texts)) > 1 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))


def test_finetuned_side_streams_the_trained_answer_and_keeps_the_history(page):
    question, answer = QA[0]  # Chinese: the streamer gives out each finished character
    first = ask(page, "finetuned", question)
    assert first[-1][1] == [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    assert first[-1][0] == []  # the base window was not asked
    assert grows(replies(first, 1)) and all(y[3] == "" for y in first)  # the input box is emptied
    state = first[-1][2]
    assert state["finetuned"] == first[-1][1] and state["base"] == []

    second = ask(page, "finetuned", QA[2][0], state)
    history = second[-1][2]["finetuned"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in history[:3]] == [question, answer, QA[2][0]] and history == second[-1][1]
    # The adapter learned single questions only: asked after the first turn it answers otherwise than alone,
    # which shows that the earlier turn was in the prompt.
    alone = ask(page, "finetuned", QA[2][0])[-1][1][-1]["content"]
    assert alone == QA[2][1] and history[3]["content"] != alone
    assert state["finetuned"] == first[-1][1]  # the earlier state was not changed in place


def test_base_side_streams_growing_text_without_the_adapter(page):
    turn = ask(page, "base", QA[0][0])
    assert grows(replies(turn, 0))
    reply = turn[-1][0][-1]["content"]
    assert reply != QA[0][1]  # the random base never learned the answer
    # The same reply as the CLI's streamed generation with the adapter switched off (greedy).
    from qwentune.inference.generate import stream

    cfg = row_config(page, page.config_path, page.model_name_or_path, page.adapter_path)
    loaded, adapter_on = MODELS.get(ModelSpec.of(cfg)).side("base")
    assert not adapter_on
    settings = chat_tab.chat_settings(cfg.generation, **GREEDY)
    assert "".join(stream(loaded, [{"role": "user", "content": QA[0][0]}], settings, adapter=False)).strip() == reply


def test_both_sides_answer_one_after_the_other_base_first(page):
    turn = ask(page, "both", QA[0][0])
    base, tuned = replies(turn, 0), replies(turn, 1)
    assert grows(base) and grows(tuned)
    first_tuned = min(i for i, text in enumerate(tuned) if text)
    assert base[first_tuned] == base[-1]  # the fine-tuned reply began after the base reply was complete
    assert turn[-1][1][-1]["content"] == QA[0][1]
    state = turn[-1][2]
    assert len(state["base"]) == len(state["finetuned"]) == 2
    again = ask(page, "both", QA[1][0], state)[-1][2]
    assert len(again["base"]) == len(again["finetuned"]) == 4


def test_an_empty_message_changes_nothing(page):
    state = ask(page, "finetuned", QA[0][0])[-1][2]
    nothing = ask(page, "finetuned", "   ", state)
    assert len(nothing) == 1 and nothing[0][2] is state


def test_bad_settings_are_one_sentence_before_anything_is_generated(page):
    with pytest.raises(UserError, match=r"chat settings: generation.temperature must be positive when do_sample"):
        ask(page, "base", QA[0][0], do_sample=True, temperature=0)
    with pytest.raises(UserError, match=r"chat settings: generation.max_new_tokens must be at least 1"):
        ask(page, "base", QA[0][0], max_new_tokens=0)
    with pytest.raises(UserError, match=r"chat settings: generation.top_p must be in \(0, 1\]"):
        ask(page, "base", QA[0][0], top_p=1.5)


def test_finetuned_side_without_an_adapter_is_refused(page):
    with pytest.raises(UserError, match="no fine-tuned model"):
        ask(page, "both", QA[0][0], adapter="")
    assert ask(page, "base", QA[0][0], adapter="")[-1][0][-1]["content"]  # the base alone still answers


def test_a_question_too_long_for_the_model_is_refused_whole(page):
    with pytest.raises(UserError, match="does not fit the model's 512 positions"):
        ask(page, "finetuned", "What is the capital of France? " * 200)


def test_a_second_session_waits_for_the_model_and_says_so(page):
    """Generation on one model runs one call at a time: a session asking while another generates is shown
    that it waits, then gets its reply."""
    cfg = row_config(page, page.config_path, page.model_name_or_path, page.adapter_path)
    shared = MODELS.get(ModelSpec.of(cfg))
    seen: list = []
    with shared.generating():  # another session generating
        def other_session():
            for update in chat_tab.respond(page, page.model_name_or_path, page.adapter_path, page.config_path,
                                           "finetuned", "", 12, 0.7, 0.9, 1.0, False, QA[0][0], None):
                seen.append(update)

        worker = threading.Thread(target=other_session)
        worker.start()
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen[0][1][-1]["content"] == chat_tab.WAITING
        time.sleep(0.2)
        assert worker.is_alive() and len(seen) == 1  # nothing generated while the other session holds the model
    worker.join(timeout=60)
    assert seen[-1][1][-1]["content"] == QA[0][1]


def test_the_first_question_says_the_model_is_loading(page):
    MODELS.clear()
    turn = ask(page, "finetuned", QA[1][0])
    assert turn[0][4] == chat_tab.LOADING and turn[0][1] == []  # said before the (long) load, nothing else shown
    assert turn[-1][4] == "" and turn[-1][1][-1]["content"] == QA[1][1]
    assert ask(page, "finetuned", QA[1][0])[0][4] == ""  # loaded: no note
