import gzip
import json

import pytest

from qwentune.data.convert import convert_records
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
    assert read_records(tmp_path / "c.csv") == ROWS  # "4" stays text: a CSV is read as text, not typed
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


def test_csv_cells_are_text_and_empty_cells_are_null(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer,note\nWhat is 2+2?,4,\n"Say ""hi"", twice",007,NA\n'
                    '"Two lines, please","line 1\nline 2",null\n', encoding="utf-8")
    assert read_records(path) == [
        {"question": "What is 2+2?", "answer": "4", "note": None},
        {"question": 'Say "hi", twice', "answer": "007", "note": "NA"},
        {"question": "Two lines, please", "answer": "line 1\nline 2", "note": "null"}]
    converted = convert_records(read_records(path), columns={"instruction": "question", "output": "answer"})
    assert [c["messages"][-1]["content"] for c in converted.conversations] == ["4", "007", "line 1\nline 2"]


def test_csv_saved_by_excel_with_a_bom_reads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("instruction,input,output\r\n你好,,你好。\r\n".encode("utf-8-sig"))
    assert read_records(path) == [{"instruction": "你好", "input": None, "output": "你好。"}]


@pytest.mark.parametrize("content, message", [
    ("instruction,output\na,b\nc,d,e\n", r"bad.csv:3: the row has 3 field\(s\) but the header has 2; fix that row"),
    ("instruction,output\na\n", r"bad.csv:2: the row has 1 field\(s\) but the header has 2"),
    ("instruction,output,instruction\na,b,c\n", r"bad.csv:1: the header names column 'instruction' twice"),
])
def test_malformed_csv_names_the_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_records(path)


GBK_CSV = "instruction,input,output\nSay hi,,Hi.\n你好,,你好。\n"


@pytest.mark.parametrize("name, text", [
    ("gbk.csv", GBK_CSV),
    ("gbk.jsonl", '{"instruction": "Say hi", "output": "Hi."}\n{"instruction": "你好", "output": "你好。"}\n'),
    ("gbk.json", '[{"instruction": "Say hi", "output": "Hi."},\n {"instruction": "你好", "output": "你好。"}]\n'),
    ("gbk.jsonl.gz", '{"instruction": "Say hi", "output": "Hi."}\n{"instruction": "你好", "output": "你好。"}\n'),
])
def test_a_file_in_another_encoding_is_one_error_about_the_file(tmp_path, name, text):
    """Not "record 1: 'instruction' must be text, got bytes" (record 1 is plain ASCII): the file, its line, the fix."""
    path = tmp_path / name
    raw = text.encode("gbk")
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    line = 3 if name.endswith(".csv") else 2
    with pytest.raises(UserError) as caught:
        convert_records(read_records(path), source=str(path))
    assert str(caught.value) == f"{path}: not UTF-8 text (line {line}); save it as UTF-8."
    with pytest.raises(UserError, match=r"gbk\.\w+(\.gz)?: not UTF-8 text"):  # also inside a directory
        read_records(tmp_path)


def test_csv_with_a_long_answer_reads(tmp_path):
    path = tmp_path / "long.csv"
    answer = "很长的回答。" * 50_000  # 300,000 characters: over the csv module's default cell limit
    path.write_text(f"instruction,output\n总结这本书,{answer}\n", encoding="utf-8")
    assert read_records(path) == [{"instruction": "总结这本书", "output": answer}]


def test_oasst1_rows_saved_as_csv_convert_like_the_json_rows(tmp_path):
    """A CSV is all text: "False" must not read as a deleted message, nor "10" rank before "9"."""
    import csv

    from tests.data.test_convert import oasst_tree_rows

    rows = oasst_tree_rows()
    rows[2]["rank"], rows[3]["rank"] = 10, 9  # the second best answer, then the best: as text "10" < "9"
    path = tmp_path / "oasst1.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:  # what pandas' to_csv writes: True, False, ""
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from_csv = convert_records(read_records(path), "oasst1", languages=["en"])
    from_json = convert_records(rows, "oasst1", languages=["en"])
    assert from_csv.conversations == from_json.conversations and from_csv.skipped == from_json.skipped
    assert from_json.conversations[0]["messages"][1]["content"] == "Best answer: photosynthesis."


EXCEL_ROWS = [{"instruction": "列出三种水果；用分号分开", "input": None, "output": "苹果; 香蕉; 梨"},
              {"instruction": 'Say "hi"; then stop', "input": "a, b", "output": "第一行\r\n第二行"}]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_csv_saved_by_excel_with_semicolons_or_tabs_reads(tmp_path, separator):
    """Excel where the decimal mark is a comma saves "CSV" with ';' (and "Text" with tabs): CRLF, a BOM,
    quotes around cells that hold the separator, a quote or a line break. Empty columns it keeps have no name."""
    import csv
    import io

    handle = io.StringIO(newline="")
    writer = csv.writer(handle, delimiter=separator, lineterminator="\r\n")
    writer.writerow(["instruction", "input", "output", "", ""])
    writer.writerows([[row["instruction"], row["input"] or "", row["output"], "", ""] for row in EXCEL_ROWS])
    path = tmp_path / "excel.csv"
    path.write_bytes(handle.getvalue().encode("utf-8-sig"))
    assert '"Say ""hi""; then stop"' in handle.getvalue()
    assert read_records(path) == EXCEL_ROWS
    converted = convert_records(read_records(path), source=str(path))
    assert converted.conversations[1]["messages"][-1]["content"] == "第一行\r\n第二行"


def test_comma_csv_whose_cells_hold_semicolons_stays_comma_separated(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("instruction,output\nDo x; then y,ok; fine\nDo z;w,sure;\n", encoding="utf-8")
    assert read_records(path) == [{"instruction": "Do x; then y", "output": "ok; fine"},
                                  {"instruction": "Do z;w", "output": "sure;"}]


def test_one_column_csv_reads(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text("instruction\nHello; there\nHi\n", encoding="utf-8")
    assert read_records(path) == [{"instruction": "Hello; there"}, {"instruction": "Hi"}]


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.json.gz", "d.csv.gz"])
@pytest.mark.parametrize("content", [b"\x1f\x8bnotreallygzip", b"plain text, never gzipped\n",
                                     gzip.compress(b'{"instruction": "a", "output": "b"}\n')[:20]],
                         ids=["bad-header", "never-gzipped", "cut-short"])
def test_a_gz_file_that_is_not_gzip_is_one_error_about_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"d\.\w+\.gz: not a valid gzip file"):
        read_records(path)


def test_gzipped_csv_reads_like_the_csv(tmp_path):
    text = "instruction,output\nSay hi,Hi.\n你好,你好。\n"
    (tmp_path / "d.csv").write_text(text, encoding="utf-8")
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    assert read_records(tmp_path / "d.csv.gz") == read_records(tmp_path / "d.csv")
    assert len(read_records(tmp_path / "d.csv.gz")) == 2


def test_a_pretty_printed_object_is_not_called_invalid_json(tmp_path):
    # break-it (webui): a model folder's config.json as a dataset or questions file was reported as
    # "config.json:1: not valid JSON (Expecting property name ...)", though it is valid JSON, just not records.
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "qwen2", "hidden_size": 8}, indent=2), encoding="utf-8")
    with pytest.raises(UserError, match=r"config.json: one JSON object over several lines, not records; give a JSON "
                                        r"array of records"):
        read_records(path)
    broken = tmp_path / "broken.json"  # still JSON Lines with a bad line: still that line
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken.json:2: not valid JSON"):
        read_records(broken)
