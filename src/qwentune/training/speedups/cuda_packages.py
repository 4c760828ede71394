"""Which of the field's CUDA kernel packages can run in this process: flash-attn and liger-kernel.

The switchboard decides from this set (and never looks itself), so the decision is a pure function
that tests give any set. Off CUDA nothing is looked at: a CPU run is the same whatever is installed.

May import: torch, transformers.
"""

from __future__ import annotations

import importlib

FLASH_ATTN = "flash_attn"
LIGER_KERNEL = "liger_kernel"


def usable_packages(device: str) -> frozenset[str]:
    """The names of FLASH_ATTN / LIGER_KERNEL that import here and run on this card; empty off CUDA."""
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return frozenset()
    from transformers.utils import is_flash_attn_2_available

    major, _ = torch.cuda.get_device_capability()
    found = set()
    # flash-attn 2 runs on Ampere (sm80) and newer only (its README). is_flash_attn_2_available is the check
    # transformers' set_attn_implementation makes (the flash-attn distribution, version >= 2.3.3); the import
    # also loads its compiled extension, which fails for a build made against another torch.
    if major >= 8 and is_flash_attn_2_available() and _imports(FLASH_ATTN):
        found.add(FLASH_ATTN)
    # Liger's kernels are Triton's, and Triton compiles for sm70 (Volta) and newer; the import loads Triton.
    if major >= 7 and _imports(f"{LIGER_KERNEL}.transformers"):
        found.add(LIGER_KERNEL)
    return frozenset(found)


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    # A package built for another torch or CUDA fails with an undefined symbol (ImportError), a missing
    # shared library (OSError) or a version check of its own (RuntimeError): it cannot run, so it is not used.
    except (ImportError, OSError, RuntimeError):
        return False
    return True
