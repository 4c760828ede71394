"""Read records (one dict per example) from local json, jsonl, csv and parquet files.

A malformed JSON line is fatal and named by file and line: silently skipping it would
hide a broken export. JSON files may hold either one array or one object per line.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from ..errors import UserError

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".json.gz", ".jsonl.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix.lower())


def _read_text(path: Path) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8.") from None


def _json_lines(path: Path, text: str) -> list[dict[str, Any]]:
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
        records.append(record)
    return records


def parse_json(path: Path, text: str | None = None) -> Any:
    """One JSON document; a syntax error becomes a UserError naming the file and line."""
    text = _read_text(path) if text is None else text
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
        return _json_lines(path, text)
    data = parse_json(path, text)
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise UserError(f"{path}: item {index} of the JSON array is a {type(record).__name__}, not an object.")
    return data


def _arrow_records(path: Path, kind: str) -> list[dict[str, Any]]:
    import pyarrow as pa

    try:
        if kind == "csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:  # unreadable, or not a valid CSV / Parquet file
        raise UserError(f"{path}: cannot read this {kind} file ({str(exc).splitlines()[0]}); check that it is valid.") from None
    return table.to_pylist()


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of one file, or of every supported file in a directory (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _suffix(p) in SUFFIXES)
        if not files:
            raise UserError(f"{path}: no .json, .jsonl, .csv or .parquet files in this directory.")
        return [record for file in files for record in read_records(file)]
    if not path.is_file():
        raise UserError(f"{path}: file not found; check the path.")
    kind = _suffix(path)
    if kind in (".jsonl", ".jsonl.gz"):
        records = _json_lines(path, _read_text(path))
    elif kind in (".json", ".json.gz"):
        records = _json_document(path, _read_text(path))
    elif kind == ".csv":
        records = _arrow_records(path, "csv")
    elif kind == ".parquet":
        records = _arrow_records(path, "parquet")
    else:
        raise UserError(f"{path}: unsupported file type '{path.suffix}'; use .json, .jsonl, .csv or .parquet.")
    return records
