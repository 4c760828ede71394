"""Several training processes (torchrun / accelerate launch): barriers that fail with one sentence, and
the launcher's choices checked against the device. Alone, every function here is a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from ..errors import UserError


def check_launcher_fits_device(device: str) -> None:
    """FSDP and DeepSpeed run on GPUs only: on CPU accelerate would quietly run plain data parallel."""
    for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if device == "cpu" and os.environ.get(variable, "false").lower() == "true":
            raise UserError(
                f"the accelerate config asks for {name}, which accelerate runs on GPUs only and none is in use here; on CPU "
                f"launch with --config_file config/accelerate/ddp.yaml (or torchrun) instead."
            )


def wait_for_all(process) -> None:
    """A barrier that, when another process has died (say on bad input), stops this one with one sentence."""
    try:
        process.wait_for_everyone()
    except RuntimeError:  # gloo / NCCL: the peer closed its connection
        raise UserError("another process of this job stopped (its message is above); this one stops too.") from None


@contextmanager
def main_process_first(process):
    """accelerate's main_process_first, with wait_for_all as the barrier."""
    if not process.is_main_process:
        wait_for_all(process)
    yield
    if process.is_main_process:
        wait_for_all(process)
