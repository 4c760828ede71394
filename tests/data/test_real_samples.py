"""The converters and the label mask on real public data (../shared/data/real; skipped when absent)."""

import pytest

from qwentune.data.convert import convert_records
from qwentune.data.readers import read_records
from qwentune.data.tokenize import IGNORE_INDEX, KEPT, tokenize_batch
from qwentune.models.tokenizer import control_tokens, end_of_turn_token
from tests.helpers import real_sample

# file -> (format, records in, conversations out, skipped)
EXPECTED = {
    "stanford_alpaca_first200.json": ("alpaca", 200, 199, {"nooutput_marker": 1}),
    "alpaca_zh_machine_translated_first200.json": ("alpaca", 200, 200, {}),
    "alpaca_gpt4_zh_llamafactory_demo_first200.json": ("alpaca", 200, 200, {}),
    "alpaca_gpt4_en_llamafactory_demo_first200.json": ("alpaca", 200, 200, {}),
    "alpaca_data_cleaned_first200.json": ("alpaca", 200, 200, {}),
    # 34 trees, two of them with their (non-English) root filtered out upstream; the two orphans
    # also failed review, and 12 rows are deleted.
    "oasst1_validation_en_first293.jsonl": ("oasst1", 293, 32, {"deleted_messages": 12, "failed_review_messages": 6}),
    "oasst_export_trees_en_100.jsonl": ("oasst_tree", 100, 100, {}),
    "sharegpt_zh_medicalgpt_first200.jsonl": ("sharegpt", 200, 199, {"empty_turn": 1}),
    "sharegpt_fastchat_dummy_first200.json": ("sharegpt", 200, 200, {}),
    "openai_messages_qwen2_sft_example.jsonl": ("openai", 2, 2, {}),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_real_file_converts(name):
    fmt, records_in, out, skipped = EXPECTED[name]
    converted = convert_records(read_records(real_sample(name)), source=name)
    assert (converted.format, converted.records_in, len(converted.conversations), dict(converted.skipped)) == (
        fmt, records_in, out, skipped)
    for conversation in converted.conversations:
        roles = [m["role"] for m in conversation["messages"] if m["role"] != "system"]
        assert roles[::2] == ["user"] * len(roles[::2]) and roles[1::2] == ["assistant"] * len(roles[1::2])
        assert roles[-1] == "assistant" and all(m["content"] for m in conversation["messages"])


def test_oasst1_language_filter_on_real_rows():
    rows = read_records(real_sample("oasst1_validation_en_first293.jsonl"))
    assert convert_records(rows, languages=["zh"]).conversations == []
    assert len(convert_records(rows, languages=["en"]).conversations) == 32


@pytest.mark.parametrize("name", ["alpaca_gpt4_zh_llamafactory_demo_first200.json",
                                  "sharegpt_zh_medicalgpt_first200.jsonl",
                                  "openai_messages_qwen2_sft_example.jsonl",
                                  "oasst_export_trees_en_100.jsonl"])
def test_qwen_label_mask_on_real_conversations(qwen_tokenizer, name):
    """Every conversation: ids == apply_chat_template, labelled tokens == replies + <|im_end|>."""
    conversations = [c["messages"] for c in convert_records(read_records(real_sample(name))).conversations[:60]]
    out = tokenize_batch({"messages": conversations}, qwen_tokenizer, 10**6, end_of_turn_token(qwen_tokenizer),
                         control_tokens(qwen_tokenizer))
    for messages, ids, labels, status in zip(conversations, out["input_ids"], out["labels"], out["status"]):
        assert status == KEPT
        assert ids == qwen_tokenizer.apply_chat_template(messages)["input_ids"]
        replies = "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
        assert qwen_tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == replies
