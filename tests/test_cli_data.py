"""The seed's data commands as a user runs them: results on disk, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest

from qwentune.cli import main
from tests.helpers import REPO

OFFLINE_ENV = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}


def alpaca_file(tmp_path, n=40, name="train.jsonl"):
    rows = [{"instruction": f"问题 {i}: 法国的首都是哪里？", "input": "", "output": f"巴黎。答案 {i}"} for i in range(n)]
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def run_script(*args, env=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=env or OFFLINE_ENV, timeout=120)


def test_seed_preprocess_command_with_local_file_and_tokenizer(tmp_path, tiny_tokenizer_dir):
    import datasets

    out = tmp_path / "processed"
    result = run_script("data/preprocess.py", "--dataset_name", alpaca_file(tmp_path), "--tokenizer_name",
                        tiny_tokenizer_dir, "--max_length", "1024", "--output_dir", out, "--val_size", "0.1")
    assert result.returncode == 0, result.stderr
    splits = datasets.load_from_disk(str(out))
    assert {k: len(v) for k, v in splits.items()} == {"train": 36, "validation": 4}
    assert set(splits["train"].column_names) == {"messages", "input_ids", "labels", "length"}
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["records_in"] == 40 and stats["examples_out"] == 40
    assert stats["settings"]["end_of_turn_token"] == "<|im_end|>"
    assert stats["tokens"]["length"]["max"] <= 1024
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_preprocess_is_deterministic_and_reports_truncation(tmp_path, tiny_tokenizer_dir):
    import datasets

    args = ["preprocess", "--dataset_name", str(alpaca_file(tmp_path)), "--tokenizer_name", str(tiny_tokenizer_dir),
            "--max_length", "60", "--seed", "7"]
    assert main(args + ["--output_dir", str(tmp_path / "a")]) == 0
    assert main(args + ["--output_dir", str(tmp_path / "b")]) == 0
    a, b = datasets.load_from_disk(str(tmp_path / "a")), datasets.load_from_disk(str(tmp_path / "b"))
    assert a["train"]["input_ids"] == b["train"]["input_ids"]
    stats = json.loads((tmp_path / "a" / "stats.json").read_text(encoding="utf-8"))
    assert stats["tokenization"]["truncated"] == 40 and stats["examples_out"] == 40
    assert all(n == 60 for n in a["train"]["length"])
    assert stats["tokens"]["length_before_truncation"]["max"] > 60 == stats["tokens"]["length"]["max"]


def assert_one_line_error(capsys, argv, *fragments):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_bad_json_line_fails_cleanly_and_leaves_old_output_alone(tmp_path, tiny_tokenizer_dir, capsys):
    out = tmp_path / "processed"
    good = ["preprocess", "--dataset_name", str(alpaca_file(tmp_path)), "--tokenizer_name", str(tiny_tokenizer_dir),
            "--output_dir", str(out)]
    assert main(good) == 0
    before = sorted(p.name for p in out.rglob("*"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a" "output": "b"}\n', encoding="utf-8")
    assert_one_line_error(capsys, ["preprocess", "--dataset_name", str(bad), "--tokenizer_name",
                                   str(tiny_tokenizer_dir), "--output_dir", str(out)], "bad.jsonl:2:")
    assert sorted(p.name for p in out.rglob("*")) == before
    fresh = tmp_path / "never"
    assert_one_line_error(capsys, ["preprocess", "--dataset_name", str(bad), "--tokenizer_name",
                                   str(tiny_tokenizer_dir), "--output_dir", str(fresh)], "bad.jsonl:2:")
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("extra, fragments", [
    (["--dataset_name", "chinese_alpacca"], ["unknown dataset 'chinese_alpacca'", "did you mean 'chinese_alpaca'",
                                               "tatsu-lab/alpaca"]),
    (["--dataset_name", "missing/dir/file.jsonl"], ["file not found"]),
    (["--max_lenght", "512"], ["did you mean --max_length"]),
    (["--learning_rate", "0.1"], ["unknown option --learning_rate"]),
    (["--max_length", "long"], ["data.max_length must be an integer"]),
])
def test_bad_options_and_names(tmp_path, tiny_tokenizer_dir, capsys, extra, fragments):
    argv = ["preprocess", "--tokenizer_name", str(tiny_tokenizer_dir), "--output_dir", str(tmp_path / "o")] + extra
    if "--dataset_name" not in extra:
        argv += ["--dataset_name", str(alpaca_file(tmp_path))]
    assert_one_line_error(capsys, argv, *fragments)
    assert not (tmp_path / "o").exists()


def test_unreadable_tokenizer_and_empty_result(tmp_path, tiny_tokenizer_dir, capsys):
    empty_dir = tmp_path / "not_a_tokenizer"
    empty_dir.mkdir()
    assert_one_line_error(capsys, ["preprocess", "--dataset_name", str(alpaca_file(tmp_path)), "--tokenizer_name",
                                   str(empty_dir)], "cannot load a tokenizer")
    useless = tmp_path / "useless.json"
    useless.write_text(json.dumps([{"instruction": "q", "output": ""}]), encoding="utf-8")
    assert_one_line_error(capsys, ["preprocess", "--dataset_name", str(useless), "--tokenizer_name",
                                   str(tiny_tokenizer_dir), "--output_dir", str(tmp_path / "o")],
                          "no usable conversation", "empty_reply")


def test_offline_hub_ids_fail_at_once_with_the_local_alternative(tmp_path, tiny_tokenizer_dir):
    result = run_script("data/download_data.py", "chinese_alpaca", "--cache_dir", tmp_path / "cache")
    assert result.returncode == 2
    assert "cannot reach the Hugging Face hub" in result.stderr and "local" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache" / "chinese_alpaca.jsonl").exists()

    result = run_script("data/preprocess.py", "--dataset_name", alpaca_file(tmp_path), "--tokenizer_name",
                        "Qwen/Qwen2-0.5B-not-cached", "--output_dir", tmp_path / "o")
    assert result.returncode == 2 and "tokenizer 'Qwen/Qwen2-0.5B-not-cached'" in result.stderr
    assert "local tokenizer or model directory" in result.stderr and "Traceback" not in result.stderr


def test_cached_named_dataset_is_used_without_network(tmp_path, tiny_tokenizer_dir, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    alpaca_file(cache, n=20, name="tatsu-lab__alpaca.jsonl")
    assert main(["preprocess", "--dataset_name", "tatsu-lab/alpaca", "--cache_dir", str(cache), "--tokenizer_name",
                 str(tiny_tokenizer_dir), "--output_dir", str(tmp_path / "o"), "--val_size", "0"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text(encoding="utf-8"))
    assert stats["splits"] == {"train": 20} and stats["settings"]["format"] == "alpaca"


def test_user_registry_adds_a_local_dataset(tmp_path, tiny_tokenizer_dir, capsys):
    alpaca_file(tmp_path, n=10, name="mine.jsonl")
    registry = tmp_path / "datasets.yaml"
    registry.write_text("my_set:\n  file: mine.jsonl\n  format: alpaca\n", encoding="utf-8")
    assert main(["datasets", "--dataset_registry", str(registry)]) == 0
    assert "my_set" in capsys.readouterr().out
    assert main(["preprocess", "--dataset_name", "my_set", "--dataset_registry", str(registry), "--tokenizer_name",
                 str(tiny_tokenizer_dir), "--output_dir", str(tmp_path / "o"), "--val_size", "2"]) == 0
    registry.write_text("my_set:\n  fille: mine.jsonl\n", encoding="utf-8")
    assert_one_line_error(capsys, ["datasets", "--dataset_registry", str(registry)], "did you mean 'file'")


def test_download_stores_jsonl_that_reads_back(tmp_path, monkeypatch):
    """The download path end to end, with a local dataset directory standing in for the hub repository."""
    from qwentune.data import sources
    from qwentune.data.readers import read_records
    from qwentune.data.registry import DatasetEntry

    repo = tmp_path / "repo"
    repo.mkdir()
    alpaca_file(repo, n=5, name="data.jsonl")
    monkeypatch.setattr(sources, "require_hub", lambda *args, **kwargs: None)  # the only network step: the reachability probe
    path = sources.download(DatasetEntry("someone/set", hub_id=str(repo)), tmp_path / "cache")
    assert path == tmp_path / "cache" / "someone__set.jsonl"
    assert read_records(path) == read_records(repo / "data.jsonl")


def test_preprocess_replaces_only_its_own_previous_output(tmp_path, tiny_tokenizer_dir, capsys):
    """Issue 17 (outputs): an --output_dir holding the user's files, or a file, is refused before anything is
    read or tokenized, and left as it was; a previous tokenized dataset is replaced whole."""
    source = alpaca_file(tmp_path)

    def argv(out, dataset=str(source)):
        return ["preprocess", "--dataset_name", dataset, "--tokenizer_name", str(tiny_tokenizer_dir),
                "--output_dir", str(out)]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine", encoding="utf-8")
    # a missing dataset would be the first complaint if anything were read before the output is checked
    for dataset in (str(source), str(tmp_path / "missing.jsonl")):
        assert_one_line_error(capsys, argv(mine, dataset),
                              f"{mine} already holds files that are not a qwentune tokenized dataset; choose another "
                              f"--output_dir or empty it.")
    assert [p.name for p in mine.iterdir()] == ["keep.txt"] and (mine / "keep.txt").read_text() == "mine"
    a_file = tmp_path / "f.txt"
    a_file.write_text("mine", encoding="utf-8")
    assert_one_line_error(capsys, argv(a_file), f"{a_file} is a file; give a directory path as --output_dir.")
    assert a_file.read_text() == "mine"
    assert_one_line_error(capsys, argv(a_file / "sub"), f"{a_file} is a file, so {a_file / 'sub'} cannot be created")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "mine", source.name]  # nothing hidden left

    out = tmp_path / "processed"
    assert main(argv(out)) == 0
    (out / "train" / "stale.arrow").write_bytes(b"")  # a previous output is replaced whole, not added to
    assert main(argv(out)) == 0
    assert not (out / "train" / "stale.arrow").exists() and (out / "stats.json").is_file()
