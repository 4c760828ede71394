import gzip
import json

import pytest

from qwentune.data.readers import read_records
from qwentune.errors import UserError

ROWS = [{"instruction": "你好", "output": "hi"}, {"instruction": "2+2", "output": "4"}]


def test_json_array_jsonl_gz_csv_parquet_and_directory(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n\n", encoding="utf-8")
    (tmp_path / "c.csv").write_text("instruction,output\n你好,hi\n2+2,4\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    with gzip.open(tmp_path / "e.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in ROWS))
    (tmp_path / "f.json").write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")  # JSONL named .json
    for name in ("a.json", "b.jsonl", "d.parquet", "e.jsonl.gz", "f.json"):
        assert read_records(tmp_path / name) == ROWS, name
    assert [{k: str(v) for k, v in r.items()} for r in read_records(tmp_path / "c.csv")] == [
        {k: str(v) for k, v in r.items()} for r in ROWS]
    assert len(read_records(tmp_path)) == 6 * len(ROWS)


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": }\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON .*fix or delete that line"):
        read_records(path)


def test_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"instruction": "a",\n   "output": "b",}\n]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.json:3: not valid JSON"):
        read_records(path)


@pytest.mark.parametrize("name, content, message", [
    ("list.jsonl", "[1, 2]\n", "expected a JSON object per line"),
    ("items.json", "[1, 2]", "item 0 of the JSON array is a int"),
    ("latin1.json", None, "not UTF-8 text"),
    ("notes.txt", "x", "unsupported file type"),
])
def test_other_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.write_bytes('[{"instruction": "caf\xe9"}]'.encode("latin-1"))
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_records(path)


def test_missing_file_and_empty_directory(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_records(tmp_path / "nope.json")
    with pytest.raises(UserError, match="no .json"):
        read_records(tmp_path)
