"""Device speed-ups, one module each, and the one switchboard that decides which of them run.

`choose_speedups` is called once per training run, after the model is wrapped with LoRA; it reads
the config's switches (each `auto` by default, each can be set off for an A/B or to debug) and the
device, and returns a `Speedups` record that the trainer follows and the run summary lists.

    packing          padding-free rows, attention per example           every device
    attn_implementation  qwentune_packed (per-example sdpa) where the model allows it, else sdpa
    lean_head        the loss at labelled positions only, in blocks     every device (not sharded)
    cpu_kernels      fused LoRA groups, cheap LoRA dropout, RMSNorm     CPU
                     with a hand-written backward, kept malloc memory,
                     packed rows run in passes of <= 512 tokens
CUDA choices (flash-attention varlen, Liger kernels) will be added here, one module and one line each.

May import: torch, transformers, peft, ..loss, ...errors, ...config, and the modules of this folder.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

from ...config import TrainingConfig
from ...errors import UserError

# On CPU a packed micro-batch runs in passes of at most this many tokens (or max_length when
# longer): throughput per token was flat from 256 to 2,048 tokens per pass (SmolLM2, measured),
# while activation memory grows with every token. GPUs want large passes; their batch size is
# sized to the card by the memory planner instead.
CPU_TOKENS_PER_PASS = 512


@dataclass(frozen=True)
class Speedups:
    """What a training run uses; see the module docstring."""

    packing: bool
    attn_implementation: str  # during training: qwentune_packed, sdpa, eager, flash_attention_2, ...
    lean_head: bool
    cpu_kernels: tuple[str, ...]  # the CPU kernels that were switched on, by name
    tokens_per_pass: int | None  # a packed row longer than this runs as several passes; None: one pass

    def describe(self) -> str:
        """One line for the log: what runs."""
        parts = ["packing" if self.packing else "padded batches", f"{self.attn_implementation} attention",
                 "lean loss head" if self.lean_head else "the model's own loss head"]
        if self.cpu_kernels:
            parts.append("CPU kernels (" + ", ".join(k.replace("_", " ") for k in self.cpu_kernels) + ")")
        if self.tokens_per_pass:
            parts.append(f"passes of <= {self.tokens_per_pass} tokens")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {**asdict(self), "cpu_kernels": list(self.cpu_kernels)}


def pass_tokens(training: TrainingConfig, device: str, max_length: int) -> int | None:
    """The most tokens one forward/backward pass holds when training splits packed rows, else None."""
    if device != "cpu" or not _resolve(training.cpu_kernels, device == "cpu") or not _resolve(training.packing, True):
        return None
    return max(max_length, CPU_TOKENS_PER_PASS)


def parameters_sharded() -> bool:
    """FSDP or DeepSpeed ZeRO-3 under accelerate launch (read from the environment accelerate sets)."""
    env = os.environ
    fsdp = env.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    zero3 = env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and env.get(
        "ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3"
    return fsdp or zero3


def _resolve(value, auto: bool) -> bool:
    return auto if value == "auto" else bool(value)


def choose_speedups(training: TrainingConfig, device: str, model, max_length: int) -> Speedups:
    """Decide, once, what a training run of `model` (a PeftModel) on `device` uses. UserError when a
    switch set to true cannot run here (the message says why and that `auto` picks what can)."""
    from ..loss import lean_head_supported
    from .packed_attention import NAME as PACKED
    from .packed_attention import supports_packed_attention

    causal_lm = model.get_base_model()
    config = causal_lm.config
    packing = _resolve(training.packing, True)

    attention = training.attn_implementation
    if attention == "auto":
        attention = PACKED if packing and supports_packed_attention(config) else "sdpa"
    elif attention == PACKED and not supports_packed_attention(config):
        raise UserError(f"training.attn_implementation {PACKED} needs full attention in every layer, and this model "
                        f"has sliding-window layers; use sdpa or auto.")
    elif attention == "flash_attention_2":
        _require_flash_attention(device)

    lean_possible = lean_head_supported(causal_lm) and not parameters_sharded()
    lean_head = _resolve(training.lean_head, lean_possible)
    if lean_head and not lean_possible:
        raise UserError("training.lean_head is true, but this run cannot use it (the output head is not a plain "
                        "linear layer, scales or soft-caps its logits, or FSDP / ZeRO-3 shards it); set it to auto.")

    cpu = _resolve(training.cpu_kernels, device == "cpu")
    if cpu and device != "cpu":
        raise UserError(f"training.cpu_kernels is true, but this run is on {device}; the CPU kernels are made "
                        f"and measured for CPUs: set it to auto.")
    kernels = _cpu_kernels(model) if cpu else ()
    return Speedups(packing, attention, lean_head, kernels, pass_tokens(training, device, max_length))


def _require_flash_attention(device: str) -> None:
    import importlib.util

    if device != "cuda" or importlib.util.find_spec("flash_attn") is None:
        raise UserError("training.attn_implementation flash_attention_2 needs a CUDA GPU and the flash-attn "
                        "package (pip install flash-attn); use auto or sdpa.")


def _cpu_kernels(model) -> tuple[str, ...]:
    """Switch the CPU kernels on for `model`; the names of those that took effect."""
    from .cpu_memory import keep_freed_memory
    from .fused_lora import use_fused_lora
    from .fused_norm import use_fused_rms_norm
    from .lora_dropout import use_fast_lora_dropout

    # Elementwise work is a large share of a CPU step (measured; benchmarks/README.md). These keep
    # PEFT's results and parameters.
    applied = {
        "fast_lora_dropout": use_fast_lora_dropout(model),  # torch's CPU dropout was a quarter of the step
        "fused_lora": use_fused_lora(model),
        "fused_rms_norm": use_fused_rms_norm(model),
        "keep_freed_memory": keep_freed_memory(),  # a step's activations are reused, not faulted in again
    }
    return tuple(name for name, done in applied.items() if done)


@contextmanager
def attention_implementation(causal_lm, name: str) -> Iterator[None]:
    """Run the block with `causal_lm` (a transformers model) switched to attention `name`, then switch back."""
    previous = causal_lm.config._attn_implementation
    if name == previous:
        yield
        return
    causal_lm.set_attn_implementation(name)
    try:
        yield
    finally:
        causal_lm.set_attn_implementation(previous)
