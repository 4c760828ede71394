"""Blind human rating: export answers to a sheet without model names, import the scores, compare.

The sheet (CSV for spreadsheets, or JSONL) has one row per answer in shuffled order:
item, prompt, answer, model (a code like M1), score (1-5, to fill in), comment.
The CSV is written as UTF-8 with a BOM, which tells Excel it is UTF-8 (without it Excel shows Chinese as
mojibake); it is read back whether saved with ',', ';' or tabs, with or without a BOM.
The codes are resolved only by the key file written next to it (<sheet>.key.json), so raters
do not know which model wrote what; keep the key away from them.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
from collections import Counter
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_output_file, check_output_file, read_text, require_file, write_json

COLUMNS = ["item", "prompt", "answer", "model", "score", "comment"]
NEEDED = ("model", "score")  # the columns an import reads
SCALE = (1, 5)


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list):  # a conversation: show its last user message
        return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return str(prompt)


def export_sheet(prediction_files: list[str], sheet: str | Path, seed: int = 42) -> Path:
    """Write the blind sheet and its key; return the key's path.

    A blind comparison needs two or more models that answered the same prompts, each item of the sheet
    then having one answer per model. Raises UserError for a sheet name that is not .csv / .jsonl or is a
    directory, fewer than two predictions files, a predictions file that is missing, not UTF-8 text, holds
    no answers or has a line that is not a JSON object with a prediction, and for files whose prompts differ.
    """
    sheet = Path(sheet)
    if sheet.suffix.lower() not in (".csv", ".jsonl"):
        raise UserError(f"{sheet}: the sheet must be a .csv or .jsonl file.")
    check_output_file(sheet, "--output")
    check_output_file(sheet.with_name(sheet.name + ".key.json"), "--output")  # the key is written beside it
    if len(prediction_files) < 2:
        raise UserError("rating export: only one --predictions file; a blind comparison needs two or more, one per "
                        "model, answering the same prompts.")
    rows, key = [], {}
    prompts_of: dict[Path, Counter] = {}
    for number, name in enumerate(prediction_files, start=1):
        path = Path(name)
        if path.is_dir():
            path = path / "predictions.jsonl"
        require_file(path, "predictions", "check the path (evaluation writes predictions.jsonl).")
        code = f"M{number}"
        key[code] = str(path)
        first_row = len(rows)
        for line_number, line in enumerate(read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{line_number}: not valid JSON ({exc.msg}).") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{line_number}: expected a JSON object with a 'prediction'; fix that line.")
            answer = record.get("prediction", record.get("answer"))
            if answer is None:
                raise UserError(f"{path}:{line_number}: no 'prediction' or 'answer' field.")
            rows.append({"prompt": _prompt_text(record.get("prompt", record.get("question", ""))), "answer": answer,
                         "model": code})
        if len(rows) == first_row:
            raise UserError(f"{path}: no answers in this predictions file; give an evaluation's predictions.jsonl.")
        prompts_of[path] = Counter(row["prompt"] for row in rows[first_row:])
    _check_same_prompts(prompts_of)
    random.Random(seed).shuffle(rows)
    rows = [{"item": index, **row, "score": "", "comment": ""} for index, row in enumerate(rows, start=1)]
    is_csv = sheet.suffix.lower() == ".csv"
    with atomic_output_file(sheet, encoding="utf-8-sig" if is_csv else "utf-8", newline="") as handle:
        if is_csv:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        else:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
    key_path = sheet.with_name(sheet.name + ".key.json")
    write_json(key_path, key)
    return key_path


def _check_same_prompts(prompts_of: dict[Path, Counter]) -> None:
    """Raise UserError when a predictions file answers other prompts than the first: its answers would have
    nothing to be compared with."""
    (first, wanted), *others = prompts_of.items()
    for path, have in others:
        if have != wanted:
            only_here, only_there = sum((have - wanted).values()), sum((wanted - have).values())
            raise UserError(f"{path} does not answer the prompts {first} answers ({only_there} of them missing, "
                            f"{only_here} others instead); give predictions of the same evaluation data so the "
                            f"answers pair up.")


def _read_sheet(sheet: Path) -> list[tuple[str, dict]]:
    """(where, row) for each row of a filled sheet: "row N" as a spreadsheet numbers it (the header is
    row 1), or "line N" of a JSONL sheet.

    Raises UserError when it is missing, not UTF-8 text (a CSV saved by Excel as GBK, say; Excel's
    "CSV UTF-8" with its BOM is fine), its header lacks the model or score column under every separator
    (',', ';', tab), or a JSONL line is broken or lacks one of those fields.
    """
    from ..data.readers import csv_rows, numbered_json_lines

    require_file(sheet, "rating sheet", "check the path (rating export writes it).")
    text = read_text(sheet)
    if sheet.suffix.lower() == ".csv":
        return [(f"row {number}", row) for number, row in csv_rows(sheet, text, required=NEEDED)]
    rows = []
    for number, row in numbered_json_lines(sheet, text):
        missing = [name for name in NEEDED if name not in row]
        if missing:
            raise UserError(f"{sheet}:{number}: no '{missing[0]}' field; keep the fields the export wrote "
                            f"({', '.join(COLUMNS)}).")
        rows.append((f"line {number}", row))
    return rows


def import_scores(sheet: str | Path, key_file: str | Path | None = None) -> dict:
    """Scores per model from a filled sheet: count, mean and standard deviation on the 1-5 scale.

    Raises UserError when the sheet or key is missing, not UTF-8 text or malformed, a score is not
    a number from 1 to 5, a row names a model the key does not know, or nothing is scored yet.
    """
    from ..data.readers import parse_json

    sheet = require_file(sheet, "rating sheet", "check the path (rating export writes it).")  # named first
    key_path = Path(key_file) if key_file else sheet.with_name(sheet.name + ".key.json")
    require_file(key_path, "key", "it was written next to the sheet by the export.")
    key = parse_json(key_path, read_text(key_path))
    if not isinstance(key, dict) or not all(isinstance(v, str) for v in key.values()):
        raise UserError(f"{key_path}: not a rating key (model codes to predictions files); "
                        f"use the .key.json the export wrote.")
    scores: dict[str, list[float]] = {code: [] for code in key}
    for where, row in _read_sheet(sheet):
        raw = "" if row.get("score") is None else str(row["score"]).strip()  # a JSON 0 is a score, not a blank
        if not raw:
            continue  # not rated (yet)
        try:  # "3,5" is how Excel writes 3.5 where the decimal mark is a comma
            value = float(raw.replace(",", ".") if raw.count(",") == 1 and "." not in raw else raw)
        except ValueError:
            value = None
        if value is None or not SCALE[0] <= value <= SCALE[1]:
            raise UserError(f"{sheet}: {where} has score '{raw}'; use a number from {SCALE[0]} to {SCALE[1]}.")
        code = str(row.get("model") or "")
        if code not in key:
            raise UserError(f"{sheet}: {where} names model '{code}', which the key does not know.")
        scores[code].append(value)
    if not any(scores.values()):
        raise UserError(f"{sheet}: no scores filled in yet; put 1-5 in the score column.")
    return {
        key[code]: {"rated": len(values), "mean": round(statistics.mean(values), 3) if values else None,
                    "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else None}
        for code, values in scores.items()
    }
