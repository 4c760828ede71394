"""Blind human rating: export answers to a sheet without model names, import the scores, compare.

The sheet (CSV for spreadsheets, or JSONL) has one row per answer in shuffled order:
item, prompt, answer, model (a code like M1), score (1-5, to fill in), comment.
The CSV is written as UTF-8 with a BOM, which tells Excel it is UTF-8 (without it Excel shows Chinese as
mojibake); it is read back whether saved with ',', ';' or tabs, with or without a BOM.
The codes are resolved only by the key file written next to it (<sheet>.key.json), so raters
do not know which model wrote what; keep the key away from them.

Besides each model's mean score, the import compares the models head to head: each prompt's answers of two
models, paired in sheet order, the higher score winning; the win rate counts a tie as half a win, the rule
the interactive and web page A/B ratings use (win_rate).
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
    sheet = _check_sheet_name(sheet)
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
    return write_sheet(rows, sheet, key)


def _check_sheet_name(sheet: str | Path) -> Path:
    """The sheet's path, when it is a .csv or .jsonl file name that can be written (and its key beside it);
    else UserError."""
    sheet = Path(sheet)
    if sheet.suffix.lower() not in (".csv", ".jsonl"):
        raise UserError(f"{sheet}: the sheet must be a .csv or .jsonl file.")
    check_output_file(sheet, "--output")
    check_output_file(sheet.with_name(sheet.name + ".key.json"), "--output")  # the key is written beside it
    return sheet


def write_sheet(rows: list[dict], sheet: str | Path, key: dict[str, str]) -> Path:
    """Write a blind sheet and its key (<sheet>.key.json); return the key's path.

    rows: one per answer, in the order the sheet lists them (numbered as items from 1), each with prompt,
    answer, model (a code of `key`) and optionally score (1-5, or "" when not rated) and comment. key: model
    code -> what the code stands for (a predictions file, a model); its order is the order import_head_to_head
    compares the models in. Each file is replaced whole or not at all. Raises UserError for a sheet name that
    is not .csv / .jsonl, or a directory.
    """
    sheet = _check_sheet_name(sheet)
    rows = [{"item": index, "prompt": row["prompt"], "answer": row["answer"], "model": row["model"],
             "score": row.get("score", ""), "comment": row.get("comment", "")}
            for index, row in enumerate(rows, start=1)]
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


def _scored_rows(sheet: str | Path, key_file: str | Path | None) -> tuple[dict[str, str], list[tuple]]:
    """(key, [(model code, prompt, score or None when not rated)] in sheet order) of a filled sheet.

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
    rows = []
    for where, row in _read_sheet(sheet):
        code = str(row.get("model") or "")
        raw = "" if row.get("score") is None else str(row["score"]).strip()  # a JSON 0 is a score, not a blank
        if not raw:
            rows.append((code, row.get("prompt"), None))  # not rated (yet); still holds its place in a pair
            continue
        try:  # "3,5" is how Excel writes 3.5 where the decimal mark is a comma
            value = float(raw.replace(",", ".") if raw.count(",") == 1 and "." not in raw else raw)
        except ValueError:
            value = None
        if value is None or not SCALE[0] <= value <= SCALE[1]:
            raise UserError(f"{sheet}: {where} has score '{raw}'; use a number from {SCALE[0]} to {SCALE[1]}.")
        if code not in key:
            raise UserError(f"{sheet}: {where} names model '{code}', which the key does not know.")
        rows.append((code, row.get("prompt"), value))
    if all(value is None for _, _, value in rows):
        raise UserError(f"{sheet}: no scores filled in yet; put 1-5 in the score column.")
    return key, rows


def import_scores(sheet: str | Path, key_file: str | Path | None = None) -> dict:
    """Scores per model from a filled sheet: count, mean and standard deviation on the 1-5 scale.

    Raises UserError when the sheet or key is missing, not UTF-8 text or malformed, a score is not
    a number from 1 to 5, a row names a model the key does not know, or nothing is scored yet.
    """
    key, rows = _scored_rows(sheet, key_file)
    scores: dict[str, list[float]] = {code: [] for code in key}
    for code, _, value in rows:
        if value is not None:
            scores[code].append(value)
    return {
        key[code]: {"rated": len(values), "mean": round(statistics.mean(values), 3) if values else None,
                    "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else None}
        for code, values in scores.items()
    }


def win_rate(wins: int, losses: int, ties: int) -> float | None:
    """(wins + ties / 2) / comparisons, from 0 to 1; None before any comparison. A tie counts half a win for
    each side, so the two sides' rates add up to 1."""
    compared = wins + losses + ties
    return (wins + 0.5 * ties) / compared if compared else None


def head_to_head(rows: list[tuple], codes: list[str]) -> list[dict]:
    """Each model against each later one in `codes`: on every prompt, the two models' answers paired in sheet
    order (the first answer of one with the first of the other; a prompt asked twice gives two pairs), a pair
    compared when both answers are scored, the higher score winning.

    rows: (model code, prompt, score or None) in sheet order. Returns one dict per pair of models with at least
    one comparison: first and second (codes), wins, losses and ties of the first, and its win_rate (0-1, ties
    counting half)."""
    answers: dict[str, dict[str, list]] = {}
    for code, prompt, value in rows:
        if prompt is not None:  # without its prompt an answer has nothing to be paired with
            answers.setdefault(prompt, {}).setdefault(code, []).append(value)
    results = []
    for position, first in enumerate(codes):
        for second in codes[position + 1:]:
            tally = Counter()
            for by_code in answers.values():
                for mine, theirs in zip(by_code.get(first, []), by_code.get(second, [])):
                    if mine is not None and theirs is not None:
                        tally["wins" if mine > theirs else "losses" if mine < theirs else "ties"] += 1
            if tally:
                wins, losses, ties = tally["wins"], tally["losses"], tally["ties"]
                results.append({"first": first, "second": second, "wins": wins, "losses": losses, "ties": ties,
                                "win_rate": round(win_rate(wins, losses, ties), 4)})
    return results


def import_head_to_head(sheet: str | Path, key_file: str | Path | None = None) -> list[dict]:
    """head_to_head of a filled sheet, the models in the key's order and named as the key names them (first,
    second: what the codes stand for). Raises UserError as import_scores does."""
    key, rows = _scored_rows(sheet, key_file)
    return [result | {"first": key[result["first"]], "second": key[result["second"]]}
            for result in head_to_head(rows, list(key))]


def describe_head_to_head(result: dict) -> str:
    """One line, e.g. "A vs B: 2 wins, 1 loss, 0 ties: win rate 67% (ties count half)"."""
    wins, losses, ties = result["wins"], result["losses"], result["ties"]
    return (f"{result['first']} vs {result['second']}: {wins} win{'s' * (wins != 1)}, "
            f"{losses} loss{'es' * (losses != 1)}, {ties} tie{'s' * (ties != 1)}: "
            f"win rate {result['win_rate']:.0%} (ties count half)")
