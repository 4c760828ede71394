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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .data.convert import FORMATS
from .errors import UserError, did_you_mean
from .evaluation.metrics import metric_choices
from .training.presets import HARDWARE_CHOICES

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


@dataclass
class DataConfig:
    # A registered name (`qwentune datasets` lists them) or a local json/jsonl/csv/parquet file.
    dataset_name: str = "chinese_alpaca"
    # auto detects alpaca / sharegpt / openai / oasst1 / oasst_tree from the records.
    dataset_format: Literal["auto", FORMATS] = "auto"
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
    # Speed-ups (training/speedups/); the run summary lists what ran.
    # Packing: the examples of a micro-batch share one row, positions restart per example and nothing is
    # computed for padding; false pads each batch to its longest example (batches grouped by length).
    # Same examples per step, same loss either way.
    packing: Switch = "auto"
    # auto: qwentune_packed (sdpa per packed example) where every layer has full attention, else sdpa.
    attn_implementation: Literal["auto", "qwentune_packed", "sdpa", "eager", "flash_attention_2"] = "auto"
    # The loss at labelled positions only, a block at a time: the full logits tensor never exists.
    lean_head: Switch = "auto"
    # CPU only: fused LoRA groups, cheap LoRA dropout, RMSNorm with its own backward, kept malloc memory,
    # packed rows in passes of at most 512 tokens.
    cpu_kernels: Switch = "auto"
    logging_steps: int = 10
    save_steps: int = 300
    save_total_limit: int | None = 3
    eval_steps: int = 300
    # auto: continue from the newest complete checkpoint in output_dir; a path; or null.
    resume_from_checkpoint: str | None = "auto"
    # A card preset (rtx3060, rtx4060ti, rtxa5000, rtx4080, rtx4090, cpu) or auto (this device's memory):
    # sets batch size, accumulation, checkpointing and 4-bit to fit, keeping the effective batch size.
    hardware: Literal[HARDWARE_CHOICES] | None = None
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


def _section_fields(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


# key name -> section name; the uniqueness of key names is what makes `--learning_rate` work.
KEY_TO_SECTION: dict[str, str] = {}
for _section, _cls in SECTIONS.items():
    for _key in _section_fields(_cls):
        assert _key not in KEY_TO_SECTION, f"config key {_key} is defined twice"
        KEY_TO_SECTION[_key] = _section


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]


def coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise ValueError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        alternatives = typing.get_args(tp)
        if value is None and type(None) in alternatives:
            return None
        for alternative in alternatives:
            if alternative is not type(None):
                try:
                    return coerce(value, alternative)
                except ValueError:
                    continue
        raise ValueError
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


class Problems:
    """The problems found in one config, reported together: one sentence for one, a numbered line for several."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_if_any(self) -> None:
        if len(self.messages) == 1:
            raise UserError(self.messages[0])
        if self.messages:
            numbered = " ".join(f"({i}) {m}" for i, m in enumerate(self.messages, start=1))
            raise UserError(f"{len(self.messages)} problems: {numbered}")


def _set_key(cfg: Config, section: str, key: str, value: Any, where: str, problems: Problems) -> None:
    tp = _section_fields(SECTIONS[section])[key]
    try:
        setattr(getattr(cfg, section), key, coerce(value, tp))
    except ValueError:
        problems.add(f"{where}: {section}.{key} must be {_type_name(tp)}, got {value!r}; fix the value.")


def _apply_mapping(cfg: Config, mapping: Any, where: str, problems: Problems) -> None:
    """A config file's mapping: sections (`training: {learning_rate: ...}`) and, as LLaMA-Factory users
    write them, flat keys at the top level (`learning_rate: ...`): every key name is unique."""
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        problems.add(f"{where}: expected keys such as 'learning_rate:' or sections such as 'training:', "
                     f"got {type(mapping).__name__}.")
        return
    seen: dict[str, str] = {}  # key -> how it was given, to catch one key set twice
    for name, values in mapping.items():
        name = str(name)
        if name in KEY_TO_SECTION:
            pairs = [(KEY_TO_SECTION[name], name, values, "at the top level")]
        elif name in SECTIONS:
            if values is None:
                continue
            if not isinstance(values, dict):
                problems.add(f"{where}: section '{name}' must be a mapping of keys to values.")
                continue
            pairs = []
            known = _section_fields(SECTIONS[name])
            for key, value in values.items():
                key = str(key)
                if key in known:
                    pairs.append((name, key, value, f"under '{name}:'"))
                elif key in KEY_TO_SECTION:
                    problems.add(f"{where}: '{key}' belongs under '{KEY_TO_SECTION[key]}:', not '{name}:'; move it "
                                 f"there (or to the top level).")
                else:
                    problems.add(f"{where}: unknown key '{name}.{key}'" + (did_you_mean(key, known) or "."))
        else:
            hint = did_you_mean(name, [*SECTIONS, *KEY_TO_SECTION])
            problems.add(f"{where}: unknown key '{name}'" + (hint or "; the keys are listed in README.md, Configs."))
            continue
        for section, key, value, how in pairs:
            if key in seen:
                problems.add(f"{where}: '{key}' is set twice ({seen[key]} and {how}); keep one.")
                continue
            seen[key] = how
            _set_key(cfg, section, key, value, where, problems)


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


def apply_overrides(cfg: Config, pairs: list[tuple[str, str]], problems: Problems, where: str = "command line") -> None:
    """Command-line `--key value` pairs (from parse_override_args), by plain or dotted key name."""
    for name, text in pairs:
        if "." in name:
            section, key = name.split(".", 1)
            if section not in SECTIONS or key not in _section_fields(SECTIONS[section]):
                problems.add(f"{where}: unknown option --{name}" + (did_you_mean(name, _all_dotted(), "--") or "."))
                continue
        elif name in KEY_TO_SECTION:
            section, key = KEY_TO_SECTION[name], name
        else:
            problems.add(f"{where}: unknown option --{name}" + (did_you_mean(name, KEY_TO_SECTION, "--") or "."))
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if _section_fields(SECTIONS[section])[key] in (str, str | None) and value is not None:
            value = text  # keep strings verbatim: `--output_dir 001` is a path, not the number 1
        _set_key(cfg, section, key, value, f"{where} (--{name})", problems)


def _all_dotted() -> list[str]:
    return [f"{section}.{key}" for key, section in KEY_TO_SECTION.items()]


def validate(cfg: Config, where: str, problems: Problems | None = None) -> None:
    """Settings that cannot work together, each with the fix in its message: added to `problems`, or
    raised as one UserError when no `problems` is given. Every entry point (config file, command line,
    interactive command) comes through here."""
    d, lora, t, g = cfg.data, cfg.lora, cfg.training, cfg.generation
    own = problems is None
    problems = problems or Problems()

    def fail(message: str) -> None:
        problems.add(f"{where}: {message}")

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
    if g.repetition_penalty <= 0:
        fail("generation.repetition_penalty must be positive (1.0 means none).")
    choices = metric_choices()
    unknown = [name for name in cfg.eval.metrics if name not in choices]
    if not cfg.eval.metrics:
        fail(f"eval.metrics is empty; list at least one of {', '.join(choices)}.")
    elif unknown:
        fail(f"eval.metrics: unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
             f"choose from {', '.join(choices)}.")
    if own:
        problems.raise_if_any()


def load_config(path: str | Path | None = None, overrides: list[tuple[str, str]] | None = None) -> Config:
    """Defaults, then the YAML file, then the overrides; validated as a whole. Every problem found, in
    the file and on the command line, is reported in one UserError."""
    from .fsutil import read_text

    cfg = Config()
    problems = Problems()
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found; check the path (shipped configs are in config/).")
        try:
            mapping = yaml.safe_load(read_text(path))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise UserError(f"{path}:{line} is not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax.") from None
        _apply_mapping(cfg, mapping, where, problems)
    if overrides:
        apply_overrides(cfg, overrides, problems)
        where = f"{where} with command-line overrides"
    validate(cfg, where, problems)
    problems.raise_if_any()
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config, so a run can be repeated from its output alone."""
    from .fsutil import atomic_output_file

    with atomic_output_file(path, encoding="utf-8") as handle:
        yaml.safe_dump(cfg.to_dict(), handle, allow_unicode=True, sort_keys=False)
