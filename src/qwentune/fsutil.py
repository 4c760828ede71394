"""Files: read text the one way (UTF-8, a BOM allowed, anything else one clear error), and write
outputs so that a crash or a bad input never leaves a half-written result, another process never
writes the same output at the same time, and others can read what qwentune wrote.

Everything is written under a temporary name next to the target and renamed into
place only when complete (a rename within one directory is atomic on POSIX), with the modes
a plain open() / mkdir() would have given under the user's umask.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
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
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # not gzip, cut short, or damaged inside
        raise UserError(f"{path}: not a valid gzip file ({exc or 'it ends too early'}); "
                        f"compress it again with gzip, or give the uncompressed file.") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (line {line}); save it as UTF-8.") from None


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """The JSON object in a UTF-8 file another program wrote (a model's config.json, an adapter_config.json).

    Raises UserError "PATH: not valid JSON (line N); FIX" (or not UTF-8 / not a JSON object), `fix` saying
    how to restore the file; FileNotFoundError is the caller's to word.
    """
    path = Path(path)
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}); {fix}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: not a JSON object; {fix}")
    return value


def _umask_from_proc() -> int | None:
    """The umask as Linux (kernel >= 4.7) shows it in /proc/self/status, or None where it does not."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


# Elsewhere the umask can only be read by setting it and setting it back, and a file another thread
# creates in between gets the wrong mode; so that is done once, here at import, before qwentune starts
# any thread, and only where /proc cannot say it race-free at the moment of writing.
_UMASK_AT_IMPORT = _umask_from_proc()
if _UMASK_AT_IMPORT is None:
    _UMASK_AT_IMPORT = os.umask(0o022)
    os.umask(_UMASK_AT_IMPORT)


def current_umask() -> int:
    """The process's file mode creation mask (0o022 on most systems)."""
    found = _umask_from_proc()
    return _UMASK_AT_IMPORT if found is None else found


def give_umask_modes(path: str | os.PathLike) -> None:
    """Give `path` (a file, or a directory and everything in it) the modes a plain open() / mkdir() gets under
    the current umask: 0o666 & ~umask for files, 0o777 & ~umask for directories (0644 / 0755 under umask 022).

    tempfile.mkstemp / mkdtemp create 0600 / 0700 on purpose (private while half-written) and safetensors
    writes 0600; renamed into place as they are, an adapter or a metrics file could not be read by a server or
    a colleague running as another user. On Windows chmod only sets or clears the read-only flag: harmless.
    """
    mask = current_umask()
    path = Path(path)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def require_file(path: str | os.PathLike, what: str, hint: str = "check the path.") -> Path:
    """`path` as a Path when it is an existing file (or a link to one); what the user gave otherwise says so.

    Raises UserError "<path> is a directory, not a <what> file" for a directory, and
    "<path>: <what> file not found; <hint>" when nothing is there.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a {what} file; give the file's path.")
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found; {hint}")
    return path


@dataclass(frozen=True)
class OutputKind:
    """What an output directory of one kind holds, so that only a previous output of the same kind is replaced.

    name: how messages call it ("tokenized dataset"); markers: files every complete output of this kind holds.
    """

    name: str
    markers: tuple[str, ...]

    def holds(self, directory: Path) -> bool:
        """Whether `directory` is a previous output of this kind (all its markers are files there)."""
        return bool(self.markers) and all((directory / marker).is_file() for marker in self.markers)


def check_directory_path(target: str | os.PathLike, option: str = "--output_dir") -> None:
    """Refuse, before any work, a directory path that is a file or lies under one (mkdir would fail there).

    Raises UserError naming `option`; a missing directory is fine (it is created when written).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is a file; give a directory path as {option}.")
    _check_parents(target, option)


def _check_parents(target: Path, option: str) -> None:
    """UserError when the nearest existing parent of `target` is a file: nothing can be created under it."""
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{parent} is a file, so {target} cannot be created; choose another {option}.")
            break


def check_output_dir(target: str | os.PathLike, replaces: OutputKind | None, option: str = "--output_dir") -> None:
    """Refuse, before any work, an output directory that atomic_output_dir(target, replaces) would not replace.

    Missing or empty: fine. A previous output of the kind `replaces` names: fine (it is replaced whole).
    Raises UserError for a file at `target`, and for a directory holding anything else (the user's files,
    or any output at all where `replaces` is None): replacing it would delete them.
    """
    target = Path(target)
    check_directory_path(target, option)
    if not target.is_dir() or not any(target.iterdir()):
        return
    if replaces is not None and replaces.holds(target):
        return
    kind = f"a qwentune {replaces.name}" if replaces is not None else "from this run"
    raise UserError(f"{target} already holds files that are not {kind}; choose another {option} or empty it.")


def check_output_file(target: str | os.PathLike, option: str = "--output", example: str | None = None) -> None:
    """Refuse, before any work, an output file path that names a directory or lies under a file.

    Raises UserError naming `option` (and, for a directory, suggesting the file `example` in it); an existing
    file is fine (it is replaced whole by atomic_output_file).
    """
    target = Path(target)
    if target.is_dir():
        such_as = f" such as {target / example}" if example else ""
        raise UserError(f"{target} is a directory; give a file path{such_as} as {option}.")
    _check_parents(target, option)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user (PermissionError), or the platform cannot tell
        return True
    return True


def remove_abandoned_temporaries(target: str | os.PathLike) -> None:
    """Remove what atomic_output_dir left beside `target` in a process that was killed (SIGKILL, power loss)
    before it could clean up: `.NAME.tmp-PID-*` directories whose process is gone. Gigabytes, for a GGUF export."""
    target = Path(target)
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.tmp-*-*"):
        pid = leftover.name[len(f".{target.name}.tmp-"):].split("-", 1)[0]
        if leftover.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, replaces: OutputKind | None,
                      option: str = "--output_dir") -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `target` only if the block succeeds.

    `replaces` states what may be there already: a missing or empty directory always may; a previous output
    of that kind (OutputKind.holds) is replaced whole; with None nothing else is. Anything else (a file, a
    directory with other files) raises UserError before the block runs (check_output_dir: callers call it
    before their work too, so the refusal comes first).
    """
    # A symlink to the output is followed: the directory it points to is replaced (and locked: output_lock_path
    # resolves too), the link itself stays a link.
    target = Path(os.path.realpath(target))
    check_output_dir(target, replaces, option)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(target)
    # The pid in the name tells a later run whether the process that made it is gone (killed mid-write).
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        give_umask_modes(tmp)
        check_output_dir(target, replaces, option)  # something else put there while the block ran
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
def atomic_output_file(target: str | os.PathLike, mode: str = "w", option: str = "--output",
                       **open_kwargs: Any) -> Iterator[Any]:
    """Open a temporary file that replaces `target` only if the block succeeds.

    Raises UserError (check_output_file, naming `option`) before opening anything when `target` is a directory.
    """
    target = Path(target)
    check_output_file(target, option)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    try:
        with open(tmp_name, mode, **open_kwargs) as handle:
            yield handle
        give_umask_modes(tmp_name)
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


def output_lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output: `.<name>.lock` beside it in its parent directory.

    Beside, not inside: a directory that atomic_output_dir replaces whole, and a single file, are held alike,
    and a run's directory holds only what the run wrote.
    """
    target = Path(target).resolve()
    return target.with_name(f".{target.name}.lock")


def _flock_holder(lock_file: Path) -> int | None:
    """The pid that holds a flock on lock_file, from /proc/locks (Linux); None where that cannot be known."""
    try:
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
        st = os.stat(lock_file)
        inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    except (OSError, AttributeError):  # no /proc/locks (macOS, Windows), no os.major (Windows)
        return None
    for line in table.splitlines():
        # "3: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF"; a waiter's line reads "3: -> FLOCK ..."
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode and fields[4].isdigit():
            return int(fields[4])
    return None


def output_holder(target: str | os.PathLike) -> int | None:
    """The pid of the process that holds the output `target` (hold_output) now, read without taking the lock (so a
    program that only watches, such as the web page, never makes a starting run fail); None when nothing holds it,
    or where the holder cannot be read (only Linux shows flocks, in /proc/locks)."""
    return _flock_holder(output_lock_path(target))


def _missing_directories(directory: Path) -> list[Path]:
    """directory and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


@contextlib.contextmanager
def hold_output(target: str | os.PathLike, option: str = "--output_dir") -> Iterator[Path]:
    """Hold the output `target` (a file or directory) for this process while the block runs; yields the lock file.

    One process writes an output at a time: a second one asking for the same target meanwhile is refused at
    once with UserError (naming `option`, the command-line option that chose the target), having written
    nothing. The hold is a kernel lock (flock on POSIX, LockFileEx on Windows; the filelock package) on
    output_lock_path(target), which the OS drops when the process ends however it ends: a killed run's lock
    file is stale by construction and the next start simply takes it. Where a filesystem has no flock,
    filelock falls back to a marker file with the holder's pid and breaks it once that process is gone.
    Re-entrant within a thread (the demo holds the run directory that train() holds again); another thread
    is refused like another process. On release the lock file, and any parent directory created for it that
    is still empty, are removed.
    """
    from filelock import FileLock, Timeout

    _check_parents(Path(target), option)  # the lock file goes beside the target
    lock_file = output_lock_path(target)
    created = _missing_directories(lock_file.parent)
    # is_singleton: the same path gives the same lock object, so holding it again in one thread counts up.
    lock = FileLock(lock_file, blocking=False, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        pid = _flock_holder(lock_file)
        holder = ("another task of this qwentune process" if pid == os.getpid()
                  else "another qwentune process" + (f" (pid {pid})" if pid else ""))
        raise UserError(f"{target} is being written by {holder}; wait for it to finish or choose another "
                        f"{option}.") from None
    except OSError as exc:  # no permission, a read-only filesystem, ...
        raise UserError(f"{target}: cannot create its lock file {lock_file} ({exc.strerror}); choose another "
                        f"{option} in a directory you can write.") from None
    try:
        yield lock_file
    finally:
        # filelock leaves a flock'ed file in place on release (its soft marker and Windows files it removes
        # itself). Removed while still held, the file's inode can never be taken again: a process that
        # opened it just before gets the lock, sees it has no name left (filelock checks) and is refused.
        # An empty file is ours; a soft marker holds the holder's pid.
        if os.name != "nt" and lock.lock_counter == 1 and lock_file.is_file() and lock_file.stat().st_size == 0:
            with contextlib.suppress(OSError):
                lock_file.unlink()
        lock.release()
        for directory in created:
            try:
                directory.rmdir()  # only if empty: the block wrote nothing there
            except OSError:
                break
