"""fsutil: holding an output for one process, and the modes of what is written atomically."""

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from qwentune.errors import UserError
from qwentune.fsutil import hold_output, output_lock_path


def test_hold_is_reentrant_in_a_thread_refuses_another_thread_and_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    refused = []

    def other_thread():
        try:
            with hold_output(target):
                refused.append(None)
        except UserError as exc:
            refused.append(str(exc))

    with hold_output(target) as lock_file:
        assert lock_file == output_lock_path(target) == tmp_path / "new" / "deeper" / ".out.lock"
        with hold_output(target):  # the demo holds the run directory, and train() holds it again
            pass
        assert lock_file.is_file()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert refused == [f"{target} is being written by another task of this qwentune process; wait for it to "
                       f"finish or choose another --output_dir."]
    # The lock file and the directories made for it are gone: a run refused by a later check leaves nothing.
    assert list(tmp_path.iterdir()) == []


WRITER = textwrap.dedent("""
    import os, sys
    os.umask(int(sys.argv[1], 8))
    from qwentune.fsutil import atomic_output_dir, write_json
    root = sys.argv[2]
    write_json(os.path.join(root, "a", "result.json"), {"x": 1})
    with atomic_output_dir(os.path.join(root, "b"), None) as tmp:
        (tmp / "inner").mkdir()
        (tmp / "inner" / "weights.bin").write_bytes(b"0")
        os.chmod(tmp / "inner" / "weights.bin", 0o600)  # as safetensors writes its files
""")


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def test_atomic_writes_get_the_modes_the_umask_gives(tmp_path, umask):
    run = subprocess.run([sys.executable, "-c", WRITER, oct(umask), str(tmp_path / "w")], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in tmp_path.rglob("*")}
    file_mode, dir_mode = oct(0o666 & ~umask), oct(0o777 & ~umask)
    assert modes == {"w": dir_mode, "w/a": dir_mode, "w/a/result.json": file_mode, "w/b": dir_mode,
                     "w/b/inner": dir_mode, "w/b/inner/weights.bin": file_mode}
