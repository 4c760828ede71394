"""Read records (one dict per example) from local json, jsonl, csv and parquet files.

A malformed JSON line is fatal and named by file and line: silently skipping it would
hide a broken export. JSON files may hold either one array or one object per line.
Text files are decoded by fsutil.read_text, so a file in another encoding (GBK, Latin-1)
is one error about the file, not a wrong-type error about some record. Every CSV column
is text (an empty cell is a null): guessing types would turn the answer "4" into the number 4.
A CSV may be separated by ',', ';' (what Excel writes where the decimal mark is a comma) or tabs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import read_text

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".json.gz", ".jsonl.gz", ".csv.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix.lower())


def numbered_json_lines(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line of a JSON Lines text.

    Raises UserError naming the file and line of a line that is not valid JSON or not an object.
    """
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); fix or delete that line."
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object per line, got {type(record).__name__}.")
        records.append((number, record))
    return records


def _json_lines(path: Path, text: str) -> list[dict[str, Any]]:
    return [record for _, record in numbered_json_lines(path, text)]


def parse_json(path: Path, text: str | None = None) -> Any:
    """One JSON document (read with fsutil.read_text unless `text` is given).

    Raises UserError naming the file and line of a syntax error, or the line of a byte that is not UTF-8.
    """
    text = read_text(path) if text is None else text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix the file there."
        ) from None


def _json_document(path: Path, text: str) -> list[dict[str, Any]]:
    stripped = text.lstrip()
    if not stripped.startswith("["):
        # `{...}\n{...}` is JSON Lines saved with a .json name: common enough to accept.
        try:
            return _json_lines(path, text)
        except UserError:
            # A pretty-printed object (a model's config.json) is valid JSON: "line 1: not valid JSON" misled.
            try:
                whole = json.loads(text)
            except json.JSONDecodeError:
                whole = None
            if isinstance(whole, dict):
                raise UserError(f"{path}: one JSON object over several lines, not records; give a JSON array of "
                                f"records ([{{...}}, {{...}}]) or one record per line (JSON Lines).") from None
            raise
    data = parse_json(path, text)
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise UserError(f"{path}: item {index} of the JSON array is a {type(record).__name__}, not an object.")
    return data


CSV_SEPARATORS = (",", ";", "\t")
SEPARATOR_NAMES = {",": "','", ";": "';'", "\t": "tab"}


def _csv_reader(text: str, separator: str):
    # The csv module's default cap on one cell (128 KiB) would reject a long document; raising it is harmless.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    return csv.reader(io.StringIO(text, newline=""), delimiter=separator)


def _header(path: Path, text: str, separator: str) -> list[str]:
    reader = _csv_reader(text, separator)
    try:
        return next(reader, [])
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({exc}); fix that line.") from None


def csv_separator(path: Path, text: str, required: tuple[str, ...] = ()) -> str:
    """The separator of a CSV text: ',', ';' or tab.

    The csv module's Sniffer guesses from the first 16 KiB (Excel in many European locales saves with ';');
    when the guess leaves the header one column, or without a `required` column, the first of the others
    that does not wins, so a wrong guess cannot silently give one column. Raises UserError when no
    separator gives the header every `required` column, saying what the header holds.
    """
    try:
        guess = csv.Sniffer().sniff(text[:16384], delimiters="".join(CSV_SEPARATORS)).delimiter
    except csv.Error:  # one column, or too little text to tell
        guess = ","
    order = [guess] + [s for s in CSV_SEPARATORS if s != guess]
    headers = {separator: _header(path, text, separator) for separator in order}
    if not required:
        return next((s for s in order if len(headers[s]) > 1), ",")
    found = next((s for s in order if set(required) <= set(headers[s])), None)
    if found is None:
        widest = max(order, key=lambda s: len(headers[s]))
        shown = ", ".join(repr(name) for name in headers[widest][:8]) or "nothing"
        raise UserError(f"{path}: the header row has {shown} (with ',', ';' or tab as the separator), not the "
                        f"columns {', '.join(required)}; put back the header row as it was written.")
    return found


def csv_rows(path: Path, text: str, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, Any]]]:
    """(row number as a spreadsheet shows it, the header being row 1; record) for each row of a CSV text,
    every cell text and an empty cell None; columns without a name (empty columns Excel keeps) are left out.

    The csv module, not pyarrow: it keeps every cell as text and reads quoted multi-line answers; the
    separator is found by csv_separator (`required`: columns the header must have).
    Raises UserError naming the line of a row whose field count differs from the header's,
    of a duplicated column name, or of a row the csv module cannot parse.
    """
    separator = csv_separator(path, text, required)
    reader = _csv_reader(text, separator)
    try:
        header = next(reader, None)
        if header is None:
            return []
        duplicated = sorted({name for name in header if name and header.count(name) > 1})
        if duplicated:
            raise UserError(f"{path}:1: the header names column '{duplicated[0]}' twice; rename one of them.")
        rows = []
        for row_number, fields in enumerate(reader, start=2):
            if not fields:  # a blank line
                continue
            if len(fields) != len(header):
                raise UserError(f"{path}:{reader.line_num}: the row has {len(fields)} field(s) but the header has "
                                f"{len(header)}; fix that row (put a field that holds a {SEPARATOR_NAMES[separator]} "
                                f"in \"double quotes\").")
            rows.append((row_number, {name: value if value != "" else None
                                      for name, value in zip(header, fields) if name}))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({exc}); fix that line.") from None
    return rows


def _csv_records(path: Path, text: str) -> list[dict[str, Any]]:
    return [record for _, record in csv_rows(path, text)]


def _parquet_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:  # unreadable, or not a valid Parquet file
        raise UserError(f"{path}: cannot read this parquet file ({str(exc).splitlines()[0]}); "
                        f"check that it is valid.") from None
    return table.to_pylist()


def record_files(path: str | Path) -> list[Path]:
    """The files read_records reads for `path`: the file itself, or a directory's supported files sorted by name.

    Raises UserError for a directory without any supported file.
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if _suffix(p) in SUFFIXES)
    if not files:
        raise UserError(f"{path}: no .json, .jsonl, .csv or .parquet files in this directory.")
    return files


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of one file, or of every supported file in a directory (sorted by name).

    Raises UserError for a missing file, an unsupported type, a file that is not UTF-8 text, or
    a malformed JSON line / CSV row (naming the file and line).
    """
    path = Path(path)
    if path.is_dir():
        return [record for file in record_files(path) for record in read_records(file)]
    if not path.is_file():
        raise UserError(f"{path}: file not found; check the path.")
    kind = _suffix(path)
    if kind in (".jsonl", ".jsonl.gz"):
        records = _json_lines(path, read_text(path))
    elif kind in (".json", ".json.gz"):
        records = _json_document(path, read_text(path))
    elif kind in (".csv", ".csv.gz"):
        records = _csv_records(path, read_text(path))
    elif kind == ".parquet":
        records = _parquet_records(path)
    else:
        raise UserError(f"{path}: unsupported file type '{path.suffix}'; use .json, .jsonl, .csv or .parquet "
                        f"(.json, .jsonl and .csv may be gzipped: .jsonl.gz).")
    return records
