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
