"""Keep the memory a CPU training step frees for the next step, instead of handing it back to Linux.

glibc serves large allocations with fresh mmap()s (above 128 KiB, a limit it raises by itself
only up to 32 MiB) and returns a freed heap top of more than a few MiB to the kernel. A training
step frees and re-allocates the same few hundred MB of activations and gradients, so every step
paid again for those pages: ~31,000 page faults per 450-token SmolLM2 step, each a trip into the
kernel that zeroes a page (measured with getrusage). With both limits raised, freed blocks stay in
the heap and are reused: page faults per step ~31,000 -> ~100, the same peak RSS (the peak is
reached either way; only the return of memory between steps stops), and 3-4% more tokens/s in
three of four alternating-process comparisons, at the edge of the test machine's noise. The
price: the heap sometimes cannot fit a request into the freed blocks and grows once more; in a
synthetic step pattern (tests/training/speedups/test_cpu_memory.py) RSS rose by up to 160 MB over the first ten
steps and then stayed flat for 40, and in training peak RSS was 2.41 GB against 2.36-2.40 GB.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt() parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Allocations below this come from the heap, so freed ones can be reused (the largest in a step
# is the loss head's: 8 MB blocks for a frozen head on CPU, a 134 MB whole-vocabulary chunk at
# Qwen's vocabulary when the head is trained). Some glibc builds cap the value at
# 32 MiB, the most their own adaptive limit reaches; that is used where 1 GiB is refused.
MMAP_THRESHOLDS = (1 << 30, 32 << 20)
# Free memory at the heap top kept for reuse rather than returned (mallopt takes a C int).
TRIM_THRESHOLD = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where there is no glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int  # returns 1 on success
    mmap_set = any(mallopt(M_MMAP_THRESHOLD, value) == 1 for value in MMAP_THRESHOLDS)
    return mmap_set and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
