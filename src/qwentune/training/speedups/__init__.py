"""Device speed-ups, one module each, and the one switchboard that decides which of them run.

`choose_speedups` is called once per training run, after the model is wrapped with LoRA; it reads
the config's switches (each `auto` by default, each can be set off for an A/B or to debug), the
device, the model and which CUDA kernel packages can run here, and returns a `Speedups` record that
the trainer follows and the run summary lists. The decision itself is `plan_speedups`, a pure function
of those inputs; switching the kernels on is the only part that touches the model.

What `auto` runs where:

    switch               CPU                                  CUDA
    packing              padding-free rows, attention per example (every device)
    attn_implementation  qwentune_packed (sdpa per example)   flash_attention_2 (flash-attn's varlen
                         where every layer has full           kernels) when flash-attn runs here and
                         attention, else sdpa                 the weights are bf16/fp16; else as on CPU
    lean_head            the loss at labelled positions only, in blocks (every device; not when sharded)
                         kernel: loss.chunked_head            Liger's fused linear cross-entropy when
                                                              liger-kernel runs here, else chunked_head
    cpu_kernels          fused LoRA groups, cheap LoRA        -
                         dropout, RMSNorm with a hand-written
                         backward, kept malloc memory, packed
                         rows in passes of <= 512 tokens
    cuda_kernels         -                                    Liger's RMSNorm, SwiGLU, RoPE (and the
                                                              head's kernel above) when liger-kernel
                                                              runs here

On CUDA without flash-attn and liger-kernel: sdpa per example and qwentune's own lean head. Other
devices (MPS, NPU): the CPU column without cpu_kernels.

May import: torch, transformers, peft, ..loss, ...errors, ...config, ...models.lora_precision, and the modules of
this folder.
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
    cuda_kernels: tuple[str, ...]  # the CUDA kernels (Liger's) that were switched on, by name
    tokens_per_pass: int | None  # a packed row longer than this runs as several passes; None: one pass

    def describe(self) -> str:
        """One line for the log: what runs."""
        parts = ["packing" if self.packing else "padded batches", f"{self.attn_implementation} attention",
                 "lean loss head" if self.lean_head else "the model's own loss head"]
        for device, kernels in (("CPU", self.cpu_kernels), ("CUDA", self.cuda_kernels)):
            if kernels:
                parts.append(f"{device} kernels (" + ", ".join(k.replace("_", " ") for k in kernels) + ")")
        if self.tokens_per_pass:
            parts.append(f"passes of <= {self.tokens_per_pass} tokens")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {**asdict(self), "cpu_kernels": list(self.cpu_kernels), "cuda_kernels": list(self.cuda_kernels)}


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


@dataclass(frozen=True)
class ModelFacts:
    """What the choice needs to know about the model and the run (model_facts reads them)."""

    full_attention: bool  # every layer attends to all earlier tokens (no sliding windows)
    lean_head: bool  # loss.lean_head_supported, and FSDP / ZeRO-3 does not shard the head
    flash_attention: bool  # transformers has a flash-attention path for the architecture
    half_precision: bool  # frozen weights in bf16 / fp16, the only dtypes flash-attn takes


def model_facts(causal_lm) -> ModelFacts:
    """ModelFacts of `causal_lm`, a transformers model (the one inside the PeftModel)."""
    import torch

    from ..loss import lean_head_supported
    from .packed_attention import supports_packed_attention

    return ModelFacts(
        full_attention=supports_packed_attention(causal_lm.config),
        lean_head=lean_head_supported(causal_lm) and not parameters_sharded(),
        flash_attention=bool(getattr(causal_lm, "_supports_flash_attn", False)),
        # The input embedding is neither quantized nor an adapter: it holds the frozen weights' dtype.
        half_precision=causal_lm.get_input_embeddings().weight.dtype in (torch.bfloat16, torch.float16),
    )


@dataclass(frozen=True)
class Plan:
    """What plan_speedups decided; choose_speedups switches the kernel families on."""

    packing: bool
    attn_implementation: str
    lean_head: bool
    cpu_kernels: bool
    liger_kernels: bool
    tokens_per_pass: int | None


def plan_speedups(training: TrainingConfig, device: str, max_length: int, facts: ModelFacts,
                  packages: frozenset[str]) -> Plan:
    """Decide from the switches, the device, the model's facts and the CUDA kernel packages that can run
    (cuda_packages.usable_packages, empty off CUDA). UserError when a switch set to true cannot run here
    (the message says why and that `auto` picks what can)."""
    from .cuda_packages import FLASH_ATTN, LIGER_KERNEL
    from .packed_attention import NAME as PACKED

    packing = _resolve(training.packing, True)
    flash_possible = device == "cuda" and FLASH_ATTN in packages
    attention = training.attn_implementation
    if attention == "auto":
        # flash-attn's varlen kernels take a packed row whole: transformers finds the examples from the
        # restarting position ids when there is no attention mask and the micro-batch is one row, which is
        # what data.collate.pack_batch makes (transformers' modeling_flash_attention_utils.py,
        # _is_packed_sequence); it passes sliding windows to flash-attn, so they need no fallback.
        if packing and flash_possible and facts.flash_attention and facts.half_precision:
            attention = "flash_attention_2"
        else:
            attention = PACKED if packing and facts.full_attention else "sdpa"
    elif attention == PACKED and not facts.full_attention:
        raise UserError(f"training.attn_implementation {PACKED} needs full attention in every layer, and this model "
                        f"has sliding-window layers; use sdpa or auto.")
    elif attention == "flash_attention_2" and not flash_possible:
        raise UserError("training.attn_implementation flash_attention_2 needs a CUDA GPU (Ampere or newer) and the "
                        "flash-attn package (README: training on a GPU); use auto or sdpa.")
    elif attention == "flash_attention_2" and not (facts.flash_attention and facts.half_precision):
        raise UserError("training.attn_implementation flash_attention_2 needs bf16 or fp16 weights and an "
                        "architecture that transformers runs with flash-attn; use auto or sdpa.")

    lean_head = _resolve(training.lean_head, facts.lean_head)
    if lean_head and not facts.lean_head:
        raise UserError("training.lean_head is true, but this run cannot use it (the output head is not a plain "
                        "linear layer, scales or soft-caps its logits, or FSDP / ZeRO-3 shards it); set it to auto.")

    cpu = _resolve(training.cpu_kernels, device == "cpu")
    if cpu and device != "cpu":
        raise UserError(f"training.cpu_kernels is true, but this run is on {device}; the CPU kernels are made "
                        f"and measured for CPUs: set it to auto.")
    liger_possible = device == "cuda" and LIGER_KERNEL in packages
    liger = _resolve(training.cuda_kernels, liger_possible)
    if liger and not liger_possible:
        raise UserError(f"training.cuda_kernels is true, but this run is on {device} without a liger-kernel that "
                        f"runs (it needs a CUDA GPU and pip install 'qwentune[gpu]'); set it to auto.")
    return Plan(packing, attention, lean_head, cpu, liger, pass_tokens(training, device, max_length))


def choose_speedups(training: TrainingConfig, device: str, model, max_length: int) -> Speedups:
    """Decide, once, what a training run of `model` (a PeftModel) on `device` uses, and switch its kernels
    on. UserError as plan_speedups says."""
    from .cuda_packages import usable_packages

    causal_lm = model.get_base_model()
    plan = plan_speedups(training, device, max_length, model_facts(causal_lm), usable_packages(device))
    cpu = _cpu_kernels(model) if plan.cpu_kernels else ()
    cuda = ()
    if plan.liger_kernels:
        from .liger import use_liger_kernels

        cuda = use_liger_kernels(causal_lm, fused_head=plan.lean_head, insist=training.cuda_kernels is True)
    return Speedups(plan.packing, plan.attn_implementation, plan.lean_head, cpu, cuda, plan.tokens_per_pass)


def lean_head_kernel(speedups: Speedups):
    """The cross-entropy kernel of the lean head (loss.LeanLoss's `kernel`): Liger's where it was switched
    on, else None (loss.chunked_head)."""
    from .liger import FUSED_HEAD, fused_linear_cross_entropy_sum  # liger_kernel is imported on use only

    return fused_linear_cross_entropy_sum if FUSED_HEAD in speedups.cuda_kernels else None


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
