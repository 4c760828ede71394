"""The device and the precision a model runs in: chosen here, once, for training and for answering.

The frozen base weights are held in the compute precision (bf16 where the hardware has it, fp16
on GPUs without bf16, fp32 otherwise) while PEFT keeps the small adapter in fp32 and the Trainer
runs under autocast. On a CPU with native bf16 (avx512_bf16 / AMX) bf16 matmuls were ~2.3x faster
than fp32 (DESIGN.md); on a CPU without it bf16 is emulated and slower, so the CPU uses it only
where it is native.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

# Set to 1 or 0 to decide for this CPU instead of detecting (the test suite uses it to run the bf16
# path on a CPU without native bf16, where torch emulates it: the same numerics, slower).
CPU_BF16_OVERRIDE = "QWENTUNE_CPU_BF16"


@dataclass(frozen=True)
class Precision:
    device: str  # cuda, mps, npu or cpu
    dtype: torch.dtype  # of the frozen base weights
    bf16: bool  # mixed-precision flags for the Trainer
    fp16: bool

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[self.dtype]

    @property
    def bytes_per_value(self) -> int:
        return 4 if self.dtype == torch.float32 else 2


def detect_device() -> str:
    """cuda, npu (Ascend, through torch_npu), mps (Apple) or cpu: the first that is present."""
    if torch.cuda.is_available():
        return "cuda"
    try:
        import torch_npu  # noqa: F401  (Ascend; registers torch.npu)

        if torch.npu.is_available():
            return "npu"
    except ImportError:
        pass
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions, where bf16 matmuls beat fp32.

    QWENTUNE_CPU_BF16=1 / 0 overrides the detection.
    """
    override = os.environ.get(CPU_BF16_OVERRIDE, "").strip()
    if override in ("0", "1"):
        return override == "1"
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or _cpu_flags_have_bf16()


def _cpu_flags_have_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(bf16: bool = True, fp16: bool = False, device: str | None = None) -> Precision:
    """The precision for `device` (default: detect_device()) given the config's bf16 / fp16 wishes.

    CUDA: bf16 where the card has it, else fp16 (a pre-Ampere card asked for bf16 gets fp16);
    Ascend: as asked; CPU: bf16 only where it is native; Apple MPS and everything else: fp32.
    """
    device = device or detect_device()
    if device == "cuda":
        if bf16 and torch.cuda.is_bf16_supported():
            return Precision(device, torch.bfloat16, True, False)
        if bf16 or fp16:
            return Precision(device, torch.float16, False, True)
        return Precision(device, torch.float32, False, False)
    if device == "npu" and (bf16 or fp16):
        return Precision(device, torch.bfloat16 if bf16 else torch.float16, bf16, not bf16)
    if device == "cpu" and bf16 and cpu_has_native_bf16():
        return Precision(device, torch.bfloat16, True, False)
    return Precision(device, torch.float32, False, False)
