"""Which CUDA kernel packages the switchboard is told can run: none off CUDA, each only on the cards it runs on,
and only when it imports. The card and the packages are described to the probe (no GPU here)."""

import pytest
import torch
import transformers.utils

from qwentune.training.speedups import cuda_packages
from qwentune.training.speedups.cuda_packages import FLASH_ATTN, LIGER_KERNEL, usable_packages


@pytest.fixture
def card(monkeypatch):
    """Describe a CUDA card of the given compute capability on which every package imports."""
    def describe(capability, transformers_sees_flash_attn=True, imports=lambda module: True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: capability)
        monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: transformers_sees_flash_attn)
        monkeypatch.setattr(cuda_packages, "_imports", imports)
    return describe


def test_nothing_is_looked_at_off_cuda(card):
    card((9, 0))
    assert usable_packages("cuda") == {FLASH_ATTN, LIGER_KERNEL}
    for device in ("cpu", "mps", "npu"):
        assert usable_packages(device) == frozenset()


def test_each_package_only_on_the_cards_it_runs_on(card):
    card((8, 0))
    assert usable_packages("cuda") == {FLASH_ATTN, LIGER_KERNEL}
    card((7, 5))  # Turing: Triton (Liger) yes, flash-attn 2 no
    assert usable_packages("cuda") == {LIGER_KERNEL}
    card((6, 1))  # Pascal: neither
    assert usable_packages("cuda") == frozenset()


def test_a_package_that_does_not_import_is_not_used(card):
    card((9, 0), transformers_sees_flash_attn=False)  # e.g. flash-attn older than transformers takes
    assert usable_packages("cuda") == {LIGER_KERNEL}
    card((9, 0), imports=lambda module: module.startswith(FLASH_ATTN))
    assert usable_packages("cuda") == {FLASH_ATTN}


def test_imports_is_false_for_a_missing_or_broken_module(tmp_path, monkeypatch):
    (tmp_path / "qwentune_broken_build.py").write_text("raise OSError('libcudart.so.11: cannot open shared file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cuda_packages._imports("json")
    assert not cuda_packages._imports("qwentune_no_such_module")
    assert not cuda_packages._imports("qwentune_broken_build")
