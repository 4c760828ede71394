import pytest

from qwentune.data.convert import convert_records, detect_format
from qwentune.data.oasst import flatten_tree_export
from qwentune.errors import UserError


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_alpaca_with_input_system_and_history():
    rec = {"instruction": " 翻译成英文 ", "input": "你好", "output": "Hello\n", "system": "你是翻译。",
           "history": [["1+1?", "2"]]}
    out = convert_records([rec])
    assert out.format == "alpaca"
    assert out.conversations == [{"messages": msgs(("system", "你是翻译。"), ("user", "1+1?"), ("assistant", "2"),
                                                   ("user", "翻译成英文\n你好"), ("assistant", "Hello"))}]


def test_alpaca_skips_records_that_teach_nothing_and_counts_them():
    records = [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "a", "input": "", "output": "  "},
        {"instruction": "Render a 3D model", "input": "", "output": "<nooutput>"},
        {"instruction": "", "input": None, "output": "b"},
    ]
    out = convert_records(records)
    assert len(out.conversations) == 1
    assert dict(out.skipped) == {"empty_reply": 1, "nooutput_marker": 1, "empty_prompt": 1}


def test_alpaca_missing_field_is_fatal_and_named():
    with pytest.raises(UserError, match=r"data.json: record 2: has no 'output' field"):
        convert_records([{"instruction": "a", "output": "b"}, {"instruction": "a"}], "alpaca", source="data.json")


def test_sharegpt_multi_turn_roles_and_order():
    rec = {"conversations": [{"from": "gpt", "value": "orphan greeting"}, {"from": "human", "value": "hi"},
                             {"from": "gpt", "value": "hello"}, {"from": "human", "value": "who are you?"},
                             {"from": "gpt", "value": "an assistant"}, {"from": "human", "value": "unanswered"}],
           "system": "be brief"}
    out = convert_records([rec])
    assert out.format == "sharegpt"
    assert out.conversations[0]["messages"] == msgs(("system", "be brief"), ("user", "hi"), ("assistant", "hello"),
                                                    ("user", "who are you?"), ("assistant", "an assistant"))


def test_sharegpt_skips_tool_roles_and_broken_order():
    records = [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q2"},
                           {"from": "gpt", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
        {"conversations": [{"from": "human", "value": "only a question"}]},
    ]
    out = convert_records(records, "sharegpt")
    assert out.conversations == []
    assert dict(out.skipped) == {"unsupported_role": 1, "turns_out_of_order": 1, "empty_turn": 1,
                                 "no_assistant_turn": 1}


def test_openai_messages_with_content_parts():
    rec = {"messages": [{"role": "system", "content": "sys"},
                        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]},
                        {"role": "assistant", "content": "ok"}]}
    out = convert_records([rec])
    assert out.format == "openai"
    assert out.conversations[0]["messages"] == msgs(("system", "sys"), ("user", "look"), ("assistant", "ok"))
    tool = {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]}
    assert dict(convert_records([tool]).skipped) == {"unsupported_role": 1}


def test_custom_columns_map_onto_alpaca():
    out = convert_records([{"question": "2+2?", "answer": "4"}], columns={"instruction": "question", "output": "answer"})
    assert out.conversations[0]["messages"] == msgs(("user", "2+2?"), ("assistant", "4"))
    with pytest.raises(UserError, match="maps 'output' to column 'reply'"):
        convert_records([{"question": "q"}], columns={"instruction": "question", "output": "reply"})


def test_undetectable_format_says_how_to_fix():
    with pytest.raises(UserError, match="data.dataset_format.*data.columns"):
        convert_records([{"q": "a", "a": "b"}], source="x.jsonl")
    with pytest.raises(UserError, match="contains no records"):
        convert_records([], source="x.jsonl")


def oasst_tree_rows():
    """One English tree with ranked branches, a deleted best reply, a failed review, and an orphan."""
    def row(mid, parent, role, text, rank=None, **extra):
        return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "rank": rank,
                "lang": "en", "deleted": False, "review_result": True, "message_tree_id": "t1", **extra}

    return [
        row("p", None, "prompter", "How do plants eat?"),
        row("ad", "p", "assistant", "Deleted answer.", rank=0, deleted=True),  # would win the tie if kept
        row("a1", "p", "assistant", "Second best answer.", rank=1),
        row("a0", "p", "assistant", "Best answer: photosynthesis.", rank=0),
        row("p2b", "a0", "prompter", "Lower ranked follow-up", rank=1),
        row("p2a", "a0", "prompter", "What about at night?", rank=0),
        row("bad", "p2a", "assistant", "Failed review.", rank=0, review_result=False),  # ranked beats unranked
        row("b", "p2a", "assistant", "They respire.", rank=None),
        row("p3", "b", "prompter", "A last question nobody answered."),
        row("x", "gone", "assistant", "My parent was filtered out."),
        row("q", None, "prompter", "¿Qué tal?", lang="es"),
        row("qa", "q", "assistant", "Bien.", rank=0, lang="es"),
    ]


def test_oasst1_follows_best_ranked_path_and_skips_bad_rows():
    out = convert_records(oasst_tree_rows(), languages=["en"])
    assert out.format == "oasst1"
    assert out.conversations == [{"messages": msgs(
        ("user", "How do plants eat?"), ("assistant", "Best answer: photosynthesis."),
        ("user", "What about at night?"), ("assistant", "They respire."))}]
    assert dict(out.skipped) == {"deleted_messages": 1, "failed_review_messages": 1, "orphan_messages": 1,
                                 "trees_in_other_languages": 1}
    assert len(convert_records(oasst_tree_rows()).conversations) == 2  # no language filter: es tree too


def test_oasst_tree_export_gives_the_same_conversation():
    rows = [r for r in oasst_tree_rows() if r["message_tree_id"] == "t1" and r["lang"] == "en" and r["message_id"] != "x"]
    by_parent = {}
    for r in rows:
        by_parent.setdefault(r["parent_id"], []).append(r)

    def nest(r):
        return {**{k: v for k, v in r.items() if k not in ("parent_id", "message_tree_id")},
                "replies": [nest(c) for c in by_parent.get(r["message_id"], [])]}

    export = [{"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": nest(by_parent[None][0])}]
    assert detect_format(export[0]) == "oasst_tree"
    assert len(flatten_tree_export(export)) == len(rows)
    out = convert_records(export)
    assert out.conversations[0]["messages"][-1] == {"role": "assistant", "content": "They respire."}


def test_system_prompt_is_added_only_where_missing():
    records = [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": "b", "system": "own"}]
    out = convert_records(records, system_prompt="default")
    assert [c["messages"][0]["content"] for c in out.conversations] == ["default", "own"]
