"""The configuration's sections and keys, with their types and the seed recipe's defaults.

Every key name is unique across sections (KEY_TO_SECTION), which is what lets a key be given plainly
(`--learning_rate`, or flat at a config file's top level) as well as with its section. Allowed values
of some keys come from the registries that own them: dataset formats (data/convert.py), hardware
presets (training/presets.py), trackers (training/trackers.py) and metrics (evaluation/metrics.py).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ..data.convert import FORMATS
from ..evaluation.metrics import metric_choices
from ..training.presets import HARDWARE_CHOICES
from ..training.trackers import TRACKER_CHOICES

# A speed-up switch: auto takes it where the device and model allow it; false turns it off; true insists.
Switch = Literal["auto"] | bool


@dataclass
class ModelConfig:
    # Hub id (e.g. Qwen/Qwen2-0.5B) or a local directory.
    model_name_or_path: str = "Qwen/Qwen2-0.5B"
    # Where the tokenizer comes from; empty means the same place as the model.
    tokenizer_name: str | None = None
    # Runs Python code shipped with a hub model; off unless you trust its author.
    trust_remote_code: bool = False
    # QLoRA: load the frozen base weights in 4-bit NF4 (needs the `qlora` extra).
    use_4bit: bool = False
    # Where hub ids of models, tokenizers and named datasets come from: huggingface (or the mirror HF_ENDPOINT
    # names, e.g. https://hf-mirror.com) or modelscope (needs the `modelscope` extra). Local paths are local.
    hub: Literal["huggingface", "modelscope"] = "huggingface"


@dataclass
class DataConfig:
    # A registered name (`qwentune datasets` lists them) or a local json/jsonl/csv/parquet file.
    dataset_name: str = "chinese_alpaca"
    # auto detects alpaca / sharegpt / openai / oasst1 / oasst_tree from the records.
    dataset_format: Literal[("auto", *FORMATS)] = "auto"  # Literal["auto", FORMATS] would nest the tuple
    # Your column names for the standard ones, e.g. {instruction: question, output: answer}.
    columns: dict[str, str] = field(default_factory=dict)
    # A YAML file with extra named datasets, in the same form as the built-in registry.
    dataset_registry: str | None = None
    # oasst1 only: keep conversations whose first message is in one of these languages.
    languages: list[str] = field(default_factory=list)
    # A system prompt added to every conversation that has none; null keeps the template's default.
    system_prompt: str | None = None
    # Tokens per example, prompt and response together.
    max_length: int = 1024
    # Use only the first N examples of the source (quick experiments).
    max_samples: int | None = None
    # Validation split: a fraction (0.05) or a number of examples (200); 0 for none.
    val_size: float = 0.05
    # Processes for tokenization.
    num_proc: int = 1
    cache_dir: str = "data/cache"
    processed_dir: str = "data/processed"


@dataclass
class LoraConfig:
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    # all-linear: every attention and MLP projection, found from the model itself.
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    use_rslora: bool = False
    use_dora: bool = False


@dataclass
class TrainingConfig:
    # Final adapter here, checkpoint-N subdirectories inside it.
    output_dir: str = "results/checkpoints"
    logging_dir: str = "results/logs"
    # TensorBoard event files always go to logging_dir; swanlab, wandb or mlflow also sends the run there
    # (transformers' integration; its package must be installed: checked before anything starts).
    report_to: Literal[TRACKER_CHOICES] = "tensorboard"
    num_train_epochs: float = 3.0
    # Stop after this many optimizer steps (overrides num_train_epochs); null trains whole epochs.
    max_steps: int | None = None
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2e-4
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: Literal["adamw_torch_fused", "adamw_torch", "paged_adamw_8bit", "adamw_8bit"] = "adamw_torch_fused"
    bf16: bool = True
    fp16: bool = False
    gradient_checkpointing: bool = False
    # Speed-ups (training/speedups/); the run summary lists what ran.
    # Packing: the examples of a micro-batch share one row, positions restart per example and nothing is
    # computed for padding; false pads each batch to its longest example (batches grouped by length).
    # Same examples per step, same loss either way.
    packing: Switch = "auto"
    # auto: flash_attention_2 for packed rows on CUDA with flash-attn and bf16/fp16 weights; else qwentune_packed
    # (sdpa per packed example) where every layer has full attention; else sdpa.
    attn_implementation: Literal["auto", "qwentune_packed", "sdpa", "eager", "flash_attention_2"] = "auto"
    # The loss at labelled positions only, a block at a time: the full logits tensor never exists.
    lean_head: Switch = "auto"
    # CPU only: fused LoRA groups, cheap LoRA dropout, RMSNorm with its own backward, kept malloc memory,
    # packed rows in passes of at most 512 tokens.
    cpu_kernels: Switch = "auto"
    # CUDA only, with liger-kernel installed (the gpu extra): Liger's RMSNorm, SwiGLU and RoPE, and its fused
    # linear cross-entropy under the lean head.
    cuda_kernels: Switch = "auto"
    logging_steps: int = 10
    save_steps: int = 300
    save_total_limit: int | None = 3
    eval_steps: int = 300
    # auto: continue from the newest complete checkpoint in output_dir; a path; or null.
    resume_from_checkpoint: str | None = "auto"
    # A card preset (rtx3060, rtx4060ti, rtxa5000, rtx4080, rtx4090, cpu) or auto (this device's memory):
    # sets batch size, accumulation, checkpointing and 4-bit to fit, keeping the effective batch size.
    hardware: Literal[HARDWARE_CHOICES] | None = None
    # auto: on CUDA with one process, one training step at the data's longest batch before the first, and
    # smaller settings (checkpointing, batch, 4-bit) when it does not fit (training/memory_probe.py).
    memory_probe: Switch = "auto"
    # One seed for the train/validation split, training and sampled generation.
    seed: int = 42


@dataclass
class EvalConfig:
    # An adapter directory, a training output directory, or a merged model; null: the base model.
    adapter_path: str | None = "results/checkpoints"
    # null: the validation split written by preprocessing (data.processed_dir).
    eval_dataset: str | None = None
    # Which metrics to compute (perplexity, bleu, rouge); the choices, and this default of all of them,
    # come from the metrics registry in evaluation/metrics.py.
    metrics: list[str] = field(default_factory=metric_choices)
    max_eval_samples: int | None = 200
    eval_batch_size: int = 8
    eval_output_dir: str = "results/evaluation"


@dataclass
class GenerationConfig:
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def section_fields(section_cls: type) -> dict[str, Any]:
    """A section dataclass's keys and their types."""
    return typing.get_type_hints(section_cls)


# key name -> section name; the uniqueness of key names is what makes `--learning_rate` work.
KEY_TO_SECTION: dict[str, str] = {}
for _section, _cls in SECTIONS.items():
    for _key in section_fields(_cls):
        assert _key not in KEY_TO_SECTION, f"config key {_key} is defined twice"
        KEY_TO_SECTION[_key] = _section




def key_comments() -> dict[str, str]:
    """Each key's comment in this file (the `#` lines right above it, joined into one text), by key: the help a
    form or a listing shows beside a key. Keys without a comment are left out; {} when the source cannot be read
    (a frozen application without .py files)."""
    import inspect
    import re

    try:
        source = inspect.getsource(sys.modules[__name__])
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    block: list[str] = []
    for line in source.splitlines():
        text = line.strip()
        if line.startswith("    ") and text.startswith("#"):
            block.append(text.lstrip("#").strip())
            continue
        key = re.match(r"    (\w+): ", line)
        if key and key.group(1) in KEY_TO_SECTION and block:
            comments[key.group(1)] = " ".join(block)
        block = []
    return comments
