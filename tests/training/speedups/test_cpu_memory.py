import subprocess
import sys

import pytest

# A stand-in for training steps: tensors of a step's sizes (activations of a few MB, a 52 MB
# whole-vocabulary loss chunk as a trained head makes) allocated, filled and freed, twelve times;
# prints each step's page faults.
PROBE = """
import resource, sys, torch
from qwentune.training.speedups.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [torch.empty(megabytes << 18).fill_(1.0) for megabytes in (1, 3, 3, 1, 3, 52, 3, 1, 24)]
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[step() for _ in range(12)])
"""


def page_faults_per_step(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    return [int(faults) for faults in out.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_memory_freed_by_a_step_is_reused_by_the_next_instead_of_faulted_in_again():
    default, kept = page_faults_per_step("default"), page_faults_per_step("keep")
    # glibc's default: the 52 MB chunk (13,312 pages) is mostly a new mapping, faulted in again.
    assert sum(default[2:]) > len(default[2:]) * ((52 << 20) // 4096) // 2, default
    # Kept: after the first steps, most steps fault nothing (now and then the heap still grows by
    # a block it could not fit, seen at most twice in 40 steps), so at least 3x fewer faults.
    assert sum(kept[2:]) * 3 < sum(default[2:]), kept
