"""Typed, validated configuration: YAML files plus command-line overrides.

schema.py holds the sections and keys with the seed recipe's defaults (Qwen2-0.5B on Chinese Alpaca,
LoRA r 8 / alpha 16 on every projection); values.py coerces YAML and command-line text to each key's
type; load.py reads config files (keys in sections, or flat at the top level) and overrides
(`--learning_rate 2e-4` or `--training.learning_rate 2e-4`) and checks them, reporting every mistake -
an unknown key, a wrong type, an impossible combination - as one sentence naming the file and the key.

May import: errors, fsutil, and the registries that own allowed values (data/convert.py FORMATS,
training/presets.py, evaluation/metrics.py), which import nothing heavy.
"""


from .load import (
           Problems,
           apply_overrides,
           change_generation,
           generation_problems,
           load_config,
           parse_override_args,
           save_config,
           validate,
)
from .schema import (
           KEY_TO_SECTION,
           SECTIONS,
           Config,
           DataConfig,
           EvalConfig,
           GenerationConfig,
           LoraConfig,
           ModelConfig,
           Switch,
           TrainingConfig,
)
from .values import coerce

__all__ = ["KEY_TO_SECTION", "SECTIONS", "Config", "DataConfig", "EvalConfig", "GenerationConfig", "LoraConfig",
           "ModelConfig", "Problems", "Switch", "TrainingConfig", "apply_overrides", "change_generation", "coerce",
           "generation_problems", "load_config", "parse_override_args", "save_config", "validate"]
