"""Named datasets: where each comes from and what format it is in.

Built-in names cover the seed's datasets; a YAML file (data.dataset_registry) adds more
in the same form:

    my_support_chats:            # a local file
      file: chats.jsonl          # relative to the registry file
      format: sharegpt
    my_hub_set:                  # a hub dataset
      hub_id: someone/some-dataset
      modelscope_id: someone/some-dataset   # its copy on ModelScope, for --hub modelscope (optional)
      split: train
      columns: {instruction: question, output: answer}

Every entry of the file is checked before any is used: an unknown key or a value of the wrong type
(`columns: [question, answer]`) is one sentence naming the file, the entry and the key, and all the
problems of a file are reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..config import Problems, coerce
from ..config.values import type_name
from ..errors import UserError, did_you_mean
from ..fsutil import read_text, require_file
from .convert import FORMATS


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    hub_id: str | None = None
    file: str | None = None
    modelscope_id: str | None = None  # the same data on ModelScope (--hub modelscope); None: none known
    split: str = "train"
    subset: str | None = None
    format: str = "auto"
    columns: dict = field(default_factory=dict)
    description: str = ""

    @property
    def cache_name(self) -> str:
        """File name under data/cache/: the registered name with path separators made safe."""
        return self.name.replace("/", "__") + ".jsonl"


# ModelScope ids: those of ms-swift's dataset registry (github.com/modelscope/ms-swift, swift/llm/dataset/data/
# dataset_info.json, which pairs AI-ModelScope/alpaca-gpt4-data-en with vicgalle/alpaca-gpt4 and
# AI-ModelScope/alpaca-cleaned with yahma/alpaca-cleaned; swift/llm/dataset/dataset/llm.py registers
# AI-ModelScope/alpaca-gpt4-data-zh, GPT-4-LLM's alpaca_gpt4_data_zh as shibing624/alpaca-zh holds it).
# hfl/alpaca_zh_51k, OpenAssistant/oasst1 and tatsu-lab/alpaca have no ModelScope copy that registry or
# LLaMA-Factory's data/dataset_info.json names: None, and --hub modelscope says so.
BUILTIN: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in [
        DatasetEntry(
            "chinese_alpaca", hub_id="hfl/alpaca_zh_51k", format="alpaca",
            description="Chinese Alpaca, 51k instructions translated with gpt-3.5 (Chinese-LLaMA-Alpaca)",
        ),
        DatasetEntry(
            "alpaca_gpt4_data", hub_id="vicgalle/alpaca-gpt4", format="alpaca",
            modelscope_id="AI-ModelScope/alpaca-gpt4-data-en",
            description="Alpaca instructions answered by GPT-4, English, 52k (GPT-4-LLM)",
        ),
        DatasetEntry(
            "alpaca_gpt4_data_zh", hub_id="shibing624/alpaca-zh", format="alpaca",
            modelscope_id="AI-ModelScope/alpaca-gpt4-data-zh",
            description="Alpaca instructions answered by GPT-4 in Chinese, 49k (GPT-4-LLM)",
        ),
        DatasetEntry(
            "OpenAssistant/oasst1", hub_id="OpenAssistant/oasst1", format="oasst1",
            description="OpenAssistant conversation trees, 35 languages; the best-ranked path of each tree",
        ),
        DatasetEntry(
            "tatsu-lab/alpaca", hub_id="tatsu-lab/alpaca", format="alpaca",
            description="Stanford Alpaca, English, 52k (text-davinci-003)",
        ),
        DatasetEntry(
            "yahma/alpaca-cleaned", hub_id="yahma/alpaca-cleaned", format="alpaca",
            modelscope_id="AI-ModelScope/alpaca-cleaned",
            description="Stanford Alpaca with its known errors cleaned, English, 52k",
        ),
    ]
}

DEFAULT_DATASETS = ["chinese_alpaca", "alpaca_gpt4_data", "OpenAssistant/oasst1", "tatsu-lab/alpaca",
                    "yahma/alpaca-cleaned"]


# What an entry of a registry file may set, with the type its value must have (coerced like config values;
# an empty value, `subset:` or null, leaves the default).
ENTRY_FIELDS = {"hub_id": str, "file": str, "modelscope_id": str, "split": str, "subset": str, "format": Literal[("auto", *FORMATS)],
                "columns": dict[str, str], "description": str}
# How a wrong value is explained where the type's name alone says too little.
FIELD_HINTS = {"columns": "a mapping such as {instruction: question} (the format's field: your column)"}


def _entry(path: Path, name: str, spec, problems: Problems) -> DatasetEntry | None:
    """The DatasetEntry of one registry entry, or None after adding each of its problems to `problems`."""
    where = f"{path}: entry '{name}'"
    if not isinstance(spec, dict):
        problems.add(f"{where} must be a mapping with 'hub_id' or 'file', such as {{file: chats.jsonl}}; "
                     f"got {spec!r}.")
        return None
    found = len(problems.messages)
    values, misspelt = {}, set()
    for key, value in spec.items():
        key = str(key)
        if key not in ENTRY_FIELDS:
            hint = did_you_mean(key, ENTRY_FIELDS)
            misspelt |= {source for source in ("hub_id", "file") if f"'{source}'" in hint}
            problems.add(f"{where} has unknown key '{key}'" + (hint or f" (allowed: {', '.join(ENTRY_FIELDS)})."))
        elif value is not None:
            try:
                values[key] = coerce(value, ENTRY_FIELDS[key])
            except ValueError:
                problems.add(f"{where}: {key} must be {FIELD_HINTS.get(key) or type_name(ENTRY_FIELDS[key])}, "
                             f"got {value!r}.")
    if sum(spec.get(key) not in (None, "") for key in ("hub_id", "file")) != 1 and not misspelt:
        problems.add(f"{where} needs exactly one of 'hub_id' (a hub dataset) or 'file' (a local file).")
    if len(problems.messages) > found:
        return None
    if "file" in values:
        values["file"] = str((path.parent / values["file"]).resolve())
    return DatasetEntry(name=name, **values)


def load_registry(user_file: str | None = None) -> dict[str, DatasetEntry]:
    """The built-in entries plus those of `user_file` (which may override a built-in name).

    Raises UserError when the file is missing, not UTF-8 text, not valid YAML, not a mapping of names
    to entries, or when entries have unknown keys, values of the wrong type (each key's type is in
    ENTRY_FIELDS) or not exactly one of hub_id and file: every problem of the file in one message.
    """
    registry = dict(BUILTIN)
    if not user_file:
        return registry
    path = Path(user_file)
    require_file(path, "dataset registry", "fix data.dataset_registry.")
    try:
        raw = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as exc:  # its text spans lines; the line and the problem are what the user needs
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or 'syntax error'}); "
                        f"fix the syntax.") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of dataset names to entries, such as "
                        f"'my_set: {{file: chats.jsonl, format: alpaca}}'.")
    problems = Problems()
    entries = {str(name): _entry(path, str(name), spec, problems) for name, spec in raw.items()}
    problems.raise_if_any()
    return {**registry, **entries}


def unknown_dataset_error(name: str, registry: dict[str, DatasetEntry]) -> UserError:
    hint = did_you_mean(name, registry)
    return UserError(
        f"unknown dataset '{name}'{hint + ' Known' if hint else '; known'} names are {', '.join(registry)}; "
        f"or give a local .json/.jsonl/.csv/.parquet file, or a hub id like owner/name."
    )
