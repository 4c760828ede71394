"""Wrap a loaded base model with a fresh LoRA adapter (PEFT), on 4-bit weights for QLoRA.

The base weights are frozen; only the adapter trains. The output head is never a LoRA target: it is
tied to the embeddings in small Qwen models, and adapting it would change the vocabulary's geometry
that every other layer was trained against.
"""

from __future__ import annotations

import torch

from ..config import Config
from ..errors import UserError
from . import import_peft, peft_checkpointing_probe_quiet
from .lora_precision import add_lora_inside_base_multiply

ALL_LINEAR = "all-linear"


def linear_module_names(model) -> list[str]:
    """Names (last component) of the Linear layers LoRA can target, the output head excluded."""
    names = set()
    output_head = model.get_output_embeddings()
    for full_name, module in model.named_modules():
        if module is output_head:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def lora_targets(model, wanted: list[str]) -> list[str]:
    """The target module names for `wanted` (lora.lora_target_modules); UserError naming the allowed ones."""
    available = linear_module_names(model)
    if wanted == [ALL_LINEAR]:
        return available  # every attention and MLP projection, found from this model
    head = model.get_output_embeddings()
    head_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if module is head}
    for name in wanted:
        if name in head_names:
            raise UserError(
                f"lora.lora_target_modules: {name} is the output head, which qwentune leaves out of LoRA on "
                f"purpose (it shares its weights with the embeddings in small Qwen models); choose from "
                f"{', '.join(available)}, or {ALL_LINEAR}."
            )
    missing = [name for name in wanted if name not in available]
    if missing:
        raise UserError(
            f"lora.lora_target_modules: {', '.join(missing)} not in this model; its linear layers are "
            f"{', '.join(available)} (or use {ALL_LINEAR})."
        )
    return wanted


def apply_lora(model, cfg: Config):
    """Wrap with a fresh LoRA adapter; the base weights are frozen (and prepared for k-bit when 4-bit)."""
    peft = import_peft()

    lora = cfg.lora
    targets = lora_targets(model, lora.lora_target_modules)
    if cfg.model.use_4bit:
        # Checkpointing itself is switched on by the Trainer (activation_checkpointing, non-reentrant); peft's
        # own switch would only call transformers' deprecated gradient_checkpointing_enable.
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_config = peft.LoraConfig(
        r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, target_modules=targets,
        use_rslora=lora.use_rslora, use_dora=lora.use_dora, bias="none", task_type="CAUSAL_LM",
    )
    with peft_checkpointing_probe_quiet():
        model = peft.get_peft_model(model, peft_config)
    add_lora_inside_base_multiply(model)  # on 16-bit base weights: see lora_precision.py
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel() * (2 if type(param).__name__ == "Params4bit" else 1)
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total
