"""From a dataset name or path to a local file of records, downloading when needed.

Named hub datasets are fetched once with `datasets` and kept as JSON Lines in
data/cache/<name>.jsonl, so later runs (and users) read a plain local file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_output_file
from ..models.hub import require_hub
from .readers import SUFFIXES
from .registry import DatasetEntry, load_registry, unknown_dataset_error


def offline_hint(option: str = "--dataset_name") -> str:
    return ("download on a machine with network (python data/download_data.py) and copy data/cache/, "
            f"or pass a local .json/.jsonl/.csv/.parquet file as {option}.")



@dataclass(frozen=True)
class DataSource:
    """A local file (or directory) of records, and how to read them."""

    path: Path
    format: str
    columns: dict
    label: str  # what to call it in messages and stats


def download(entry: DatasetEntry, cache_dir: str | os.PathLike, force: bool = False,
             option: str = "--dataset_name") -> Path:
    """Fetch a hub dataset into cache_dir as JSON Lines; return the file. Offline: UserError at once
    (naming `option`, the caller's flag that named the dataset)."""
    target = Path(cache_dir) / entry.cache_name
    if target.is_file() and not force:
        return target
    if entry.hub_id is None:
        raise UserError(f"dataset '{entry.name}' is a local file ({entry.file}); there is nothing to download.")
    require_hub(f"dataset '{entry.hub_id}'", offline_hint(option))
    import datasets

    try:
        dataset = datasets.load_dataset(entry.hub_id, entry.subset, split=entry.split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        # Network and hub errors are OSError (huggingface_hub, httpx), a bad split or subset ValueError;
        # a dataset that is missing, gated or fails to build is one of datasets' own errors.
        raise UserError(
            f"could not download dataset '{entry.hub_id}' (split {entry.split}): {str(exc).splitlines()[0]}"
        ) from None
    with atomic_output_file(target, "wb") as handle:
        dataset.to_json(handle, force_ascii=False)
    return target


def looks_like_path(name: str) -> bool:
    """Whether a dataset name that names no existing file is meant as a path (a record file's suffix, a leading
    '.', '/' or '~', or more than one '/'), so that it is "file not found" rather than an unknown dataset."""
    lowered = name.lower()
    return lowered.endswith(SUFFIXES) or name.startswith((".", "/", "~")) or name.count("/") > 1


def resolve(name: str, data_format: str = "auto", columns: dict | None = None,
            registry_file: str | None = None, cache_dir: str = "data/cache", option: str = "--dataset_name"
            ) -> DataSource:
    """Turn `name` (a local path, a registered name or a hub id, given as `option`) into a local DataSource.

    The registry file, when one is given, is read (and a missing or broken one refused) whatever `name` is."""
    columns = dict(columns or {})
    registry = load_registry(registry_file)
    path = Path(name).expanduser()
    if path.exists():
        return DataSource(path, data_format, columns, str(path))
    entry = registry.get(name)
    if entry is None:
        if looks_like_path(name):
            raise UserError(f"{name}: file not found; check the path (relative paths start from {Path.cwd()}).")
        if name.count("/") != 1:
            raise unknown_dataset_error(name, registry)
        entry = DatasetEntry(name=name, hub_id=name)  # an unregistered hub dataset: owner/name
    fmt = data_format if data_format != "auto" else entry.format
    merged_columns = {**entry.columns, **columns}
    if entry.file:
        return DataSource(Path(entry.file), fmt, merged_columns, entry.name)
    return DataSource(download(entry, cache_dir, option=option), fmt, merged_columns, entry.name)
