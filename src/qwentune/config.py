"""Typed, validated configuration: YAML files plus command-line overrides.

A config file has up to six sections (model, data, lora, training, eval, generation);
anything left out keeps the defaults below, which are the seed recipe (Qwen2-0.5B on
Chinese Alpaca, LoRA r 8 / alpha 16 on every projection). Every key has one type, and
every mistake - an unknown key, a wrong type, an impossible combination - is reported
as one sentence that names the file and the key.

Overrides name a key either plainly (`--learning_rate 2e-4`, every key name is unique
across sections) or with its section (`--training.learning_rate 2e-4`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError


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


@dataclass
class DataConfig:
    # A registered name (`qwentune datasets` lists them) or a local json/jsonl/csv/parquet file.
    dataset_name: str = "chinese_alpaca"
    # auto detects alpaca / sharegpt / openai / oasst1 / oasst_tree from the records.
    dataset_format: Literal["auto", "alpaca", "sharegpt", "openai", "oasst1", "oasst_tree"] = "auto"
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
    # true: several examples share a row of up to max_length tokens, positions restart per example and
    # nothing is computed for padding; false: each example its own row, padded to the longest one of a
    # batch, batches grouped by length. Same examples per step, same loss either way.
    packing: bool = True
    logging_steps: int = 10
    save_steps: int = 300
    save_total_limit: int | None = 3
    eval_steps: int = 300
    # auto: continue from the newest complete checkpoint in output_dir; a path; or null.
    resume_from_checkpoint: str | None = "auto"
    # A card preset (rtx3060, rtx4060ti, rtxa5000, rtx4080, rtx4090, cpu) or auto (this device's memory):
    # sets batch size, accumulation, checkpointing and 4-bit to fit, keeping the effective batch size.
    hardware: Literal["auto", "cpu", "rtx3060", "rtx4060ti", "rtxa5000", "rtx4080", "rtx4090"] | None = None
    # One seed for the train/validation split, training and sampled generation.
    seed: int = 42


@dataclass
class EvalConfig:
    # An adapter directory, a training output directory, or a merged model; null: the base model.
    adapter_path: str | None = "results/checkpoints"
    # null: the validation split written by preprocessing (data.processed_dir).
    eval_dataset: str | None = None
    metrics: list[str] = field(default_factory=lambda: ["perplexity", "bleu", "rouge"])
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


def _section_fields(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


# key name -> section name; the uniqueness of key names is what makes `--learning_rate` work.
KEY_TO_SECTION: dict[str, str] = {}
for _section, _cls in SECTIONS.items():
    for _key in _section_fields(_cls):
        assert _key not in KEY_TO_SECTION, f"config key {_key} is defined twice"
        KEY_TO_SECTION[_key] = _section


def _did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def did_you_mean(option: str, options: typing.Iterable[str]) -> str:
    """For command-line options: "; did you mean --learning_rate?" or ""."""
    close = difflib.get_close_matches(option, list(options), n=1, cutoff=0.6)
    return f"; did you mean --{close[0]}?" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_name(inner[0]) + " or null"
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]


def coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise ValueError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return coerce(value, inner)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError
    if origin is list:
        if isinstance(value, str):  # `--languages zh,en` on the command line
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list):
            raise ValueError
        (item_tp,) = typing.get_args(tp)
        return [coerce(v, item_tp) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError
        return {str(k): coerce(v, str) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `2e-4` as a string
            return float(value)
        raise ValueError
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError
    raise TypeError(f"unsupported config type {tp}")


def _set_key(cfg: Config, section: str, key: str, value: Any, where: str) -> None:
    tp = _section_fields(SECTIONS[section])[key]
    try:
        coerced = coerce(value, tp)
    except ValueError:
        raise UserError(
            f"{where}: {section}.{key} must be {_type_name(tp)}, got {value!r}; fix the value."
        ) from None
    setattr(getattr(cfg, section), key, coerced)


def _apply_mapping(cfg: Config, mapping: Any, where: str) -> None:
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        raise UserError(f"{where}: expected sections such as 'model:' and 'training:', got {type(mapping).__name__}.")
    for section, values in mapping.items():
        if section not in SECTIONS:
            if section in KEY_TO_SECTION:
                raise UserError(
                    f"{where}: '{section}' belongs under '{KEY_TO_SECTION[section]}:'; move it into that section."
                )
            raise UserError(
                f"{where}: unknown section '{section}'{_did_you_mean(str(section), SECTIONS)}"
                f" (sections: {', '.join(SECTIONS)})."
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{where}: section '{section}' must be a mapping of keys to values.")
        known = _section_fields(SECTIONS[section])
        for key, value in values.items():
            if key not in known:
                hint = _did_you_mean(str(key), known)
                if not hint and key in KEY_TO_SECTION:
                    hint = f"; it belongs under '{KEY_TO_SECTION[key]}:'"
                raise UserError(f"{where}: unknown key '{section}.{key}'{hint}.")
            _set_key(cfg, section, key, value, where)


def parse_override_args(args: list[str]) -> list[tuple[str, str]]:
    """Turn `--key value`, `--key=value` and a bare `--flag` (true) into (key, text) pairs."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"command line: expected an option like --learning_rate 2e-4, got '{arg}'.")
        name = arg[2:]
        if "=" in name:
            name, text = name.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            text = args[i + 1]
            i += 2
        else:
            text = "true"
            i += 1
        pairs.append((name.replace("-", "_"), text))
    return pairs


def apply_overrides(cfg: Config, pairs: list[tuple[str, str]], where: str = "command line") -> None:
    for name, text in pairs:
        if "." in name:
            section, key = name.split(".", 1)
            if section not in SECTIONS or key not in _section_fields(SECTIONS[section]):
                raise UserError(f"{where}: unknown option --{name}{_did_you_mean(name, _all_dotted())}.")
        elif name in KEY_TO_SECTION:
            section, key = KEY_TO_SECTION[name], name
        else:
            raise UserError(f"{where}: unknown option --{name}{_did_you_mean(name, KEY_TO_SECTION)}.")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if _section_fields(SECTIONS[section])[key] in (str, str | None) and value is not None:
            value = text  # keep strings verbatim: `--output_dir 001` is a path, not the number 1
        _set_key(cfg, section, key, value, f"{where} (--{name})")


def _all_dotted() -> list[str]:
    return [f"{section}.{key}" for key, section in KEY_TO_SECTION.items()]


def validate(cfg: Config, where: str) -> None:
    """Reject settings that cannot work together, with the fix in the message."""
    d, lora, t, g = cfg.data, cfg.lora, cfg.training, cfg.generation

    def fail(message: str) -> typing.NoReturn:
        raise UserError(f"{where}: {message}")

    if d.max_length < 16:
        fail(f"data.max_length is {d.max_length}; it must be at least 16 tokens to hold a prompt and a reply.")
    if d.val_size < 0 or (d.val_size >= 1 and not float(d.val_size).is_integer()):
        fail(f"data.val_size is {d.val_size}; use a fraction below 1 (0.05) or a whole number of examples (200).")
    if d.max_samples is not None and d.max_samples < 1:
        fail("data.max_samples must be at least 1, or null for all examples.")
    if d.num_proc < 1:
        fail("data.num_proc must be at least 1.")
    if lora.lora_r < 1:
        fail("lora.lora_r must be at least 1.")
    if lora.lora_alpha <= 0:
        fail("lora.lora_alpha must be positive.")
    if not 0 <= lora.lora_dropout < 1:
        fail("lora.lora_dropout must be in [0, 1).")
    if not lora.lora_target_modules:
        fail("lora.lora_target_modules is empty; use [all-linear] or name the modules.")
    if t.bf16 and t.fp16:
        fail("training.bf16 and training.fp16 are both true; choose one (bf16 where the GPU supports it).")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                "logging_steps", "save_steps", "eval_steps"):
        if getattr(t, key) < 1:
            fail(f"training.{key} must be at least 1.")
    if t.learning_rate <= 0:
        fail("training.learning_rate must be positive.")
    if t.num_train_epochs <= 0:
        fail("training.num_train_epochs must be positive.")
    if not 0 <= t.warmup_ratio < 1:
        fail("training.warmup_ratio must be in [0, 1).")
    if t.max_steps is not None and t.max_steps < 1:
        fail("training.max_steps must be at least 1, or null to train num_train_epochs.")
    if t.save_total_limit is not None and t.save_total_limit < 1:
        fail("training.save_total_limit must be at least 1, or null to keep every checkpoint.")
    if g.max_new_tokens < 1:
        fail("generation.max_new_tokens must be at least 1.")
    if g.do_sample and g.temperature <= 0:
        fail("generation.temperature must be positive when do_sample is true; set do_sample: false for greedy.")
    if not 0 < g.top_p <= 1:
        fail("generation.top_p must be in (0, 1].")
    if not cfg.eval.metrics:
        fail("eval.metrics is empty; list at least one of perplexity, bleu, rouge.")


def load_config(path: str | Path | None = None, overrides: list[tuple[str, str]] | None = None) -> Config:
    """Defaults, then the YAML file, then the overrides; validated as a whole."""
    cfg = Config()
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found; check the path (shipped configs are in config/).")
        try:
            mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise UserError(f"{path}:{line} is not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax.") from None
        _apply_mapping(cfg, mapping, where)
    if overrides:
        apply_overrides(cfg, overrides)
        where = f"{where} with command-line overrides"
    validate(cfg, where)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config, so a run can be repeated from its output alone."""
    from .fsutil import atomic_output_file

    with atomic_output_file(path, encoding="utf-8") as handle:
        yaml.safe_dump(cfg.to_dict(), handle, allow_unicode=True, sort_keys=False)
