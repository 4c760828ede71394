import csv
import json

import pytest

from qwentune.cli import main
from qwentune.errors import UserError
from qwentune.evaluation.rating import export_sheet, import_scores


def predictions(path, answers):
    path.mkdir(parents=True)
    rows = [{"prompt": [{"role": "user", "content": f"问题 {i}"}], "reference": "r", "prediction": a}
            for i, a in enumerate(answers)]
    (path / "predictions.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def test_blind_sheet_round_trip(tmp_path, capsys):
    base = predictions(tmp_path / "base", ["base answer 0", "base answer 1"])
    tuned = predictions(tmp_path / "tuned", ["tuned answer 0", "tuned answer 1"])
    sheet = tmp_path / "sheet.csv"
    assert main(["rating", "export", "--predictions", str(base), str(tuned), "--output", str(sheet)]) == 0
    with open(sheet, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"M1", "M2"}
    assert not any("base" in value or "tuned" in value for r in rows for value in (r["model"], r["item"]))
    assert {r["prompt"] for r in rows} == {"问题 0", "问题 1"}
    # A rater who likes the tuned answers: 5 for them, 2 for the base ones; one left unrated.
    for row in rows:
        row["score"] = "5" if row["answer"].startswith("tuned") else ("2" if row["answer"].endswith("0") else "")
    with open(sheet, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = import_scores(sheet)
    assert result[str(tuned / "predictions.jsonl")] == {"rated": 2, "mean": 5.0, "stdev": 0.0}
    assert result[str(base / "predictions.jsonl")] == {"rated": 1, "mean": 2.0, "stdev": None}


def test_bad_scores_and_missing_files(tmp_path):
    base = predictions(tmp_path / "base", ["a"])
    sheet = tmp_path / "sheet.jsonl"
    export_sheet([str(base)], sheet)
    row = json.loads(sheet.read_text(encoding="utf-8"))
    sheet.write_text(json.dumps({**row, "score": "great"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="row 2 has score 'great'; use a number from 1 to 5"):
        import_scores(sheet)
    with pytest.raises(UserError, match="predictions file not found"):
        export_sheet([str(tmp_path / "nope")], tmp_path / "s.csv")
    with pytest.raises(UserError, match="key file not found"):
        import_scores(sheet, tmp_path / "missing.key.json")
