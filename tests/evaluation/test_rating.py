import codecs
import csv
import io
import json

import pytest

from qwentune.cli import main
from qwentune.errors import UserError
from qwentune.evaluation.rating import export_sheet, head_to_head, import_head_to_head, import_scores, win_rate


def predictions(path, answers):
    path.mkdir(parents=True)
    rows = [{"prompt": [{"role": "user", "content": f"问题 {i}"}], "reference": "r", "prediction": a}
            for i, a in enumerate(answers)]
    (path / "predictions.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


# The answers do not name their model, so a model name or path anywhere in the sheet was put there by the export.
BASE_ANSWERS = ["苹果是红的。", "The sky is blue.", "水在零度结冰。", "Cats purr.", "四加四等于八。", "Paris."]
TUNED_ANSWERS = ["苹果多为红色或绿色。", "Blue: air scatters blue light most.", "水在零摄氏度结冰。",
                 "Cats purr when content.", "4 + 4 = 8。", "The capital of France is Paris."]


def test_blind_sheet_round_trip(tmp_path, capsys):
    base = predictions(tmp_path / "base", BASE_ANSWERS)
    tuned = predictions(tmp_path / "tuned", TUNED_ANSWERS)
    sheet = tmp_path / "sheet.csv"
    assert main(["rating", "export", "--predictions", str(base), str(tuned), "--output", str(sheet)]) == 0
    assert sheet.read_bytes().startswith(codecs.BOM_UTF8)  # so that Excel reads it as UTF-8, not the ANSI code page
    with pytest.raises(UserError, match="no scores filled in yet"):  # and the import reads it as written
        import_scores(sheet)
    text = sheet.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 12 and {r["model"] for r in rows} == {"M1", "M2"}
    assert sorted(r["answer"] for r in rows) == sorted(BASE_ANSWERS + TUNED_ANSWERS)
    assert {r["prompt"] for r in rows} == {f"问题 {i}" for i in range(6)}
    # Blind: no cell says which file an answer came from; only the key does.
    for revealing in ("base", "tuned", "predictions.jsonl", str(tmp_path)):
        assert revealing not in text, revealing
    assert json.loads((tmp_path / "sheet.csv.key.json").read_text(encoding="utf-8")) == {
        "M1": str(base / "predictions.jsonl"), "M2": str(tuned / "predictions.jsonl")}
    # ... and the order does not give it away either: not one model's answers, then the other's.
    codes = [r["model"] for r in rows]
    assert codes not in (sorted(codes), sorted(codes, reverse=True))
    # A rater who likes the tuned answers: 5 for all of them, 2 and 3 for two base ones, the rest left unrated.
    for row in rows:
        row["score"] = "5" if row["answer"] in TUNED_ANSWERS else {BASE_ANSWERS[0]: "2", BASE_ANSWERS[1]: "3"}.get(
            row["answer"], "")
    with open(sheet, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = import_scores(sheet)
    assert result[str(tuned / "predictions.jsonl")] == {"rated": 6, "mean": 5.0, "stdev": 0.0}
    assert result[str(base / "predictions.jsonl")] == {"rated": 2, "mean": 2.5, "stdev": 0.707}


def test_bad_scores_and_missing_files(tmp_path):
    base = predictions(tmp_path / "base", ["a"])
    tuned = predictions(tmp_path / "tuned", ["b"])
    sheet = tmp_path / "sheet.jsonl"
    export_sheet([str(base), str(tuned)], sheet)
    row = json.loads(sheet.read_text(encoding="utf-8").splitlines()[0])
    sheet.write_text(json.dumps({**row, "score": "great"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="sheet.jsonl: line 1 has score 'great'; use a number from 1 to 5"):
        import_scores(sheet)  # line 1 of the file: a JSONL sheet has no header row
    sheet.write_text(json.dumps({**row, "score": 0}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1 has score '0'"):  # a JSON 0 is a score out of range, not a blank
        import_scores(sheet)
    sheet.write_text(json.dumps({k: v for k, v in row.items() if k != "score"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="sheet.jsonl:1: no 'score' field; keep the fields the export wrote"):
        import_scores(sheet)
    with pytest.raises(UserError, match="predictions file not found"):
        export_sheet([str(base), str(tmp_path / "nope")], tmp_path / "s.csv")
    with pytest.raises(UserError, match="key file not found"):
        import_scores(sheet, tmp_path / "missing.key.json")


def filled_sheet(tmp_path, suffix):
    """An exported sheet with every answer scored 4, as a rater would save it (not yet written back)."""
    base = predictions(tmp_path / "base", ["苹果是红的。", "Paris."])
    tuned = predictions(tmp_path / "tuned", ["苹果多为红色。", "The capital is Paris."])
    sheet = tmp_path / f"sheet{suffix}"
    export_sheet([str(base), str(tuned)], sheet)
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8-sig"), newline="")))
    else:
        rows = [json.loads(line) for line in sheet.read_text(encoding="utf-8").splitlines()]
    return sheet, [{**row, "score": "4"} for row in rows]


def write_csv(rows):
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return handle.getvalue()


def test_sheet_saved_by_excel_as_csv_utf8_with_a_bom_imports(tmp_path):
    sheet, rows = filled_sheet(tmp_path, ".csv")
    sheet.write_bytes(write_csv(rows).encode("utf-8-sig"))
    assert import_scores(sheet)[str(tmp_path / "base" / "predictions.jsonl")]["rated"] == 2


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_sheet_saved_in_another_encoding_names_the_file_and_line(tmp_path, suffix):
    sheet, rows = filled_sheet(tmp_path, suffix)
    text = write_csv(rows) if suffix == ".csv" else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    sheet.write_bytes(text.encode("gbk"))  # what Excel's plain "CSV" does on a Chinese Windows
    first_chinese_line = next(n for n, line in enumerate(text.splitlines(), start=1) if not line.isascii())
    with pytest.raises(UserError) as caught:
        import_scores(sheet)
    assert str(caught.value) == f"{sheet}: not UTF-8 text (line {first_chinese_line}); save it as UTF-8."


def test_predictions_and_key_in_another_encoding_or_broken_name_the_file(tmp_path):
    base = predictions(tmp_path / "base", ["Hi.", "你好。"])
    path = base / "predictions.jsonl"
    path.write_bytes(path.read_text(encoding="utf-8").encode("gbk"))
    with pytest.raises(UserError) as caught:
        export_sheet([str(base), str(base)], tmp_path / "s.csv")
    assert str(caught.value) == f"{path}: not UTF-8 text (line 1); save it as UTF-8."  # "问题 0" is on line 1

    sheet, rows = filled_sheet(tmp_path / "other", ".jsonl")
    key = sheet.with_name(sheet.name + ".key.json")
    key.write_bytes('{\n  "M1": "结果/predictions.jsonl"\n}\n'.encode("gbk"))
    with pytest.raises(UserError) as caught:
        import_scores(sheet)
    assert str(caught.value) == f"{key}: not UTF-8 text (line 2); save it as UTF-8."
    key.write_text('{\n  "M1": \n}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"sheet.jsonl.key.json:3: not valid JSON"):
        import_scores(sheet)
    key.write_text('["M1"]', encoding="utf-8")
    with pytest.raises(UserError, match="not a rating key"):
        import_scores(sheet)


# Answers as people write them: the separator Excel uses, quotes, a line break, Chinese.
TRICKY_BASE = ["苹果；香蕉; 还有梨", 'He said "hi"; then left.', "第一行\n第二行", "a, b and c"]
TRICKY_TUNED = ["水果: 苹果;香蕉;梨", "Line one\r\nline two; done", "四加四等于八。", '"Quoted"; 引号']


def saved_by_excel(sheet, scores, separator):
    """The exported sheet opened and saved again by Excel in a locale whose list separator is `separator`
    (';' where the decimal mark is a comma, as in Germany or France): CRLF line ends, a BOM, quotes only
    where a cell holds the separator, a quote or a line break; `scores` maps an answer to what was typed."""
    rows = list(csv.reader(io.StringIO(sheet.read_bytes().decode("utf-8-sig"), newline="")))
    header = rows[0]
    for row in rows[1:]:
        row[header.index("score")] = scores.get(row[header.index("answer")], "")
    handle = io.StringIO(newline="")
    csv.writer(handle, delimiter=separator, lineterminator="\r\n").writerows(rows)
    sheet.write_bytes(handle.getvalue().encode("utf-8-sig"))


@pytest.mark.parametrize("separator", [";", "\t"])
def test_sheet_saved_by_excel_with_semicolons_or_tabs_imports_every_score(tmp_path, separator):
    base = predictions(tmp_path / "base", TRICKY_BASE)
    tuned = predictions(tmp_path / "tuned", TRICKY_TUNED)
    sheet = tmp_path / "sheet.csv"
    export_sheet([str(base), str(tuned)], sheet)
    scores = {TRICKY_BASE[0]: "2", TRICKY_BASE[1]: "3", TRICKY_BASE[2]: "2,5",  # 2.5 as a comma locale writes it
              TRICKY_TUNED[0]: "5", TRICKY_TUNED[1]: "4", TRICKY_TUNED[2]: "4,5"}
    saved_by_excel(sheet, scores, separator)
    raw = sheet.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8) and b"\r\n" in raw and f'"{TRICKY_BASE[1]}"'.replace('"hi"', '""hi""') in \
        raw.decode("utf-8-sig")  # the sheet really is what Excel writes: quoted cells, doubled quotes
    result = import_scores(sheet)
    assert result[str(base / "predictions.jsonl")] == {"rated": 3, "mean": 2.5, "stdev": 0.5}
    assert result[str(tuned / "predictions.jsonl")] == {"rated": 3, "mean": 4.5, "stdev": 0.5}


def test_sheet_whose_header_was_changed_says_what_it_found_and_needs(tmp_path):
    sheet, rows = filled_sheet(tmp_path, ".csv")
    text = write_csv(rows).replace("item,prompt,answer,model,score,comment", "条目;提示;回答;模型;评分;备注", 1)
    sheet.write_bytes(text.encode("utf-8-sig"))
    with pytest.raises(UserError) as caught:
        import_scores(sheet)
    assert str(caught.value) == (
        f"{sheet}: the header row has '条目', '提示', '回答', '模型', '评分', '备注' (with ',', ';' or tab as the "
        f"separator), not the columns model, score; put back the header row as it was written.")


def test_sheet_saved_as_gbk_is_one_line_and_exit_2_on_the_command_line(tmp_path, capsys):
    sheet, rows = filled_sheet(tmp_path, ".csv")
    handle = io.StringIO(newline="")
    writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
    writer.writerow(list(rows[0]))
    writer.writerows([list(row.values()) for row in rows])
    sheet.write_bytes(handle.getvalue().encode("gbk"))  # Excel's plain "CSV" on a Chinese Windows
    assert main(["rating", "import", "--sheet", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {sheet}: not UTF-8 text (line 2); save it as UTF-8.\n"


def test_export_refuses_sheets_that_cannot_be_a_blind_comparison(tmp_path, capsys):
    """Issue 17: one run alone, a run with no answers, and runs of other prompts (whose items cannot pair up)
    are one line each, exit 2, and no sheet is written."""
    base = predictions(tmp_path / "base", BASE_ANSWERS)
    tuned = predictions(tmp_path / "tuned", TUNED_ANSWERS)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    other = predictions(tmp_path / "other", TUNED_ANSWERS[:4])  # prompts 问题 0..3 only
    sheet = tmp_path / "sheet.csv"
    cases = [
        ([base], "error: rating export: only one --predictions file; a blind comparison needs two or more, one per "
                 "model, answering the same prompts."),
        ([base, empty], f"error: {empty}: no answers in this predictions file; give an evaluation's predictions.jsonl."),
        ([base, other], f"error: {other / 'predictions.jsonl'} does not answer the prompts "
                        f"{base / 'predictions.jsonl'} answers (2 of them missing, 0 others instead); give predictions "
                        f"of the same evaluation data so the answers pair up."),
    ]
    for runs, message in cases:
        capsys.readouterr()
        assert main(["rating", "export", "--predictions", *map(str, runs), "--output", str(sheet)]) == 2
        assert capsys.readouterr().err.strip() == message
        assert not sheet.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert main(["rating", "export", "--predictions", str(base), str(tuned), "--output", str(sheet)]) == 0


def test_import_names_a_missing_sheet_before_its_key(tmp_path, capsys):
    assert main(["rating", "import", "--sheet", str(tmp_path / "s.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 's.csv'}: rating sheet file not found; check the "
                                               f"path (rating export writes it).")


def test_import_compares_the_models_head_to_head_on_each_prompt(tmp_path, capsys):
    """Each prompt's answers of two models, both scored, are one comparison: the higher score wins, equal scores
    tie, and the win rate counts a tie as half (the rule of the interactive and page A/B ratings)."""
    base = predictions(tmp_path / "base", BASE_ANSWERS)
    tuned = predictions(tmp_path / "tuned", TUNED_ANSWERS)
    sheet = tmp_path / "sheet.jsonl"
    export_sheet([str(base), str(tuned)], sheet)
    rows = [json.loads(line) for line in sheet.read_text(encoding="utf-8").splitlines()]
    # Prompts 0-2: tuned better, 3: equal, 4: base better, 5: only the base answer scored (not a comparison).
    wanted = {0: (2, 5), 1: (3, 4), 2: (1, 5), 3: (4, 4), 4: (5, 2), 5: (3, None)}
    for row in rows:
        number = int(row["prompt"].split()[-1])
        score = wanted[number][0 if row["model"] == "M1" else 1]
        row["score"] = "" if score is None else score
    sheet.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    base_name, tuned_name = str(base / "predictions.jsonl"), str(tuned / "predictions.jsonl")
    assert import_head_to_head(sheet) == [{"first": base_name, "second": tuned_name, "wins": 1, "losses": 3,
                                           "ties": 1, "win_rate": 0.3}]
    assert main(["rating", "import", "--sheet", str(sheet)]) == 0
    assert f"{base_name} vs {tuned_name}: 1 win, 3 losses, 1 tie: win rate 30% (ties count half)\n" in \
        capsys.readouterr().out


def test_head_to_head_pairs_a_repeated_prompt_in_sheet_order_and_skips_unscored_pairs():
    rows = [("M1", "p", 5), ("M2", "p", 1), ("M2", "p", 4), ("M1", "p", 2), ("M1", "q", 3), ("M2", "q", None),
            ("M1", None, 5), ("M2", None, 1)]  # rows without a prompt pair with nothing
    assert head_to_head(rows, ["M1", "M2"]) == [{"first": "M1", "second": "M2", "wins": 1, "losses": 1, "ties": 0,
                                                 "win_rate": 0.5}]
    assert head_to_head(rows, ["M2", "M1"])[0]["wins"] == 1 and head_to_head(rows[4:6], ["M1", "M2"]) == []
    assert win_rate(0, 0, 0) is None and win_rate(2, 1, 1) == 0.625 and win_rate(0, 0, 3) == 0.5
