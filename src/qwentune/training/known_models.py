"""The published layer sizes of the Qwen2.5 and Qwen3 models qwentune plans for (README's model table).

Training and its memory estimate read the shape from the model's own config.json (ModelShape.from_config);
these copies give README's table of what fits on which card (preset_table_rows) without downloading anything,
and let the tests check the estimate against the real parameter counts.

Sources (each model's config.json on the Hugging Face hub, Qwen/<name>; Instruct and base share the
layer sizes):
- Qwen2.5-3B/7B/14B, Qwen3-4B/8B/14B: the config.json files reproduced verbatim in
  github.com/citsjtu2020/LLM-Prof, sglang/Model_Config.md.
- Qwen2.5-0.5B/1.5B: torchtune's builders "from https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct" and
  ".../Qwen2.5-1.5B-Instruct" (github.com/pytorch/torchtune, torchtune/models/qwen2_5/_model_builders.py);
  the same sizes appear there for 3B/7B/14B, matching the config.json files above.
- Qwen3-0.6B/1.7B: their config.json (head_dim 128, tie_word_embeddings true) as quoted with the model
  cards in "Qwen3 架构深度拆解" and in torchtune/models/qwen3/_model_builders.py (layer sizes).
Qwen2 models (Qwen2.5 included) have q/k/v biases and head_dim = hidden // heads; Qwen3 has no biases,
q/k RMSNorm and head_dim 128 whatever the hidden size.
"""

from __future__ import annotations

from .memory import ModelShape


def _qwen25(hidden, intermediate, layers, heads, kv_heads, vocab, tied) -> ModelShape:
    return ModelShape(hidden, intermediate, layers, heads, kv_heads, vocab, tied, head_dim=hidden // heads, qkv_bias=True)


def _qwen3(hidden, intermediate, layers, heads, kv_heads, tied) -> ModelShape:
    return ModelShape(hidden, intermediate, layers, heads, kv_heads, 151936, tied, head_dim=128, qk_norm=True)


# name -> shape; hub ids are Qwen/<name> (and Qwen/<name>-Instruct for Qwen2.5, Qwen/<name>-Base for Qwen3 bases)
KNOWN_SHAPES: dict[str, ModelShape] = {
    "Qwen2.5-0.5B": _qwen25(896, 4864, 24, 14, 2, 151936, True),
    "Qwen2.5-1.5B": _qwen25(1536, 8960, 28, 12, 2, 151936, True),
    "Qwen2.5-3B": _qwen25(2048, 11008, 36, 16, 2, 151936, True),
    "Qwen2.5-7B": _qwen25(3584, 18944, 28, 28, 4, 152064, False),
    "Qwen2.5-14B": _qwen25(5120, 13824, 48, 40, 8, 152064, False),
    "Qwen3-0.6B": _qwen3(1024, 3072, 28, 16, 8, True),
    "Qwen3-1.7B": _qwen3(2048, 6144, 28, 16, 8, True),
    "Qwen3-4B": _qwen3(2560, 9728, 36, 32, 8, True),
    "Qwen3-8B": _qwen3(4096, 12288, 36, 32, 8, False),
    "Qwen3-14B": _qwen3(5120, 17408, 40, 40, 8, False),
}


def known_shape(model_name: str) -> ModelShape | None:
    """The published shape for a hub id or name such as Qwen/Qwen2.5-7B-Instruct or Qwen3-8B-Base; None if unknown."""
    name = model_name.rstrip("/").rsplit("/", 1)[-1]
    for suffix in ("-Instruct", "-Base"):
        name = name.removesuffix(suffix)
    return KNOWN_SHAPES.get(name)


def preset_table_rows(seq_len: int = 1024, lora_r: int = 8, effective_batch: int = 16) -> list[str]:
    """README's model table, one markdown row per known model: the plan each preset's memory gets
    (batch x accumulation, GC = gradient checkpointing, 4-bit weights) in bf16 at seq_len tokens."""
    from .memory import choose_plan
    from .presets import PRESETS_GB

    sizes = sorted(set(PRESETS_GB.values()))
    rows = []
    for name, shape in KNOWN_SHAPES.items():
        cells = []
        for gigabytes in sizes:
            plan = choose_plan(shape, gigabytes, "cuda", seq_len, lora_r, 2, effective_batch)
            cells.append("does not fit" if plan is None else ", ".join(
                [f"{plan.batch_size} × {plan.gradient_accumulation_steps}"]
                + ["GC"] * plan.gradient_checkpointing + ["4-bit"] * plan.use_4bit))
        linear, other = shape.parameters()
        rows.append(f"| {name} | {(linear + other) / 1e9:.2f}B | " + " | ".join(cells) + " |")
    return rows
