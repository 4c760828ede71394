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
from ..models.hub import HF_MIRROR_EXAMPLE, hub_name, require_hub, selected_hub, written_as_path
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
    if selected_hub() == "modelscope":
        dataset = _from_modelscope(entry, option)
    else:
        dataset = _from_hugging_face(entry, option)
    with atomic_output_file(target, "wb") as handle:
        dataset.to_json(handle, force_ascii=False)
    return target


def _from_hugging_face(entry: DatasetEntry, option: str):
    require_hub(f"dataset '{entry.hub_id}'", offline_hint(option), on_modelscope=entry.modelscope_id is not None)
    import datasets

    try:
        return datasets.load_dataset(entry.hub_id, entry.subset, split=entry.split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        # Network and hub errors are OSError (huggingface_hub, httpx), a bad split or subset ValueError;
        # a dataset that is missing, gated or fails to build is one of datasets' own errors.
        raise UserError(
            f"could not download dataset '{entry.hub_id}' (split {entry.split}): {str(exc).splitlines()[0]}"
        ) from None


def _from_modelscope(entry: DatasetEntry, option: str):
    """entry's ModelScope copy as a datasets.Dataset (modelscope's MsDataset, converted)."""
    if entry.modelscope_id is None:
        raise UserError(
            f"dataset '{entry.name}' has no ModelScope id in the registry (it is not known to be on ModelScope); "
            f"fetch it from the Hugging Face hub or a mirror (--hub huggingface, HF_ENDPOINT={HF_MIRROR_EXAMPLE}), "
            f"or give modelscope_id in a registry file (data.dataset_registry), or "
            + offline_hint(option))
    require_hub(f"dataset '{entry.modelscope_id}'", offline_hint(option))
    from modelscope.msdatasets import MsDataset

    try:
        loaded = MsDataset.load(entry.modelscope_id, subset_name=entry.subset or "default", split=entry.split)
        return loaded.to_hf_dataset() if hasattr(loaded, "to_hf_dataset") else loaded
    except Exception as exc:  # modelscope's own error classes, network errors, a missing split
        raise UserError(f"could not download dataset '{entry.modelscope_id}' (split {entry.split}) from "
                        f"{hub_name()}: {str(exc).splitlines()[0][:200]}") from None


def looks_like_path(name: str) -> bool:
    """Whether a dataset name that names no existing file is meant as a path (a record file's suffix, a leading
    '.', '/' or '~', more than one '/', a backslash or a Windows drive), so that it is "file not found" rather
    than an unknown dataset."""
    return name.lower().endswith(SUFFIXES) or written_as_path(name)


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
        # An unregistered hub dataset: owner/name, on whichever hub --hub names.
        entry = DatasetEntry(name=name, hub_id=name, modelscope_id=name)
    fmt = data_format if data_format != "auto" else entry.format
    merged_columns = {**entry.columns, **columns}
    if entry.file:
        return DataSource(Path(entry.file), fmt, merged_columns, entry.name)
    return DataSource(download(entry, cache_dir, option=option), fmt, merged_columns, entry.name)
