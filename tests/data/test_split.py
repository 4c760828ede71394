"""The validation split: data.val_size as a fraction or a count, and never silently empty (issue 17, case 7)."""

import json

import pytest

from qwentune.config import DataConfig
from qwentune.data.preprocess import preprocess
from tests.helpers import QA


@pytest.mark.parametrize("val_size, total, count, note", [
    (0.01, 24, 1, "val_size 0.01 of 24 examples rounds to 0; using 1 validation example"),
    (0.01, 2, 1, "val_size 0.01 of 2 examples rounds to 0; using 1 validation example"),
    (0.01, 1, 0, "val_size 0.01 of 1 example: no validation split, since training needs the only example"),
    (0.05, 200, 10, None),
    (0.0, 24, 0, None),
    (3, 24, 3, None),
])
def test_validation_count(val_size, total, count, note):
    from qwentune.data.preprocess import validation_count

    assert validation_count(val_size, total) == (count, note)


def _data(tmp_path, rows, val_size):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"instruction": q, "input": "", "output": a}, ensure_ascii=False)
                              for q, a in rows), encoding="utf-8")
    return DataConfig(dataset_name=str(path), max_length=128, val_size=val_size, cache_dir=str(tmp_path / "cache"))


def test_a_fraction_that_rounds_to_nothing_still_gives_one_validation_example(tmp_path, tiny_tokenizer):
    lines = []
    stats = preprocess(_data(tmp_path, QA * 6, 0.01), "tiny", tmp_path / "processed", tokenizer=tiny_tokenizer,
                       log=lines.append)
    assert stats["splits"] == {"train": 23, "validation": 1}
    assert "val_size 0.01 of 24 examples rounds to 0; using 1 validation example" in lines


def test_no_validation_split_is_explained_by_evaluation(tmp_path, tiny_tokenizer):
    from qwentune.config import Config
    from qwentune.errors import UserError
    from qwentune.evaluation.evaluate import eval_conversations

    lines = []
    cfg = Config()
    cfg.data = _data(tmp_path, QA[:1], 0.01)
    cfg.data.processed_dir = str(tmp_path / "processed")
    stats = preprocess(cfg.data, "tiny", cfg.data.processed_dir, tokenizer=tiny_tokenizer, log=lines.append)
    assert stats["splits"] == {"train": 1}
    assert "val_size 0.01 of 1 example: no validation split, since training needs the only example" in lines
    with pytest.raises(UserError) as caught:
        eval_conversations(cfg)
    assert str(caught.value) == (
        f"{tmp_path / 'processed'}: has no validation split (val_size 0.01 of 1 example); preprocess again with "
        f"--val_size 0.05 (or a count such as 200) from at least 2 examples, or set eval.eval_dataset to a dataset "
        f"or file.")
