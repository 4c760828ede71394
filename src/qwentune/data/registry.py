"""Named datasets: where each comes from and what format it is in.

Built-in names cover the seed's datasets; a YAML file (data.dataset_registry) adds more
in the same form:

    my_support_chats:            # a local file
      file: chats.jsonl          # relative to the registry file
      format: sharegpt
    my_hub_set:                  # a hub dataset
      hub_id: someone/some-dataset
      split: train
      columns: {instruction: question, output: answer}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..errors import UserError, did_you_mean
from ..fsutil import read_text


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    hub_id: str | None = None
    file: str | None = None
    split: str = "train"
    subset: str | None = None
    format: str = "auto"
    columns: dict = field(default_factory=dict)
    description: str = ""

    @property
    def cache_name(self) -> str:
        """File name under data/cache/: the registered name with path separators made safe."""
        return self.name.replace("/", "__") + ".jsonl"


BUILTIN: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in [
        DatasetEntry(
            "chinese_alpaca", hub_id="hfl/alpaca_zh_51k", format="alpaca",
            description="Chinese Alpaca, 51k instructions translated with gpt-3.5 (Chinese-LLaMA-Alpaca)",
        ),
        DatasetEntry(
            "alpaca_gpt4_data", hub_id="vicgalle/alpaca-gpt4", format="alpaca",
            description="Alpaca instructions answered by GPT-4, English, 52k (GPT-4-LLM)",
        ),
        DatasetEntry(
            "alpaca_gpt4_data_zh", hub_id="shibing624/alpaca-zh", format="alpaca",
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
            description="Stanford Alpaca with its known errors cleaned, English, 52k",
        ),
    ]
}

DEFAULT_DATASETS = ["chinese_alpaca", "alpaca_gpt4_data", "OpenAssistant/oasst1", "tatsu-lab/alpaca",
                    "yahma/alpaca-cleaned"]


def load_registry(user_file: str | None = None) -> dict[str, DatasetEntry]:
    """The built-in entries plus those of `user_file` (which may override a built-in name).

    Raises UserError when the file is missing, not UTF-8 text, not valid YAML, or has a bad entry.
    """
    registry = dict(BUILTIN)
    if not user_file:
        return registry
    path = Path(user_file)
    if not path.is_file():
        raise UserError(f"{path}: dataset registry file not found; fix data.dataset_registry.")
    try:
        raw = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc}); fix the syntax.") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of dataset names to entries.")
    allowed = [f.name for f in fields(DatasetEntry) if f.name != "name"]
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise UserError(f"{path}: entry '{name}' must be a mapping with 'hub_id' or 'file'.")
        for key in spec:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f" (allowed: {', '.join(allowed)})"
                raise UserError(f"{path}: entry '{name}' has unknown key '{key}'{hint}.")
        if bool(spec.get("hub_id")) == bool(spec.get("file")):
            raise UserError(f"{path}: entry '{name}' needs exactly one of 'hub_id' or 'file'.")
        if spec.get("file"):
            spec = {**spec, "file": str((path.parent / spec["file"]).resolve())}
        registry[str(name)] = DatasetEntry(name=str(name), **spec)
    return registry


def unknown_dataset_error(name: str, registry: dict[str, DatasetEntry]) -> UserError:
    hint = did_you_mean(name, registry)
    return UserError(
        f"unknown dataset '{name}'{hint + ' Known' if hint else '; known'} names are {', '.join(registry)}; "
        f"or give a local .json/.jsonl/.csv/.parquet file, or a hub id like owner/name."
    )
