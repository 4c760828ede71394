"""The whole data path in one call: source -> records -> conversations -> tokens -> splits on disk.

Output directory (written under a temporary name and renamed when complete):
    train/, validation/   datasets.Dataset saved with save_to_disk; columns messages,
                          input_ids, labels, length (load with datasets.load_from_disk)
    dataset_dict.json     written by datasets
    stats.json            settings, counts (in, skipped and why, truncated, dropped), token lengths

The settings in stats.json are everything that decides the tokens, the content of the source and the
tokenizer included (as sha256), so tokenized data is reused only while it is still what the config and
the files on disk would give.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import DataConfig
from ..errors import UserError
from ..fsutil import OutputKind, atomic_output_dir, check_output_dir, write_json
from ..models.tokenizer import control_tokens, end_of_turn_token, load_tokenizer
from . import sources
from .convert import Converted, convert_records
from .readers import read_records, record_files
from .tokenize import DROPPED_CONTROL_TEXT, DROPPED_NO_REPLY, KEPT, TRUNCATED, tokenize_batch

STATS_FILE = "stats.json"
# What preprocess writes (datasets writes dataset_dict.json): the only directory content it replaces.
TOKENIZED = OutputKind("tokenized dataset", (STATS_FILE, "dataset_dict.json"))


def length_summary(lengths: list[int]) -> dict[str, float]:
    """min, mean, median (p50), p90, p99 and max of token lengths (a non-empty list), as stats.json reports them."""
    ordered = sorted(lengths)

    def pick(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"min": ordered[0], "mean": round(sum(ordered) / len(ordered), 1), "p50": pick(0.5), "p90": pick(0.9),
            "p99": pick(0.99), "max": ordered[-1]}


def validation_count(val_size: float, total: int) -> tuple[int, str | None]:
    """How many of `total` examples go to validation for data.val_size (a fraction below 1, or a count), and a
    note for the log when that is not what val_size plainly says.

    A positive fraction that rounds to 0 still gives 1 validation example when there are at least 2 (an empty
    split would leave training without an eval loss and evaluation without data, silently); with a single
    example the split stays empty, and the note says why."""
    if val_size >= 1:
        return int(val_size), None
    if val_size <= 0:
        return 0, None
    count = int(round(val_size * total))
    if count > 0:
        return count, None
    examples = f"{total} example{'s' if total != 1 else ''}"
    if total < 2:
        return 0, (f"val_size {val_size} of {examples}: no validation split, since training needs the only "
                   f"example")
    return 1, f"val_size {val_size} of {examples} rounds to 0; using 1 validation example"


def source_sha256(path: str | os.PathLike) -> str:
    """sha256 of a source's records as stored: of the file's bytes (what `sha256sum` prints), or for a
    directory of the names and sha256 of the files read_records reads, sorted by name. About 50 ms for
    20 MB. Raises UserError for a missing file or a directory without record files."""
    path = Path(path)
    files = record_files(path)
    digests = []
    for file in files:
        try:
            with open(file, "rb") as handle:
                digests.append(hashlib.file_digest(handle, "sha256").hexdigest())
        except FileNotFoundError:
            raise UserError(f"{file}: file not found; check the path.") from None
    if not path.is_dir():
        return digests[0]
    listing = "".join(f"{file.name}\0{digest}\n" for file, digest in zip(files, digests))
    return hashlib.sha256(listing.encode()).hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """sha256 of the tokenizer's whole definition as the `tokenizers` library serializes it (normalizer,
    pre-tokenizer, vocabulary, merges, added tokens, post-processor). About 0.6 s for Qwen2's 151k
    vocabulary; a slow (Python) tokenizer is identified by its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def resolve_source(data: DataConfig) -> sources.DataSource:
    """data.dataset_name as a local file or directory of records (downloading a named dataset once)."""
    return sources.resolve(data.dataset_name, data.dataset_format, data.columns, data.dataset_registry,
                           data.cache_dir)


def data_settings(data: DataConfig, seed: int, tokenizer, source: str | os.PathLike) -> dict[str, Any]:
    """Everything that decides the tokenized result, `source` (the resolved records) read for its
    content: equal settings, interchangeable outputs."""
    return {
        "dataset": data.dataset_name,
        "dataset_format": data.dataset_format,
        "columns": dict(data.columns),
        "languages": list(data.languages),
        "system_prompt": data.system_prompt,
        "max_length": data.max_length,
        "max_samples": data.max_samples,
        "val_size": data.val_size,
        "seed": seed,
        "chat_template_sha256": hashlib.sha256(tokenizer.chat_template.encode()).hexdigest(),
        "vocab_size": len(tokenizer),
        "end_of_turn_token": end_of_turn_token(tokenizer),
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "source_sha256": source_sha256(source),
    }


def read_conversations(data: DataConfig) -> tuple[sources.DataSource, Converted, list[dict[str, Any]]]:
    """data's source resolved, read and converted, and its conversations cut to data.max_samples: what
    preprocess tokenizes. Returns (source, the conversion with its skip counts, the conversations).

    Raises UserError for a source that cannot be found, read or converted, and when no conversation is usable."""
    source = resolve_source(data)
    records = read_records(source.path)
    converted = convert_records(records, source.format, source.columns, source.label, data.system_prompt,
                                data.languages)
    conversations = converted.conversations[: data.max_samples] if data.max_samples else converted.conversations
    if not conversations:
        raise UserError(
            f"{source.label}: no usable conversation among {converted.records_in} records "
            f"(skipped: {dict(converted.skipped)}); check data.dataset_format and data.columns."
        )
    return source, converted, conversations


def tokenize_options(data: DataConfig, tokenizer) -> dict[str, Any]:
    """tokenize_batch's settings for this data and tokenizer (all but the tokenizer): max_length, the
    end-of-turn token and the chat template's control tokens, which make an example holding them dropped.

    Raises UserError when data.system_prompt holds one of those control tokens."""
    forbidden = control_tokens(tokenizer)
    in_prompt = [token for token in forbidden if token in (data.system_prompt or "")]
    if in_prompt:
        raise UserError(f"--system_prompt (data.system_prompt) holds {in_prompt[0]!r}, a control token of the chat "
                        f"template, which must not appear in a system prompt; remove it.")
    return {"max_length": data.max_length, "end_of_turn": end_of_turn_token(tokenizer), "forbidden": forbidden}


def tokenization_counts(status: Counter) -> dict[str, int]:
    """stats.json's "tokenization" block from tokenize_batch's per-example statuses: kept whole, truncated,
    and dropped by reason."""
    return {
        "kept_whole": status.get(KEPT, 0),
        "truncated": status.get(TRUNCATED, 0),
        DROPPED_NO_REPLY: status.get(DROPPED_NO_REPLY, 0),
        DROPPED_CONTROL_TEXT: status.get(DROPPED_CONTROL_TEXT, 0),
    }


def preprocess(data: DataConfig, tokenizer_name: str, output_dir: str | os.PathLike, seed: int = 42,
               trust_remote_code: bool = False, log=print, tokenizer=None,
               settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the tokenized train/validation datasets in output_dir; return the stats written there.

    `settings`: data_settings() already computed for this data, seed and tokenizer (load_or_preprocess
    passes them, which saves hashing the tokenizer twice).

    Raises UserError, before reading anything, when output_dir is a file or holds files that are not a
    previous tokenized dataset (stats.json and dataset_dict.json): those would be deleted by the replacement.
    """
    import datasets

    check_output_dir(output_dir, TOKENIZED)
    source, converted, conversations = read_conversations(data)
    log(f"{source.label}: {converted.records_in} records -> {len(conversations)} conversations ({converted.format})")

    tokenizer = tokenizer or load_tokenizer(tokenizer_name, trust_remote_code)
    options = tokenize_options(data, tokenizer)
    dataset = datasets.Dataset.from_list(conversations).map(
        tokenize_batch,
        batched=True,
        batch_size=256,
        num_proc=data.num_proc if data.num_proc > 1 else None,
        fn_kwargs=dict(tokenizer=tokenizer, **options),
        desc="Tokenizing",
    )
    status = Counter(dataset["status"])
    # Lengths before truncation, of every tokenized example: what a user needs to choose max_length.
    full_lengths = [n for n, s in zip(dataset["full_length"], dataset["status"]) if s != DROPPED_CONTROL_TEXT]
    dataset = dataset.filter(lambda s: not s.startswith("dropped"), input_columns="status")
    dataset = dataset.remove_columns(["status", "full_length"])
    if len(dataset) == 0:
        raise UserError(all_dropped_message(source.label, status, conversations, options["forbidden"], data.max_length))

    n_validation, note = validation_count(data.val_size, len(dataset))
    if note:
        log(note)
    if n_validation >= len(dataset):
        raise UserError(
            f"{source.label}: data.val_size {data.val_size} leaves no training examples out of {len(dataset)}; "
            f"lower it."
        )
    if n_validation:
        split = dataset.train_test_split(test_size=n_validation, seed=seed)
        splits = datasets.DatasetDict(train=split["train"], validation=split["test"])
    else:
        splits = datasets.DatasetDict(train=dataset.shuffle(seed=seed))

    lengths = dataset["length"]
    stats = {
        "settings": {
            **(settings or data_settings(data, seed, tokenizer, source.path)),
            # Absolute: this records which file was read, wherever stats.json is read from later.
            "source": str(source.path.resolve()),
            "format": converted.format,
            "tokenizer": tokenizer_name,
            "qwentune_version": __version__,
        },
        "records_in": converted.records_in,
        "conversations": len(conversations),
        "skipped_in_conversion": dict(converted.skipped),
        "tokenization": tokenization_counts(status),
        "examples_out": len(dataset),
        "splits": {name: len(part) for name, part in splits.items()},
        "tokens": {
            "total": int(sum(lengths)),
            "trainable": int(sum(sum(1 for x in labels if x != -100) for labels in dataset["labels"])),
            "length": length_summary(lengths),
            "length_before_truncation": length_summary(full_lengths),
        },
    }
    with atomic_output_dir(output_dir, TOKENIZED) as tmp:
        splits.save_to_disk(str(tmp))
        write_json(Path(tmp) / STATS_FILE, stats)
    log(
        f"wrote {output_dir}: " + ", ".join(f"{name} {count}" for name, count in stats["splits"].items())
        + f"; truncated {stats['tokenization']['truncated']}, dropped "
        + f"{len(conversations) - len(dataset)}; median length {stats['tokens']['length']['p50']} tokens"
    )
    return stats


def source_changed_since(stats: dict[str, Any]) -> str | None:
    """"<source> changed since it was tokenized (N records then)" when the file a tokenized directory's
    stats.json names has other content now; None when it is unchanged, gone, or was not recorded."""
    settings = stats.get("settings", {})
    source, recorded = settings.get("source"), settings.get("source_sha256")
    if not source or not recorded or not Path(source).exists():
        return None
    try:
        if source_sha256(source) == recorded:
            return None
    except UserError:  # a directory emptied since: nothing to compare
        return None
    return f"{source} changed since it was tokenized ({stats.get('records_in')} records then)"


def _shown(key: str, value: Any) -> str:
    if value is None:
        return "not recorded"
    return f"{value[:12]}..." if key.endswith("_sha256") else repr(value)


def all_dropped_message(label: str, status: Counter, conversations: list[dict], forbidden: tuple[str, ...],
                 max_length: int) -> str:
    """The sentence for data that tokenized to nothing: the fix of each reason examples were dropped."""
    fixes = []
    if status.get(DROPPED_CONTROL_TEXT):
        found = next((token for c in conversations for m in c["messages"] for token in forbidden
                      if token in m["content"]), "")
        fixes.append(f"{status[DROPPED_CONTROL_TEXT]} hold the text {found!r}, a control token of the chat template, "
                     f"in their messages, where it must not appear: remove it from the data")
    if status.get(DROPPED_NO_REPLY):
        fixes.append(f"{status[DROPPED_NO_REPLY]} have no reply within max_length: raise --max_length "
                     f"(now {max_length})")
    return f"{label}: every example was dropped during tokenization; " + "; ".join(fixes) + "."


def stats_problem(directory: str | os.PathLike) -> tuple[dict[str, Any] | None, str | None]:
    """(stats, None) for directory's stats.json, (None, None) when there is none, and (None, why) when it
    cannot be read as a JSON object (damaged, or the directory is not tokenized data from preprocess)."""
    stats_file = Path(directory) / STATS_FILE
    if not stats_file.is_file():
        return None, None
    try:
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON (line {exc.lineno})"
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}"
    if not isinstance(stats, dict):
        return None, "not a JSON object"
    return stats, None


def read_stats(directory: str | os.PathLike) -> dict[str, Any] | None:
    """directory's stats.json (None when there is none); UserError naming the file when it cannot be read."""
    stats, problem = stats_problem(directory)
    if problem:
        raise UserError(f"{Path(directory) / STATS_FILE}: {problem}; run preprocess again to rebuild {directory}, "
                        f"or give another directory.")
    return stats


def _only_source_changed(have: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return have.get("source_sha256") is not None and [k for k in wanted if have.get(k) != wanted[k]] == ["source_sha256"]


def _stale_copies(cache_root: Path, wanted: dict[str, Any]):
    """(directory, stats) of earlier tokenizations under cache_root with these settings but other source
    content, the newest first."""
    for stats_file in sorted(cache_root.glob(f"*/{STATS_FILE}"), key=lambda f: f.stat().st_mtime, reverse=True):
        stats, _ = stats_problem(stats_file.parent)  # an unreadable copy is no earlier tokenization to mention
        have = (stats or {}).get("settings", {})
        if stats and _only_source_changed(have, wanted):
            yield stats_file.parent, stats


def load_or_preprocess(data: DataConfig, tokenizer_name: str, tokenizer, seed: int, log=print):
    """The tokenized splits for training: data.processed_dir when it matches the settings, else a cached build.

    Returns (DatasetDict, stats). A processed directory made with other settings (another dataset,
    max_length or template, another tokenizer, or a source file whose content changed since) is left
    alone and the data is prepared again under data.cache_dir/processed/<fingerprint>, so training
    always sees what its config and the files on disk say; a changed source is said so in one line.
    """
    import datasets

    source = resolve_source(data)
    wanted = data_settings(data, seed, tokenizer, source.path)
    processed = Path(data.processed_dir)
    fingerprint = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    cache_root = Path(data.cache_dir) / "processed"
    cached = cache_root / fingerprint
    changed_from = None  # (directory, stats) of these settings tokenized from other content of the source
    for candidate in (processed, cached):
        stats, problem = stats_problem(candidate)
        if problem:  # not data this config can use; left alone, the data is prepared in the cache instead
            log(f"{candidate / STATS_FILE}: {problem}, so {candidate} is not used; preparing the data for this "
                f"config in {cached}")
        if stats is None:
            continue
        have = {key: stats.get("settings", {}).get(key) for key in wanted}
        if have == wanted:
            log(f"using the tokenized data in {candidate}")
            return datasets.load_from_disk(str(candidate)), stats
        if candidate != processed:
            continue
        if _only_source_changed(have, wanted):
            changed_from = (processed, stats)
        else:
            differing = ", ".join(f"{k}: {_shown(k, have[k])} -> {_shown(k, wanted[k])}"
                                  for k in wanted if have[k] != wanted[k])
            log(f"{processed} was prepared with other settings ({differing}); preparing the data for this config")
    changed_from = changed_from or next(_stale_copies(cache_root, wanted), None)
    if changed_from is not None:
        earlier, stats = changed_from
        log(f"{source.label} changed since it was tokenized into {earlier} ({stats.get('records_in')} records "
            f"then); tokenizing it again")
    stats = preprocess(data, tokenizer_name, cached, seed, log=log, tokenizer=tokenizer, settings=wanted)
    return datasets.load_from_disk(str(cached)), stats
