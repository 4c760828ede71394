"""The dataset registry YAML: read as UTF-8 (a BOM allowed); another encoding is one error about the file."""

import pytest

from qwentune.data.registry import load_registry
from qwentune.errors import UserError

REGISTRY = "# 我的数据集\nmy_chats:\n  file: chats.jsonl\n  format: sharegpt\n  description: 客服对话\n"


def test_registry_with_a_bom_reads(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_bytes(REGISTRY.encode("utf-8-sig"))
    entry = load_registry(str(path))["my_chats"]
    assert (entry.file, entry.format, entry.description) == (str(tmp_path / "chats.jsonl"), "sharegpt", "客服对话")


def test_registry_in_another_encoding_names_the_file_and_line(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_bytes(REGISTRY.encode("gbk"))
    with pytest.raises(UserError) as caught:
        load_registry(str(path))
    assert str(caught.value) == f"{path}: not UTF-8 text (line 1); save it as UTF-8."


def registry_file(tmp_path, text):
    path = tmp_path / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("columns", ["[question, answer]", "question", "{instruction: [question]}"])
def test_columns_that_are_not_a_mapping_are_one_line_naming_the_entry(tmp_path, columns):
    """Not "TypeError: 'list' object is not a mapping" when the data is read, but the entry, the key, the fix."""
    from qwentune.data.sources import resolve

    path = registry_file(tmp_path, f"my_set:\n  file: chats.jsonl\n  columns: {columns}\n")
    (tmp_path / "chats.jsonl").write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    with pytest.raises(UserError) as caught:
        resolve("my_set", "auto", {}, str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: entry 'my_set': columns must be a mapping such as {{instruction: question}}")
    assert "\n" not in message and message.endswith(".")
    from qwentune.config import load_config  # the same value given as data.columns: one line there too

    with pytest.raises(UserError, match=r"^command line \(--columns\): data.columns must be a mapping of names to text"):
        load_config(None, [("columns", columns)])


def test_every_field_of_the_wrong_type_is_reported_together(tmp_path):
    path = registry_file(tmp_path, (
        "good:\n  hub_id: someone/good\n"
        "listed: [file, chats.jsonl]\n"
        "typed:\n  hub_id: [a, b]\n  split: {train: 1}\n  subset: [x]\n  format: markdown\n"
        "  columns: question\n  description: [x]\n"
        "both:\n  hub_id: someone/x\n  file: x.jsonl\n"
        "neither:\n  format: alpaca\n"
        "typo:\n  file: x.jsonl\n  colums: {instruction: q}\n"))
    with pytest.raises(UserError) as caught:
        load_registry(str(path))
    message = str(caught.value)
    where = f"{path}: entry"
    expected = [
        f"{where} 'listed' must be a mapping with 'hub_id' or 'file', such as {{file: chats.jsonl}}; "
        f"got ['file', 'chats.jsonl'].",
        f"{where} 'typed': hub_id must be a string, got ['a', 'b'].",
        f"{where} 'typed': split must be a string, got {{'train': 1}}.",
        f"{where} 'typed': subset must be a string, got ['x'].",
        f"{where} 'typed': format must be one of 'auto', 'alpaca', 'sharegpt', 'openai', 'oasst1', 'oasst_tree', "
        f"got 'markdown'.",
        f"{where} 'typed': columns must be a mapping such as {{instruction: question}} (the format's field: your "
        f"column), got 'question'.",
        f"{where} 'typed': description must be a string, got ['x'].",
        f"{where} 'both' needs exactly one of 'hub_id' (a hub dataset) or 'file' (a local file).",
        f"{where} 'neither' needs exactly one of 'hub_id' (a hub dataset) or 'file' (a local file).",
        f"{where} 'typo' has unknown key 'colums'; did you mean 'columns'?",
    ]
    assert message == f"{len(expected)} problems: " + " ".join(f"({i}) {m}" for i, m in enumerate(expected, start=1))


def test_every_format_and_field_is_accepted_and_empty_values_keep_the_default(tmp_path):
    """Each format the converters know is accepted by the registry and by data.dataset_format alike."""
    from qwentune.config import load_config
    from qwentune.data.convert import FORMATS

    text = "".join(f"set_{fmt}:\n  hub_id: someone/{fmt}\n  format: {fmt}\n  split: 2023\n  subset:\n"
                   f"  columns: {{instruction: question, output: 42}}\n  description: 数据\n" for fmt in FORMATS)
    registry = load_registry(str(registry_file(tmp_path, text)))
    for fmt in FORMATS:
        entry = registry[f"set_{fmt}"]
        assert (entry.format, entry.split, entry.subset, entry.columns) == (
            fmt, "2023", None, {"instruction": "question", "output": "42"})
        assert load_config(None, [("dataset_format", fmt)]).data.dataset_format == fmt


def test_broken_yaml_is_one_line_with_its_line_number(tmp_path):
    path = registry_file(tmp_path, "my_set:\n  file: a.jsonl\n  columns: {instruction: q\n")
    with pytest.raises(UserError) as caught:
        load_registry(str(path))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{path}:4: not valid YAML")


def test_a_misspelt_file_key_is_one_problem_not_two(tmp_path):
    path = registry_file(tmp_path, "my_set:\n  fille: mine.jsonl\n")
    with pytest.raises(UserError) as caught:
        load_registry(str(path))
    assert str(caught.value) == f"{path}: entry 'my_set' has unknown key 'fille'; did you mean 'file'?"


def test_a_missing_registry_file_is_refused_even_for_a_local_dataset_file(tmp_path):
    from qwentune.data.sources import resolve

    data = tmp_path / "qa.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"no-registry\.yaml: dataset registry file not found"):
        resolve(str(data), registry_file=str(tmp_path / "no-registry.yaml"))
