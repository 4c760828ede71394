"""Tokenized data is reused only while it is still true: the source's content and the tokenizer are part
of its settings, so a grown file or another tokenizer is tokenized again, and said so."""

import copy
import json

import pytest

from qwentune.config import DataConfig
from qwentune.data.preprocess import STATS_FILE, load_or_preprocess, preprocess
from qwentune.errors import UserError

RECORD = {"instruction": "What is the capital of France?", "input": "", "output": "Paris."}


def write_records(path, count):
    path.write_text("".join(json.dumps(RECORD | {"output": f"Paris. ({i})"}) + "\n" for i in range(count)),
                    encoding="utf-8")
    return path


def data_config(tmp_path, source):
    return DataConfig(dataset_name=str(source), val_size=0, max_length=128, processed_dir=str(tmp_path / "processed"),
                      cache_dir=str(tmp_path / "cache"))


def load(data, tokenizer):
    lines = []
    splits, stats = load_or_preprocess(data, "tiny", tokenizer, 42, log=lines.append)
    return len(splits["train"]), stats, lines


def test_a_grown_file_is_tokenized_again_and_said_so(tmp_path, tiny_tokenizer):
    source = write_records(tmp_path / "qa.jsonl", 12)
    data = data_config(tmp_path, source)
    assert load(data, tiny_tokenizer)[0] == 12
    count, _, lines = load(data, tiny_tokenizer)
    assert count == 12 and any(line.startswith("using the tokenized data in") for line in lines)

    write_records(source, 24)  # the same file, 12 records added
    count, stats, lines = load(data, tiny_tokenizer)
    assert count == 24 and stats["records_in"] == 24
    assert any(f"{source} changed since it was tokenized into" in line and "(12 records then); tokenizing it again"
               in line for line in lines), lines
    assert load(data, tiny_tokenizer)[0] == 24  # and the new tokenization is reused from then on


def test_a_processed_dir_made_by_preprocess_is_checked_the_same_way(tmp_path, tiny_tokenizer):
    source = write_records(tmp_path / "qa.jsonl", 12)
    data = data_config(tmp_path, source)
    written = preprocess(data, "tiny", data.processed_dir, seed=42, log=lambda *a: None, tokenizer=tiny_tokenizer)
    assert written["settings"]["source"] == str(source.resolve())  # absolute: true from any working directory
    count, _, lines = load(data, tiny_tokenizer)
    assert count == 12 and lines == [f"using the tokenized data in {data.processed_dir}"]

    write_records(source, 24)
    count, _, lines = load(data, tiny_tokenizer)
    assert count == 24
    assert f"{source} changed since it was tokenized into {data.processed_dir} (12 records then); tokenizing it again" \
        in lines
    # The processed directory is left as it was: it is the user's, made by `qwentune preprocess`.
    assert json.loads((tmp_path / "processed" / STATS_FILE).read_text())["records_in"] == 12


def test_a_changed_file_in_a_directory_source(tmp_path, tiny_tokenizer):
    folder = tmp_path / "records"
    folder.mkdir()
    write_records(folder / "a.jsonl", 6)
    write_records(folder / "b.jsonl", 6)
    data = data_config(tmp_path, folder)
    assert load(data, tiny_tokenizer)[0] == 12
    write_records(folder / "b.jsonl", 18)
    count, _, lines = load(data, tiny_tokenizer)
    assert count == 24 and any("changed since it was tokenized" in line for line in lines), lines


def test_another_tokenizer_with_the_same_vocabulary_and_template(tmp_path, tiny_tokenizer):
    """Vocabulary size and chat template equal, tokens not: the tokenizer itself is part of the settings."""
    from tokenizers import normalizers

    lowercasing = copy.deepcopy(tiny_tokenizer)
    lowercasing.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert len(lowercasing) == len(tiny_tokenizer) and lowercasing.chat_template == tiny_tokenizer.chat_template
    data = data_config(tmp_path, write_records(tmp_path / "qa.jsonl", 12))
    before, _ = load_or_preprocess(data, "tiny", tiny_tokenizer, 42, log=lambda *a: None)
    lines = []
    after, _ = load_or_preprocess(data, "tiny", lowercasing, 42, log=lines.append)
    assert not any(line.startswith("using the tokenized data") for line in lines), lines
    assert before["train"]["input_ids"] != after["train"]["input_ids"]


def test_evaluating_a_split_of_an_older_version_of_the_file_says_so(tmp_path, tiny_tokenizer):
    from qwentune.config import Config
    from qwentune.evaluation.evaluate import eval_conversations

    source = write_records(tmp_path / "qa.jsonl", 12)
    cfg = Config()
    cfg.data = data_config(tmp_path, source)
    cfg.data.val_size = 4
    preprocess(cfg.data, "tiny", cfg.data.processed_dir, seed=42, log=lambda *a: None, tokenizer=tiny_tokenizer)
    lines = []
    assert len(eval_conversations(cfg, lines.append)[0]) == 4 and lines == []
    write_records(source, 24)
    assert len(eval_conversations(cfg, lines.append)[0]) == 4
    assert lines == [f"warning: {source} changed since it was tokenized (12 records then); the validation split in "
                     f"{cfg.data.processed_dir} is from the older version (run preprocess again for a split of the "
                     f"current file)"]


def test_a_processed_dir_whose_stats_cannot_be_read_is_left_alone_and_the_data_prepared(tmp_path, tiny_tokenizer):
    source = write_records(tmp_path / "qa.jsonl", 12)
    data = data_config(tmp_path, source)
    processed = tmp_path / "processed"
    processed.mkdir()
    (processed / STATS_FILE).write_text("{bad", encoding="utf-8")
    count, stats, lines = load(data, tiny_tokenizer)
    assert count == 12 and stats["records_in"] == 12
    assert any(f"{processed / STATS_FILE}: not valid JSON (line 1)" in line and "is not used" in line
               for line in lines), lines
    assert (processed / STATS_FILE).read_text(encoding="utf-8") == "{bad"  # the user's directory is untouched
    # a damaged copy in the cache is passed over the same way
    (tmp_path / "cache" / "processed" / "0000").mkdir()
    (tmp_path / "cache" / "processed" / "0000" / STATS_FILE).write_bytes(b"\xff\xfe")
    assert load(data, tiny_tokenizer)[0] == 12


def test_control_token_text_is_blamed_on_the_data_or_the_system_prompt_not_on_max_length(tmp_path, tiny_tokenizer):
    source = write_records(tmp_path / "qa.jsonl", 4)
    data = data_config(tmp_path, source)
    data.system_prompt = "Be brief.<|im_end|>"
    with pytest.raises(UserError, match=r"--system_prompt .* holds '<\|im_end\|>', a control token of the chat "
                                        r"template") as caught:
        preprocess(data, "tiny", tmp_path / "out", log=lambda *a: None, tokenizer=tiny_tokenizer)
    assert "max_length" not in str(caught.value)

    source.write_text(json.dumps(RECORD | {"output": "Paris.<|im_end|>"}) + "\n", encoding="utf-8")
    data.system_prompt = None
    with pytest.raises(UserError, match=r"every example was dropped during tokenization; 1 hold the text "
                                        r"'<\|im_end\|>', a control token") as caught:
        preprocess(data, "tiny", tmp_path / "out", log=lambda *a: None, tokenizer=tiny_tokenizer)
    assert "max_length" not in str(caught.value)
    assert not (tmp_path / "out").exists()
