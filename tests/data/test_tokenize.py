import pytest

from qwentune.data.collate import pad_batch
from qwentune.data.tokenize import (
    DROPPED_CONTROL_TEXT,
    DROPPED_NO_REPLY,
    IGNORE_INDEX,
    KEPT,
    TRUNCATED,
    tokenize_batch,
    truncate,
)
from qwentune.errors import UserError
from qwentune.models.tokenizer import control_tokens, end_of_turn_token, prepare_tokenizer

SINGLE = [{"role": "user", "content": "法国的首都是哪里？"}, {"role": "assistant", "content": "法国的首都是巴黎。"}]
MULTI = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Give three tips for staying healthy."},
    {"role": "assistant", "content": "Eat a balanced diet,\nexercise regularly."},
    {"role": "user", "content": "保持健康？"},
    {"role": "assistant", "content": "保证充足的睡眠。"},
]


def run(tokenizer, conversations, max_length=4096):
    return tokenize_batch({"messages": conversations}, tokenizer, max_length, end_of_turn_token(tokenizer),
                          control_tokens(tokenizer))


def labelled_text(tokenizer, labels):
    return tokenizer.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=False)


def expected_labelled_text(messages, eot="<|im_end|>"):
    return "".join(m["content"] + eot for m in messages if m["role"] == "assistant")


@pytest.mark.parametrize("tokenizer_name", ["tiny_tokenizer", "qwen_tokenizer"])
@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
def test_ids_match_chat_template_and_labels_are_exactly_the_replies(request, tokenizer_name, messages):
    tokenizer = request.getfixturevalue(tokenizer_name)
    out = run(tokenizer, [messages])
    assert out["status"] == [KEPT]
    assert out["input_ids"][0] == tokenizer.apply_chat_template(messages)["input_ids"]
    assert labelled_text(tokenizer, out["labels"][0]) == expected_labelled_text(messages)
    # Where a label is set it is the input token itself (the model shifts internally).
    assert all(l in (IGNORE_INDEX, i) for i, l in zip(out["input_ids"][0], out["labels"][0]))


def test_qwen_base_tokenizer_still_trains_on_im_end(qwen_tokenizer):
    """Qwen2-0.5B (base) says eos is <|endoftext|>; the reply must still end with a labelled <|im_end|>."""
    import copy

    base = copy.deepcopy(qwen_tokenizer)
    base.eos_token = "<|endoftext|>"
    assert end_of_turn_token(base) == "<|im_end|>"
    out = run(base, [SINGLE])
    im_end = base.convert_tokens_to_ids("<|im_end|>")
    labels = [l for l in out["labels"][0] if l != IGNORE_INDEX]
    assert labels[-1] == im_end
    assert base.convert_tokens_to_ids("<|endoftext|>") not in out["input_ids"][0]


def test_pad_equal_to_end_of_turn_does_not_erase_its_label(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = "<|im_end|>"
    out = run(tok, [SINGLE, MULTI])
    batch = pad_batch([{"input_ids": i, "labels": l} for i, l in zip(out["input_ids"], out["labels"])],
                      tok.pad_token_id)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    short = len(out["input_ids"][0])
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()  # padding never trains
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0] == eot).sum() == 1 and (batch["labels"][1] == eot).sum() == 2


def test_tokenizer_without_template_or_pad_gets_chatml_and_a_pad(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    tok.pad_token = None
    prepare_tokenizer(tok)
    assert tok.pad_token == "<|endoftext|>" and "<|im_start|>" in tok.chat_template
    assert run(tok, [SINGLE])["input_ids"][0] == tiny_tokenizer.apply_chat_template(SINGLE)["input_ids"]


def test_truncation_keeps_whole_turns_then_partial_reply_then_drops(tiny_tokenizer):
    full = run(tiny_tokenizer, [MULTI])
    ids, labels = full["input_ids"][0], full["labels"][0]
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    first_turn_end = next(i for i, l in enumerate(labels) if l == eot) + 1
    # Room for more than the first turn but not the second: cut exactly after the first reply.
    cut = truncate(ids, labels, len(ids) - 2)
    assert cut[2] == TRUNCATED and len(cut[0]) == first_turn_end
    assert labelled_text(tiny_tokenizer, cut[1]) == expected_labelled_text(MULTI[:3])
    # Not even the first reply fits: keep what fits of it.
    first_reply_start = labels.index(next(l for l in labels if l != IGNORE_INDEX))
    partial = truncate(ids, labels, first_reply_start + 3)
    assert partial[2] == TRUNCATED and sum(l != IGNORE_INDEX for l in partial[1]) == 3
    # The prompt alone fills max_length: nothing to learn, dropped.
    assert truncate(ids, labels, first_reply_start)[2] == DROPPED_NO_REPLY


def test_control_token_text_inside_content_is_dropped(tiny_tokenizer):
    sneaky = [{"role": "user", "content": "say <|im_end|> please"}, {"role": "assistant", "content": "ok"}]
    assert run(tiny_tokenizer, [sneaky])["status"] == [DROPPED_CONTROL_TEXT]


def test_template_that_rewrites_earlier_turns_is_refused(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                         "{% if loop.last %}{{ m['content'] }}{% else %}{{ m['content'] | upper }}{% endif %}"
                         "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(UserError, match="incrementally"):
        run(tok, [MULTI])
