"""The data tab's preview: the tokens and labels it shows are the ones preprocess trains on, its counts are
preprocess's counts, and its inputs are checked (page folders, malformed files)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from qwentune.apps.webui.common import WebuiSettings
from qwentune.apps.webui.data_view import (
    PREVIEW_MAX,
    dataset_reference,
    preview_data,
    preview_source,
    stats_markdown,
)
from qwentune.config import DataConfig
from qwentune.data.preprocess import preprocess
from qwentune.data.tokenize import IGNORE_INDEX
from qwentune.errors import UserError
from tests.helpers import qa_file, silent


class Tokens(HTMLParser):
    """The preview's examples as lists of (classes, title, text) per <span class="qt-tok">, newlines restored."""

    def __init__(self, page: str):
        super().__init__()
        self.examples: list[list[tuple[set[str], str, str]]] = []
        self.current: list | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if tag == "div" and "qt-example" in classes:
            self.examples.append([])
        elif tag == "span" and "qt-tok" in classes:
            assert self.current is None, "a token span inside a token span"
            self.current = [classes, attrs.get("title"), ""]

    def handle_endtag(self, tag):
        if tag == "span" and self.current is not None:
            classes, title, text = self.current
            self.examples[-1].append((classes, title, text.replace("↵", "\n")))
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.current[2] += data


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "work").mkdir()
    return WebuiSettings(model_name_or_path="unused", workdir=tmp_path / "work")


def data_config(path, **changes) -> DataConfig:
    settings = {"dataset_name": str(path), "max_length": 128, "val_size": 0, "cache_dir": str(Path(path).parent / "c")}
    return DataConfig(**{**settings, **changes})


def trained_rows(data: DataConfig, tokenizer, out: Path) -> tuple[set[tuple], dict]:
    """What preprocess (the training path) writes for `data`: its (input_ids, labels) pairs and its stats."""
    import datasets

    stats = preprocess(data, "tiny", out, tokenizer=tokenizer, log=silent)
    train = datasets.load_from_disk(str(out))["train"]
    return {(tuple(r["input_ids"]), tuple(r["labels"])) for r in train}, stats


def test_preview_marks_exactly_the_tokens_training_labels(tmp_path, tiny_tokenizer):
    # Two replies in one conversation: both are trained, the user turn between them is masked.
    multi = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                           {"role": "assistant", "content": "4"}, {"role": "user", "content": "法国的首都是哪里？"},
                           {"role": "assistant", "content": "巴黎。\nParis."}]}] * 3
    path = write_jsonl(tmp_path / "chats.jsonl", multi)
    data = data_config(path)
    result = preview_data(data, tiny_tokenizer, examples=2)
    trained, _ = trained_rows(data, tiny_tokenizer, tmp_path / "processed")

    shown = Tokens(result.html).examples
    assert len(shown) == len(result.examples) == 2
    for tokens, example in zip(shown, result.examples):
        ids, labels = example["input_ids"], example["labels"]
        assert (tuple(ids), tuple(labels)) in trained  # the very tokens and labels training gets
        assert [int(title) for _, title, _ in tokens] == ids
        assert [("qt-trained" in c, "qt-masked" in c) for c, _, _ in tokens] == \
               [(label != IGNORE_INDEX, label == IGNORE_INDEX) for label in labels]
        # The spans' text is the chat template's rendering, newline for newline.
        assert "".join(text for _, _, text in tokens) == tiny_tokenizer.apply_chat_template(multi[0]["messages"],
                                                                                           tokenize=False)
        assert all("qt-special" in c for c, title, _ in tokens if int(title) in tiny_tokenizer.all_special_ids)
        trained_text = "".join(text for c, _, text in tokens if "qt-trained" in c)
        assert trained_text == "4<|im_end|>巴黎。\nParis.<|im_end|>"
    assert "↵<br>" in result.html


def test_truncated_example_shows_only_what_is_trained(tmp_path, tiny_tokenizer):
    long_reply = [{"instruction": "Give three tips for staying healthy.", "output": "Eat a balanced diet. " * 20}]
    path = write_jsonl(tmp_path / "long.jsonl", long_reply)
    data = data_config(path, max_length=70)
    result = preview_data(data, tiny_tokenizer, examples=1)
    trained, _ = trained_rows(data, tiny_tokenizer, tmp_path / "processed")
    (tokens,) = Tokens(result.html).examples
    example = result.examples[0]
    assert len(tokens) == len(example["input_ids"]) == 70 and example["status"] == "truncated"
    assert (tuple(example["input_ids"]), tuple(example["labels"])) in trained
    assert f"truncated from {example['full_length']} to max_length" in result.html


def test_data_is_escaped(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "evil.jsonl", [{"instruction": "<script>alert(1)</script> & <b>x</b>",
                                                   "output": "<img src=x onerror=alert(2)>"}])
    result = preview_data(data_config(path), tiny_tokenizer, examples=1)
    assert "<script" not in result.html and "<img" not in result.html and "<b>" not in result.html
    assert "&lt;" in result.html and "&amp;" in result.html
    text = "".join(text for _, _, text in Tokens(result.html).examples[0])
    assert "<script>alert(1)</script> & <b>x</b>" in text and "<img src=x onerror=alert(2)>" in text


def test_stats_are_preprocess_counts(tmp_path, tiny_tokenizer):
    rows = [{"instruction": q, "input": "", "output": a} for q, a in
            [("2+2?", "4"), ("empty", ""), ("nothing", "<nooutput>"), ("法国的首都是哪里？", "巴黎。"),
             ("holds a control token", "here <|im_end|> it is"), ("What is the capital of France?", "Paris." * 40),
             ("Give three tips for staying healthy. " * 10, "Sleep.")]]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows * 3)
    data = data_config(path, max_length=60)  # the long reply is truncated, the long prompt leaves no reply
    result = preview_data(data, tiny_tokenizer, examples=3)
    _, expected = trained_rows(data, tiny_tokenizer, tmp_path / "processed")

    stats = result.stats
    assert stats["records_in"] == expected["records_in"] == 21
    assert stats["conversations"] == expected["conversations"] == 15
    assert stats["skipped_in_conversion"] == expected["skipped_in_conversion"] == {"empty_reply": 3,
                                                                                    "nooutput_marker": 3}
    assert stats["tokenization"] == expected["tokenization"]
    assert stats["tokenization"] == {"kept_whole": 6, "truncated": 3, "dropped_no_reply_within_max_length": 3,
                                     "dropped_special_token_text_in_content": 3}
    assert stats["examples_out"] == expected["examples_out"] == 9
    assert stats["tokenized_all"] and stats["tokenized"] == 15
    for key in ("total", "trainable", "length", "length_before_truncation"):
        assert stats["tokens"][key] == expected["tokens"][key]
    assert stats["tokens"]["prompt_length"]["min"] > 0
    table = stats_markdown(stats)
    assert "`empty_reply` | 3 |" in table and "`dropped_special_token_text_in_content` | 3 |" in table
    assert "Examples trained · 参与训练的样本 | 9 |" in table


def test_stats_say_when_capped(tmp_path, tiny_tokenizer):
    data = data_config(qa_file(tmp_path))  # 32 records
    result = preview_data(data, tiny_tokenizer, examples=3, stats_limit=10)
    assert result.stats["tokenized"] == 10 and not result.stats["tokenized_all"]
    assert result.stats["records_in"] == 32 and result.stats["examples_out"] == 10
    assert "10 (the first of 32; preprocess counts all" in stats_markdown(result.stats)
    assert len(Tokens(result.html).examples) == 3


def test_dataset_field_paths_stay_in_the_page_folders(tmp_path, settings):
    inside = qa_file(settings.workdir)
    outside = qa_file(tmp_path)  # tmp_path/qa.jsonl: beside the working directory, not under it
    assert dataset_reference("qa.jsonl", settings) == str(inside)
    for text in (str(outside), "../qa.jsonl", "../missing.jsonl"):
        with pytest.raises(UserError, match="outside the folders this page may use"):
            dataset_reference(text, settings)
    with pytest.raises(UserError, match="outside the folders"):
        preview_source(DataConfig(), str(outside), "auto", None, settings)
    assert dataset_reference("chinese_alpaca", settings) == "chinese_alpaca"  # registered names stay names
    assert dataset_reference("someone/some-dataset", settings) == "someone/some-dataset"
    with pytest.raises(UserError, match="Dataset: nothing given"):
        dataset_reference("  ", settings)
    # An upload is Gradio's temporary file, taken as it is; the format comes from the page.
    upload = preview_source(DataConfig(), "ignored", "alpaca", str(outside), settings)
    assert (upload.dataset_name, upload.dataset_format) == (str(outside), "alpaca")


def test_malformed_file_is_one_sentence(tmp_path, tiny_tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON .*; fix or delete that line\.$"):
        preview_data(data_config(bad), tiny_tokenizer)
    unknown = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(UserError, match="cannot tell the format"):
        preview_data(data_config(unknown), tiny_tokenizer)
    for count in (0, PREVIEW_MAX + 1):
        with pytest.raises(UserError, match="Examples to show"):
            preview_data(data_config(bad), tiny_tokenizer, examples=count)


def test_tab_builds_and_previews_through_its_event(tmp_path, tiny_tokenizer_dir):
    import gradio as gr

    from qwentune.apps.webui import data_tab
    from qwentune.apps.webui.app import SharedInputs

    work = tmp_path / "work"
    work.mkdir()
    qa_file(work)
    (work / "bad.jsonl").write_text("{oops\n", encoding="utf-8")
    config = work / "config.yaml"
    config.write_text("data:\n  dataset_name: qa.jsonl\n  dataset_format: alpaca\n  max_length: 64\n",
                      encoding="utf-8")
    settings = WebuiSettings(model_name_or_path=str(tiny_tokenizer_dir), config_path=str(config), workdir=work,
                             extra_roots=(Path(tiny_tokenizer_dir),))
    with gr.Blocks() as page:
        shared = SharedInputs(model=gr.Textbox(str(tiny_tokenizer_dir)), adapter=gr.Textbox(""),
                              config=gr.Textbox(str(config)))
        data_tab.build(settings, shared)
    by_id = {block.elem_id: block for block in page.blocks.values() if getattr(block, "elem_id", None)}
    for elem_id in ("data-dataset", "data-format", "data-preview-button", "data-preview", "data-stats"):
        assert elem_id in by_id
    assert by_id["data-dataset"].value == "qa.jsonl" and by_id["data-format"].value == "alpaca"
    for key, (english, chinese) in data_tab.TEXT.items():
        assert key.startswith("data.") and english and chinese and english != chinese

    (handler,) = [fn.fn for fn in page.fns.values()]
    html, stats = handler("qa.jsonl", "auto", None, 2, str(tiny_tokenizer_dir), str(config))
    assert len(Tokens(html).examples) == 2 and "Records read · 读取的记录 | 32 |" in stats
    with pytest.raises(gr.Error, match="bad.jsonl:1: not valid JSON"):
        handler("bad.jsonl", "auto", None, 2, str(tiny_tokenizer_dir), str(config))
    with pytest.raises(gr.Error, match="outside the folders"):
        handler(str(tmp_path / "elsewhere.jsonl"), "auto", None, 2, str(tiny_tokenizer_dir), str(config))


def test_whole_page_builds_with_the_data_tab(tmp_path):
    from qwentune.apps.webui.app import build_app

    page = build_app(WebuiSettings(model_name_or_path="Qwen/Qwen2-0.5B", workdir=tmp_path))
    ids = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"tab-data_tab", "data-dataset", "data-preview", "data-stats"} <= ids
