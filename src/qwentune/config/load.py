"""Config files and command-line overrides, coerced and checked, every problem reported together.

A config file groups keys in sections or lists them flat at the top level (every key name is unique);
overrides name a key plainly (`--learning_rate 2e-4`) or with its section (`--training.learning_rate 2e-4`).
Every mistake - an unknown key, a wrong type, an impossible combination - is one sentence naming the file
and the key; a file with several mistakes gets them all in one message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError, did_you_mean
from ..evaluation.metrics import metric_choices
from .schema import KEY_TO_SECTION, SECTIONS, Config, GenerationConfig, section_fields
from .values import coerce, type_name


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
    tp = section_fields(SECTIONS[section])[key]
    try:
        setattr(getattr(cfg, section), key, coerce(value, tp))
    except ValueError:
        problems.add(f"{where}: {section}.{key} must be {type_name(tp)}, got {value!r}; fix the value.")


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
            known = section_fields(SECTIONS[name])
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


def parse_override_args(args: list[str]) -> list[tuple[str, str | None]]:
    """Turn `--key value`, `--key=value` and a bare `--flag` into (key, text) pairs; a bare flag's text is
    None (apply_overrides reads it as true for a true/false setting, and as a missing value otherwise)."""
    pairs: list[tuple[str, str | None]] = []
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
            text = None
            i += 1
        pairs.append((name.replace("-", "_"), text))
    return pairs


def _accepts(value: Any, tp: Any) -> bool:
    try:
        coerce(value, tp)
        return True
    except ValueError:
        return False


def apply_overrides(cfg: Config, pairs: list[tuple[str, str | None]], problems: Problems,
                    where: str = "command line") -> None:
    """Command-line `--key value` pairs (from parse_override_args), by plain or dotted key name."""
    for name, text in pairs:
        if "." in name:
            section, key = name.split(".", 1)
            if section not in SECTIONS or key not in section_fields(SECTIONS[section]):
                problems.add(f"{where}: unknown option --{name}" + (did_you_mean(name, _all_dotted(), "--") or "."))
                continue
        elif name in KEY_TO_SECTION:
            section, key = KEY_TO_SECTION[name], name
        else:
            problems.add(f"{where}: unknown option --{name}" + (did_you_mean(name, KEY_TO_SECTION, "--") or "."))
            continue
        tp = section_fields(SECTIONS[section])[key]
        if text is None:  # a bare `--key`: a switch turned on, or a value forgotten (last on the line, say)
            if not _accepts(True, tp):
                problems.add(f"{where}: --{name} needs a value (--{name} VALUE).")
                continue
            text = "true"
        if not text.strip() and not _accepts(None, tp):  # `--dataset_name ""`: YAML reads it as null
            problems.add(f"{where}: --{name} is empty; give a value, or leave the option out.")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if section_fields(SECTIONS[section])[key] in (str, str | None) and value is not None:
            value = text  # keep strings verbatim: `--output_dir 001` is a path, not the number 1
        _set_key(cfg, section, key, value, f"{where} (--{name})", problems)


def _all_dotted() -> list[str]:
    return [f"{section}.{key}" for key, section in KEY_TO_SECTION.items()]


def generation_problems(g: GenerationConfig) -> list[str]:
    """What cannot work in these generation settings, one sentence each (without a place: the caller adds it).

    The one set of checks for generation settings, whichever way they arrive: a config file and the command
    line (through validate), interactive /params (change_generation), and any later front end."""
    problems = []
    if g.max_new_tokens < 1:
        problems.append("generation.max_new_tokens must be at least 1.")
    if g.do_sample and not g.temperature > 0:
        problems.append("generation.temperature must be positive when do_sample is true; "
                        "set do_sample false for greedy decoding.")
    if not 0 < g.top_p <= 1:
        problems.append("generation.top_p must be in (0, 1].")
    if not g.repetition_penalty > 0:
        problems.append("generation.repetition_penalty must be positive (1.0 means none).")
    return problems


def change_generation(settings: GenerationConfig, changes: Mapping[str, Any], where: str) -> GenerationConfig:
    """A copy of `settings` with `changes` applied: {key: value} with typed values (0.9, true: JSON, YAML) or
    text as a command line or a form gives it ("0.9", "true": read as YAML, like command-line options), each
    typed like the config file's generation section, then checked by generation_problems.

    Raises UserError naming `where` and every problem at once (an unknown key, a wrong type, an impossible
    value); `settings` itself is never changed, so a caller that catches the error keeps the old settings."""
    fields = section_fields(GenerationConfig)
    problems = Problems()
    changed = dataclasses.replace(settings)
    for key, value in changes.items():
        if key not in fields:
            problems.add(f"{where}: unknown generation setting '{key}'"
                         + (did_you_mean(key, fields) or f"; the settings are {', '.join(fields)}."))
            continue
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass  # kept as text: the type check below names it
        try:
            setattr(changed, key, coerce(value, fields[key]))
        except ValueError:
            problems.add(f"{where}: generation.{key} must be {type_name(fields[key])}, got {value!r}.")
    if not problems.messages:
        for message in generation_problems(changed):
            problems.add(f"{where}: {message}")
    problems.raise_if_any()
    return changed


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
    if cfg.eval.eval_batch_size < 1:
        fail("eval.eval_batch_size must be at least 1.")
    if cfg.eval.max_eval_samples is not None and cfg.eval.max_eval_samples < 1:
        fail("eval.max_eval_samples must be at least 1, or null for the whole evaluation set.")
    for message in generation_problems(g):
        fail(message)
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
    from ..fsutil import read_text, require_file

    cfg = Config()
    problems = Problems()
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        require_file(path, "config", "check the path (shipped configs are in config/).")
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
    from ..fsutil import atomic_output_file

    with atomic_output_file(path, encoding="utf-8") as handle:
        yaml.safe_dump(cfg.to_dict(), handle, allow_unicode=True, sort_keys=False)
