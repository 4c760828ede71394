"""Files: read text the one way (UTF-8, a BOM allowed, anything else one clear error), and write
outputs so that a crash or a bad input never leaves a half-written result.

Everything is written under a temporary name next to the target and renamed into
place only when complete (a rename within one directory is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file (a leading BOM, as Excel and Notepad write, is dropped; .gz is unpacked).

    Raises UserError naming the file and the line of the first byte that is not UTF-8 (a file saved
    as GBK, say); FileNotFoundError and other OSErrors are the caller's to word.
    """
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (line {line}); save it as UTF-8.") from None


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_file(target: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[Any]:
    """Open a temporary file that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    try:
        with open(tmp_name, mode, **open_kwargs) as handle:
            yield handle
    except BaseException:
        os.unlink(tmp_name)
        raise
    os.replace(tmp_name, target)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as readable UTF-8 JSON (Chinese stays readable), atomically.

    Raises ValueError for a NaN or infinity anywhere in `obj`: strict JSON has no such values (other programs'
    parsers reject the file), so one reaching here is a bug, and nothing is written."""
    with atomic_output_file(path, encoding="utf-8") as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2, allow_nan=False)
        handle.write("\n")


def numbered_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """checkpoint-N directories of a training output, oldest (lowest N) first."""
    found = [p for p in Path(directory).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))
