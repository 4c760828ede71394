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


# Kind 1: a null where text belongs is an empty turn (skipped and counted as "" is), never the text "None";
# a number, bool, list or object is a one-line error naming the file and record, never str(value).

@pytest.mark.parametrize("history", [[["先说第一点", None]], [[None, "第一点是……"]], [["先说第一点", ""]],
                                     [["  ", "第一点是……"]]])
def test_alpaca_null_history_turn_is_skipped_like_an_empty_one(history):
    record = {"instruction": "继续说", "input": "", "output": "好的，继续。", "history": history}
    out = convert_records([record], source="data.json")
    assert out.conversations == [] and dict(out.skipped) == {"empty_turn": 1}


def test_alpaca_null_fields_count_like_empty_ones():
    records = [{"instruction": None, "input": None, "output": "b"}, {"instruction": "a", "output": None},
               {"instruction": "a", "input": None, "output": "b", "system": None, "history": None}]
    out = convert_records(records, "alpaca")
    assert out.conversations == [{"messages": msgs(("user", "a"), ("assistant", "b"))}]
    assert dict(out.skipped) == {"empty_prompt": 1, "empty_reply": 1}


def test_null_turns_in_conversations_are_empty_turns():
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": None}]}
    openai = {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}]}
    parts = {"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": [{"type": "text", "text": None}]}]}
    assert dict(convert_records([sharegpt], "sharegpt").skipped) == {"empty_turn": 1}
    assert dict(convert_records([openai, parts], "openai").skipped) == {"empty_turn": 2}


def test_oasst_null_text_is_an_empty_message():
    rows = oasst_tree_rows()
    rows[3]["text"] = None  # the best answer: the second best one is followed instead
    out = convert_records(rows, languages=["en"])
    assert out.skipped["empty_messages"] == 1
    assert out.conversations[0]["messages"][1] == {"role": "assistant", "content": "Second best answer."}


def test_wrong_type_message_is_one_sentence_naming_file_and_record():
    records = [{"instruction": "2+2", "output": "4"}, {"instruction": "3+3", "output": "6"},
               {"instruction": "1+1", "output": 2}]
    with pytest.raises(UserError) as caught:
        convert_records(records, source="data.json")
    assert str(caught.value) == "data.json: record 3: 'output' must be text, got int; fix the record."


ALPACA_WRONG_TYPES = [
    ({"instruction": "a", "output": True}, "'output' must be text, got bool"),
    ({"instruction": "a", "output": 4.5}, "'output' must be text, got float"),
    ({"instruction": "a", "output": {"text": "b"}}, "'output' must be text, got dict"),
    ({"instruction": 7, "output": "b"}, "'instruction' must be text, got int"),
    ({"instruction": "a", "input": ["x"], "output": "b"}, "'input' must be text, got list"),
    ({"instruction": "a", "output": "b", "system": 1}, "'system' must be text, got int"),
    ({"instruction": "a", "output": "b", "history": [["q", 4]]}, "'history' pair 1 reply must be text, got int"),
    ({"instruction": "a", "output": "b", "history": [["q", "r"], [["q"], "r"]]},
     "'history' pair 2 prompt must be text, got list"),
    ({"instruction": "a", "output": "b", "history": "q"}, "'history' must be a list of .prompt, reply. pairs"),
    # A record that would be skipped (empty reply) still has its types checked.
    ({"instruction": "a", "output": "", "system": 0}, "'system' must be text, got int"),
]
SHAREGPT_WRONG_TYPES = [
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": 5}]},
     "turn 2 'value' must be text, got int"),
    ({"conversations": [{"from": "human", "value": ["q"]}, {"from": "gpt", "value": "a"}]},
     "turn 1 'value' must be text, got list"),
    ({"conversations": [{"from": 1, "value": "q"}, {"from": "gpt", "value": "a"}]},
     "turn 1 'from' must be text, got int"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": False},
     "'system' must be text, got bool"),
    # After a role we skip, the later turns are still checked.
    ({"conversations": [{"from": "tool", "value": "x"}, {"from": "gpt", "value": {"a": 1}}]},
     "turn 2 'value' must be text, got dict"),
]
OPENAI_WRONG_TYPES = [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},
     "message 2 'content' must be text, got int"),
    ({"messages": [{"role": "user", "content": {"text": "q"}}, {"role": "assistant", "content": "a"}]},
     "message 1 'content' must be text, got dict"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}, {"role": "assistant", "content": "a"}]},
     "message 1 'content' part 1 'text' must be text, got int"),
    ({"messages": [{"role": "user", "content": ["q"]}, {"role": "assistant", "content": "a"}]},
     "message 1 'content' part 1 must be an object, got str"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "system": ["s"]},
     "'system' must be text, got list"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": 1.0}]},
     "message 2 'content' must be text, got float"),
]


@pytest.mark.parametrize("fmt, record, message", [("alpaca", r, m) for r, m in ALPACA_WRONG_TYPES]
                         + [("sharegpt", r, m) for r, m in SHAREGPT_WRONG_TYPES]
                         + [("openai", r, m) for r, m in OPENAI_WRONG_TYPES])
def test_wrong_type_in_a_text_field_is_fatal_and_named(fmt, record, message):
    good = {"alpaca": {"instruction": "a", "output": "b"},
            "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            "openai": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}}[fmt]
    for chosen in (fmt, "auto"):
        with pytest.raises(UserError, match=rf"^data.jsonl: record 2: {message}; fix the record\.$"):
            convert_records([good, record], chosen, source="data.jsonl")


def test_wrong_type_in_a_mapped_column_names_our_field():
    with pytest.raises(UserError, match=r"^x.csv: record 1: 'output' must be text, got int; fix the record\.$"):
        convert_records([{"question": "2+2?", "answer": 4}], columns={"instruction": "question", "output": "answer"},
                        source="x.csv")


def test_oasst_wrong_type_text_names_the_record_and_message():
    rows = oasst_tree_rows()
    rows[4]["text"] = 12
    with pytest.raises(UserError, match=r"^rows.jsonl: record 5: 'text' must be text, got int; fix the record\.$"):
        convert_records(rows, source="rows.jsonl")
    tree = {"message_tree_id": "t", "prompt": {"message_id": "p", "role": "prompter", "text": "q", "replies": [
        {"message_id": "a", "role": "assistant", "text": ["answer"], "replies": []}]}}
    with pytest.raises(UserError, match=r"^trees.jsonl: record 2: 'text' of message a must be text, got list"):
        convert_records([{**tree, "prompt": {**tree["prompt"], "replies": []}}, tree], source="trees.jsonl")
