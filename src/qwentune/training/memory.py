"""Memory estimates, and batch settings that fit a given card.

The estimate adds up what a LoRA step holds at its peak: the frozen weights, the adapter
with its gradients and AdamW state, the activations saved for backward, and the loss
head (qwentune's lean head computes logits a chunk at a time and keeps one hidden-size
gradient per token; the naive full logits would often be the largest single item for
Qwen's 151,936-token vocabulary). It assumes the worst batch, every row max_length long. It is a planning
figure, printed beside the measured peak after training, not a promise: on a GPU the memory probe
(memory_probe.py) then measures one real step at the data's longest batch and steps the settings down
from what it measured.

Presets name the seed's cards; `auto` reads the memory of the device at hand. Either way
the same chooser starts from the seed's batch size for that much memory (for Qwen2-0.5B:
24 GB -> 8, 16 GB -> 4, 12 GB -> 2), adds gradient checkpointing, then 4-bit weights, then
halves the batch until the estimate fits, and sets gradient accumulation so the effective
batch size stays what the config says.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UserError
from .loss import head_blocks
from .presets import PRESETS_GB
from .speedups import pass_tokens

GB = 1e9

CUDA_CONTEXT_GB = 0.8  # CUDA context and kernels, held before the first tensor
# On CPU the measured peak is the process's RSS: Python with torch, transformers and datasets
# imported held about 0.6 GB before the model was loaded (measured on Linux).
CPU_RUNTIME_GB = 0.6
USABLE_FRACTION = 0.85  # allocator fragmentation and spikes eat the rest


@dataclass(frozen=True)
class ModelShape:
    """The layer sizes that decide memory: those of config.json (head_dim 0 means hidden // heads)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    head_dim: int = 0  # Qwen3 sets it apart from hidden // heads (0.6B: 1024 // 16 = 64, but 128)
    qkv_bias: bool = False  # Qwen2 and Qwen2.5 always have q/k/v biases; Qwen3 has none
    qk_norm: bool = False  # Qwen3 normalises q and k per head (two RMSNorm weights of head_dim per layer)

    @classmethod
    def from_config(cls, config) -> "ModelShape | None":
        """Llama-style decoders (Qwen2/2.5/3, Llama, Mistral, SmolLM2); None for shapes we cannot read."""
        try:
            heads = config.num_attention_heads
            model_type = getattr(config, "model_type", "")
            return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers, heads,
                       getattr(config, "num_key_value_heads", None) or heads, config.vocab_size,
                       bool(getattr(config, "tie_word_embeddings", False)),
                       head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                       # transformers' Qwen2 attention always builds q/k/v with bias=True
                       qkv_bias=model_type == "qwen2" or bool(getattr(config, "attention_bias", False)),
                       qk_norm=model_type == "qwen3")
        except AttributeError:
            return None

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.head_size * self.heads

    @property
    def kv_dim(self) -> int:
        return self.head_size * self.kv_heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each projection in one layer: q, k, v, o, gate, up, down."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def parameters(self) -> tuple[int, int]:
        """(linear weights in the layers, everything else: embeddings, head, norms, biases)."""
        linear = self.layers * sum(a * b for a, b in self.linear_shapes())
        per_layer = 2 * self.hidden + (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0) \
            + (2 * self.head_size if self.qk_norm else 0)
        other = self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.layers * per_layer + self.hidden
        return linear, other


@dataclass(frozen=True)
class Plan:
    """The settings that trade speed for memory; batch_size x gradient_accumulation_steps is the effective batch."""

    batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    use_4bit: bool

    @classmethod
    def of(cls, cfg) -> "Plan":
        t = cfg.training
        return cls(t.per_device_train_batch_size, t.gradient_accumulation_steps, t.gradient_checkpointing,
                   cfg.model.use_4bit)

    def describe(self) -> str:
        return (f"batch {self.batch_size} x accumulation {self.gradient_accumulation_steps}"
                + (", gradient checkpointing" if self.gradient_checkpointing else "")
                + (", 4-bit weights" if self.use_4bit else ""))


def apply_plan(cfg, plan: Plan):
    """A copy of cfg with plan's settings."""
    training = replace(cfg.training, per_device_train_batch_size=plan.batch_size,
                       gradient_accumulation_steps=plan.gradient_accumulation_steps,
                       gradient_checkpointing=plan.gradient_checkpointing)
    return replace(cfg, training=training, model=replace(cfg.model, use_4bit=plan.use_4bit))


def estimate_bytes(shape: ModelShape, batch: int, seq_len: int, lora_r: int, bytes_per_value: int,
                   gradient_checkpointing: bool, use_4bit: bool, pass_tokens: int | None = None) -> dict[str, float]:
    """Peak memory of one training step, by part, in bytes (pass_tokens: see speedups.pass_tokens)."""
    linear, other = shape.parameters()
    weights = (linear * 0.53 if use_4bit else linear * bytes_per_value) + other * bytes_per_value  # NF4 + scales
    adapter = shape.layers * sum(lora_r * (a + b) for a, b in shape.linear_shapes())
    adapter_and_optimizer = adapter * 16  # fp32 weights, gradients, and AdamW's two moments
    tokens = batch * seq_len if pass_tokens is None else min(batch * seq_len, pass_tokens)
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    # Saved for backward per token and layer: norms, q/k/v/o, MLP in/out and the LoRA dropout inputs
    # (q and the attention output are q_dim wide: hidden, except where head_dim says otherwise, as in Qwen3).
    per_layer = (12 * h + 2 * q + 2 * kv + 6 * i) * bytes_per_value
    if gradient_checkpointing:
        activations = tokens * (shape.layers * h * bytes_per_value + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    # The lean loss head, frozen under LoRA: one block of logits (compute dtype + fp32; an
    # accelerator's block, the larger), its running product with the weight, the hidden-state gradient.
    rows, vocab_block = head_blocks(shape.vocab, "cuda", trained=False)
    rows = min(tokens, rows)
    loss_head = rows * (min(shape.vocab, vocab_block) * (bytes_per_value + 4) + h * 4) + tokens * h * bytes_per_value
    return {"weights": weights, "adapter_and_optimizer": adapter_and_optimizer, "activations": activations,
            "loss_head": loss_head}


def usable_bytes(device_gb: float, device: str) -> float:
    if device == "cpu":
        return device_gb * GB * USABLE_FRACTION
    return (device_gb - CUDA_CONTEXT_GB) * GB * USABLE_FRACTION


def starting_batch(device_gb: float, device: str) -> int:
    """The seed's table for Qwen2-0.5B: 24 GB -> 8, 16 GB -> 4, 12 GB -> 2 (and 4 on a CPU)."""
    if device == "cpu":
        return 4
    return next(batch for floor, batch in ((23, 8), (15, 4), (11, 2), (0, 1)) if device_gb >= floor)


def choose_plan(shape: ModelShape, device_gb: float, device: str, seq_len: int, lora_r: int, bytes_per_value: int,
                effective_batch: int) -> Plan | None:
    """Start from the seed's batch for this much memory; add checkpointing, then 4-bit, then halve the batch."""
    budget = usable_bytes(device_gb, device)
    batch = min(starting_batch(device_gb, device), effective_batch)
    while batch >= 1:
        for checkpointing, four_bit in ((False, False), (True, False), (False, True), (True, True)):
            parts = estimate_bytes(shape, batch, seq_len, lora_r, bytes_per_value, checkpointing, four_bit)
            if sum(parts.values()) <= budget:
                return Plan(batch, max(1, effective_batch // batch), checkpointing, four_bit)
        batch //= 2
    return None


def device_memory_gb(device: str) -> float:
    """Total memory of the training device: GPU memory, or RAM for the CPU."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory / GB
    if device == "npu":
        return torch.npu.get_device_properties(0).total_memory / GB
    import psutil

    return psutil.virtual_memory().total / GB


def plan_for(cfg, shape: ModelShape, device: str, bytes_per_value: int, seq_len: int, log=print):
    """Apply training.hardware to a copy of cfg; UserError when nothing fits."""
    preset = cfg.training.hardware
    if preset is None:
        return cfg
    if shape is None:
        raise UserError(f"training.hardware: cannot read the layer sizes of {cfg.model.model_name_or_path}; "
                        f"set the batch size yourself and remove --hardware.")
    memory = device_memory_gb(device) if preset in ("auto", "cpu") else PRESETS_GB[preset]
    target_device = "cpu" if preset == "cpu" else ("cuda" if preset != "auto" else device)
    effective = cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps
    plan = choose_plan(shape, memory, target_device, seq_len, cfg.lora.lora_r, bytes_per_value, effective)
    if plan is None:
        raise UserError(f"training.hardware {preset}: {cfg.model.model_name_or_path} does not fit in {memory:.0f} GB "
                        f"even at batch 1 with 4-bit weights and checkpointing at {seq_len} tokens; "
                        f"lower max_length or use a smaller model.")
    log(f"hardware {preset} ({memory:.0f} GB): {plan.describe()}")
    return apply_plan(cfg, Plan(plan.batch_size, plan.gradient_accumulation_steps,
                                plan.gradient_checkpointing or cfg.training.gradient_checkpointing,
                                plan.use_4bit or cfg.model.use_4bit))


def estimate_for(cfg, shape: ModelShape, device: str, bytes_per_value: int, seq_len: int) -> dict[str, float]:
    """estimate_bytes for cfg's settings on `device`, by part, in bytes (on CPU with the Python process)."""
    parts = estimate_bytes(shape, cfg.training.per_device_train_batch_size, seq_len, cfg.lora.lora_r,
                           bytes_per_value, cfg.training.gradient_checkpointing, cfg.model.use_4bit,
                           pass_tokens(cfg.training, device, seq_len))
    if device == "cpu":
        parts["python_and_libraries"] = CPU_RUNTIME_GB * GB
    return parts


def check_fits(cfg, shape: ModelShape | None, device: str, bytes_per_value: int, seq_len: int, log=print) -> float | None:
    """Print the estimate; refuse when it clearly exceeds the device. Returns the estimate in bytes."""
    if shape is None:
        return None
    parts = estimate_for(cfg, shape, device, bytes_per_value, seq_len)
    total = sum(parts.values())
    memory = device_memory_gb(device)
    log(f"memory estimate: {total / GB:.2f} GB of {memory:.1f} GB on {device} ({describe(parts)})")
    if total > 1.25 * memory * GB:
        raise UserError(
            f"the estimated peak memory, {total / GB:.1f} GB ({describe(parts)}), clearly exceeds the "
            f"{memory:.1f} GB of this {device}; use --hardware auto, or lower per_device_train_batch_size, "
            f"or set gradient_checkpointing / use_4bit."
        )
    return total


def describe(parts: dict[str, float]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {value / GB:.2f}" for name, value in parts.items()) + " GB"


def estimate_before_training(cfg, log=print) -> float | None:
    """What `qwentune train` says about memory before it loads the model, for a front end to show before a start:
    the hardware preset's plan (plan_for's line) and the estimate (check_fits's line), both logged.

    Reads only the model's config.json (no weights, no data), so rows are taken as data.max_length tokens long,
    the worst case; train plans for the data's longest example, which may be shorter, and then prints a lower
    figure. Returns the estimate in bytes, or None when the model's layer sizes cannot be read (said in the log).
    Raises UserError as train would: a model that cannot be found, a preset nothing fits, or an estimate that
    clearly exceeds this device's memory."""
    from transformers import AutoConfig

    from ..models.precision import choose_precision
    from ..models.source import resolve_model_source

    source = resolve_model_source(cfg.model.model_name_or_path)
    precision = choose_precision(cfg.training.bf16, cfg.training.fp16)
    shape = ModelShape.from_config(AutoConfig.from_pretrained(source, trust_remote_code=cfg.model.trust_remote_code))
    seq_len = cfg.data.max_length
    cfg = plan_for(cfg, shape, precision.device, precision.bytes_per_value, seq_len, log)
    estimate = check_fits(cfg, shape, precision.device, precision.bytes_per_value, seq_len, log)
    if estimate is None:
        log(f"memory estimate: none (the layer sizes of {cfg.model.model_name_or_path} cannot be read)")
    return estimate
