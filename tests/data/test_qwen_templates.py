"""Label masks against the real Qwen2.5-Instruct and Qwen3 chat templates (tests/templates), and the thinking
policy's data side: reasoning fields kept, rendered the way Qwen3 renders them, and trained."""

import pytest

from qwentune.data.convert import convert_records
from qwentune.data.tokenize import IGNORE_INDEX, KEPT, tokenize_batch
from qwentune.models.tokenizer import control_tokens, end_of_turn_token
from qwentune.thinking import split_thinking, with_reasoning
from tests.helpers import QWEN3_TEMPLATE, QWEN25_TEMPLATE, build_tiny_tokenizer

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
TWO_TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "法国的首都是哪里？"},
    {"role": "assistant", "content": "法国的首都是巴黎。"},
]


@pytest.fixture(scope="module")
def qwen25():
    return build_tiny_tokenizer(template=QWEN25_TEMPLATE)


@pytest.fixture(scope="module")
def qwen3():
    return build_tiny_tokenizer(template=QWEN3_TEMPLATE)


def run(tokenizer, conversations):
    out = tokenize_batch({"messages": conversations}, tokenizer, 4096, end_of_turn_token(tokenizer),
                         control_tokens(tokenizer))
    assert out["status"] == [KEPT] * len(conversations)
    return out


def labelled_runs(tokenizer, ids, labels):
    """The text of each run of labelled tokens, and the text before each run."""
    runs, start = [], None
    for position, label in enumerate(labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = position
        elif label == IGNORE_INDEX and start is not None:
            runs.append((tokenizer.decode(ids[:start]), tokenizer.decode(ids[start:position])))
            start = None
    return runs


def test_qwen25_default_system_prompt_is_rendered_and_never_trained(qwen25):
    out = run(qwen25, [TWO_TURNS])
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert ids == qwen25.apply_chat_template(TWO_TURNS)["input_ids"]
    assert qwen25.decode(ids).startswith(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n")
    runs = labelled_runs(qwen25, ids, labels)
    assert [text for _, text in runs] == [m["content"] + "<|im_end|>" for m in TWO_TURNS[1::2]]
    # What precedes each reply is exactly the prompt the model gets at inference.
    for (before, _), index in zip(runs, (1, 3)):
        assert before == qwen25.apply_chat_template(TWO_TURNS[:index], add_generation_prompt=True, tokenize=False)


def test_qwen25_own_system_prompt_replaces_the_default(qwen25):
    messages = [{"role": "system", "content": "你是一个乐于助人的助手。"}] + TWO_TURNS[:2]
    text = qwen25.decode(run(qwen25, [messages])["input_ids"][0])
    assert QWEN_SYSTEM not in text and text.startswith("<|im_start|>system\n你是一个乐于助人的助手。<|im_end|>")


def test_qwen3_reply_without_reasoning_trains_after_the_empty_think_block(qwen3):
    """Qwen3 writes `<think>\\n\\n</think>\\n\\n` before the last reply: it is the non-thinking generation
    prompt, so it is context, not a target; training sees exactly what enable_thinking=False inference sees."""
    messages = TWO_TURNS[:2]
    out = run(qwen3, [messages])
    ids = out["input_ids"][0]
    assert ids == qwen3.apply_chat_template(messages)["input_ids"]
    [(before, trained)] = labelled_runs(qwen3, ids, out["labels"][0])
    assert trained == "The capital of France is Paris.<|im_end|>"
    assert before == qwen3.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False,
                                               enable_thinking=False)
    assert before.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize("reply", [
    {"role": "assistant", "content": "Paris.", "reasoning_content": "France's capital is Paris."},
    {"role": "assistant", "content": "Paris.", "think": "France's capital is Paris."},
    {"role": "assistant", "content": "<think>France's capital is Paris.</think>Paris."},
], ids=["reasoning_content", "think", "inline"])
def test_qwen3_reasoning_is_kept_and_trained_after_the_thinking_prompt(qwen3, reply):
    record = {"messages": [{"role": "user", "content": "What is the capital of France?"}, reply]}
    [conversation] = convert_records([record]).conversations
    assert conversation["messages"][-1]["content"] == "<think>\nFrance's capital is Paris.\n</think>\n\nParis."
    out = run(qwen3, [conversation["messages"]])
    [(before, trained)] = labelled_runs(qwen3, out["input_ids"][0], out["labels"][0])
    assert trained == "<think>\nFrance's capital is Paris.\n</think>\n\nParis.<|im_end|>"
    assert before == qwen3.apply_chat_template(conversation["messages"][:1], add_generation_prompt=True,
                                               tokenize=False, enable_thinking=True)


def test_qwen3_drops_reasoning_of_earlier_turns_as_at_inference(qwen3):
    messages = [dict(m) for m in TWO_TURNS]
    messages[1]["content"] = with_reasoning(messages[1]["content"], "Recall the capital.")
    messages[3]["content"] = with_reasoning(messages[3]["content"], "回忆首都。")
    out = run(qwen3, [messages])
    ids = out["input_ids"][0]
    assert ids == qwen3.apply_chat_template(messages)["input_ids"]
    assert "Recall the capital." not in qwen3.decode(ids)
    runs = labelled_runs(qwen3, ids, out["labels"][0])
    assert [text for _, text in runs] == ["The capital of France is Paris.<|im_end|>",
                                          "<think>\n回忆首都。\n</think>\n\n法国的首都是巴黎。<|im_end|>"]
    # The second reply's context is what inference gives the model in turn two, thinking on.
    assert runs[1][0] == qwen3.apply_chat_template(messages[:3], add_generation_prompt=True, tokenize=False)


def test_reasoning_field_on_alpaca_and_sharegpt_records():
    alpaca = {"instruction": "2+2?", "output": "4", "reasoning_content": "two plus two"}
    sharegpt = {"conversations": [{"from": "human", "value": "2+2?"},
                                  {"from": "gpt", "value": "4", "think": "two plus two"}]}
    for record in (alpaca, sharegpt):
        [conversation] = convert_records([record]).conversations
        assert conversation["messages"][-1]["content"] == "<think>\ntwo plus two\n</think>\n\n4"


def test_reasoning_without_an_answer_is_an_empty_reply():
    converted = convert_records([{"instruction": "2+2?", "output": "<think>hmm</think>", "input": ""}])
    assert converted.conversations == [] and converted.skipped["empty_reply"] == 1


def test_reasoning_field_must_be_text():
    from qwentune.errors import UserError

    with pytest.raises(UserError, match="reasoning_content"):
        convert_records([{"instruction": "2+2?", "output": "4", "reasoning_content": 4}])


@pytest.mark.parametrize("text, expected", [
    ("<think>\nR\n</think>\n\nA", ("R", "A")),
    ("R</think>A", ("R", "A")),
    ("plain answer", ("", "plain answer")),
    ("<think>\ncut off before it clo", ("cut off before it clo", "")),
    ("<think>\n\n</think>\n\nA", ("", "A")),
])
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


def test_empty_inline_thinking_is_no_reasoning():
    assert with_reasoning("<think>\n\n</think>\n\nA") == "A"


def test_enable_thinking_reaches_the_prompt_only_where_the_template_thinks(qwen3, qwen25):
    from qwentune.inference.generate import prompt_length, prompt_text

    question = [{"role": "user", "content": "2+2?"}]
    assert prompt_text(qwen3, question, False) == prompt_text(qwen3, question) + "<think>\n\n</think>\n\n"
    assert prompt_text(qwen3, question, True) == prompt_text(qwen3, question)  # Qwen3 thinks by default
    block = len(qwen3("<think>\n\n</think>\n\n", add_special_tokens=False)["input_ids"])
    assert prompt_length(qwen3, question, False) == prompt_length(qwen3, question) + block
    assert prompt_text(qwen25, question, False) == prompt_text(qwen25, question, True) == prompt_text(qwen25, question)


def test_cached_tokenizations_are_keyed_on_the_labelling(qwen3, tmp_path):
    from qwentune.config import DataConfig
    from qwentune.data.preprocess import data_settings
    from qwentune.data.tokenize import LABELLING_VERSION

    source = tmp_path / "d.jsonl"
    source.write_text('{"instruction": "q", "output": "a"}\n', encoding="utf-8")
    assert data_settings(DataConfig(), 42, qwen3, source)["labelling_version"] == LABELLING_VERSION
