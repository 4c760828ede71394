import re

import pytest

from qwentune.config import KEY_TO_SECTION, Config, load_config, parse_override_args, save_config
from qwentune.errors import UserError


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_seed_recipe():
    cfg = Config()
    assert cfg.model.model_name_or_path == "Qwen/Qwen2-0.5B"
    assert cfg.data.dataset_name == "chinese_alpaca" and cfg.data.max_length == 1024
    assert (cfg.lora.lora_r, cfg.lora.lora_alpha, cfg.lora.lora_dropout) == (8, 16, 0.1)
    t = cfg.training
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.save_steps) == (4, 4, 300)
    assert (t.optim, t.lr_scheduler_type, t.learning_rate, t.num_train_epochs) == ("adamw_torch_fused", "cosine", 2e-4, 3)
    assert t.bf16 and t.output_dir.startswith("results/")


def test_yaml_values_and_yaml11_float_quirk(tmp_path):
    # PyYAML reads `2e-4` as a string; a float field still gets a float.
    cfg = load_config(write(tmp_path, "training:\n  learning_rate: 2e-4\n  num_train_epochs: 1\ndata:\n  languages: [zh]\n"))
    assert cfg.training.learning_rate == pytest.approx(2e-4)
    assert cfg.training.num_train_epochs == 1.0 and isinstance(cfg.training.num_train_epochs, float)
    assert cfg.data.languages == ["zh"]


def test_unknown_key_suggests_the_right_one_and_names_the_file(tmp_path):
    path = write(tmp_path, "training:\n  learnig_rate: 0.001\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "did you mean 'learning_rate'" in str(err.value)


def test_unknown_section_and_misplaced_key(tmp_path):
    with pytest.raises(UserError, match="did you mean 'training'"):
        load_config(write(tmp_path, "trainig:\n  save_steps: 10\n"))
    with pytest.raises(UserError, match="'lora_r' belongs under 'lora:', not 'training:'"):
        load_config(write(tmp_path, "training:\n  lora_r: 4\n"))


def test_flat_keys_as_llamafactory_users_write_them(tmp_path):
    """Every key name is unique, so keys may also sit at the top level, mixed with sections."""
    cfg = load_config(write(tmp_path, "model_name_or_path: ./m\nlearning_rate: 0.1\nlora_r: 4\n"
                                      "training:\n  save_steps: 7\n"))
    assert (cfg.model.model_name_or_path, cfg.training.learning_rate, cfg.lora.lora_r) == ("./m", 0.1, 4)
    assert cfg.training.save_steps == 7
    with pytest.raises(UserError, match="'learning_rate' is set twice \\(at the top level and under 'training:'\\)"):
        load_config(write(tmp_path, "learning_rate: 0.1\ntraining:\n  learning_rate: 0.2\n"))


def test_every_problem_of_a_file_in_one_message(tmp_path):
    path = write(tmp_path, "model_name_or_path: ./m\nlearnig_rate: 0.1\ntraining:\n  save_steps: many\n"
                           "  lora_r: 4\ndata:\n  max_length: 4\n")
    with pytest.raises(UserError) as err:
        load_config(path, [("epochs", "3")])
    message = str(err.value)
    assert message.startswith("5 problems: (1) ") and "\n" not in message
    for part in ("unknown key 'learnig_rate'; did you mean 'learning_rate'?",
                 "training.save_steps must be an integer, got 'many'", "'lora_r' belongs under 'lora:'",
                 "command line: unknown option --epochs", "data.max_length is 4"):
        assert part in message, part
    assert message.count(str(path)) == 4  # each problem names its place


@pytest.mark.parametrize("text, message", [
    ("training:\n  save_steps: many\n", "training.save_steps must be an integer, got 'many'"),
    ("training:\n  bf16: 'yes please'\n", "training.bf16 must be true or false"),
    ("training:\n  optim: sgd\n", "training.optim must be one of"),
    ("training:\n  bf16: true\n  fp16: true\n", "both true"),
    ("data:\n  max_length: 4\n", "at least 16"),
    ("data:\n  val_size: 1.5\n", "data.val_size"),
    ("lora:\n  lora_dropout: 1.0\n", "lora_dropout"),
    ("generation:\n  do_sample: true\n  temperature: 0\n", "temperature must be positive"),
    ("training: [1, 2]\n", "must be a mapping"),
    ("training:\n  save_steps: [\n", "not valid YAML"),
])
def test_bad_values_fail_with_one_sentence(tmp_path, text, message):
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_config(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_missing_file():
    with pytest.raises(UserError, match="config file not found"):
        load_config("nope/none.yaml")


def test_seed_style_overrides_and_dotted_and_flags():
    pairs = parse_override_args(["--num_train_epochs", "3", "--learning_rate", "0.0002",
                                 "--model_name_or_path", "./my/model", "--output_dir=out/001",
                                 "--training.save_steps", "50", "--use_4bit", "--languages", "zh,en"])
    cfg = load_config(None, pairs)
    assert cfg.training.num_train_epochs == 3.0 and cfg.training.learning_rate == 0.0002
    assert cfg.model.model_name_or_path == "./my/model"
    assert cfg.training.output_dir == "out/001"  # a string stays a string, leading zeros and all
    assert cfg.training.save_steps == 50 and cfg.model.use_4bit is True
    assert cfg.data.languages == ["zh", "en"]


def test_override_errors():
    with pytest.raises(UserError, match="unknown option --learnin_rate; did you mean --learning_rate\\?$"):
        load_config(None, [("learnin_rate", "1")])
    with pytest.raises(UserError, match="must be a number"):
        load_config(None, [("learning_rate", "fast")])
    with pytest.raises(UserError, match="expected an option"):
        parse_override_args(["learning_rate", "1"])
    with pytest.raises(UserError, match="unknown option --training.lora_r"):
        load_config(None, [("training.lora_r", "4")])


def test_key_names_are_unique_across_sections():
    # Plain `--key` overrides rely on this; KEY_TO_SECTION asserts it at import, this keeps it visible.
    from qwentune.config import schema as config

    total = sum(len(config.section_fields(cls)) for cls in config.SECTIONS.values())
    assert total == len(KEY_TO_SECTION)


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(None, [("learning_rate", "0.001"), ("languages", "zh")])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize("changes, message", [
    ({"do_sample": True, "temperature": 0}, "/params: generation.temperature must be positive when do_sample is true"),
    ({"max_new_tokens": 0}, "/params: generation.max_new_tokens must be at least 1."),
    ({"max_new_tokens": -5}, "/params: generation.max_new_tokens must be at least 1."),
    ({"repetition_penalty": 0}, "/params: generation.repetition_penalty must be positive"),
    ({"top_p": 1.5}, "/params: generation.top_p must be in (0, 1]."),
    ({"temperatur": 0.9}, "/params: unknown generation setting 'temperatur'; did you mean 'temperature'?"),
    ({"temperature": "hot"}, "/params: generation.temperature must be a number, got 'hot'."),
    ({"temperature": float("nan"), "do_sample": True}, "/params: generation.temperature must be a number, got nan."),
    ({"max_new_tokens": 8, "repetition_penalty": 0}, "/params: generation.repetition_penalty must be positive"),
])
def test_changed_generation_settings_get_the_config_checks(changes, message):
    """Issue 17, kind B: one set of generation checks; a refused change leaves the settings as they were."""
    from qwentune.config import GenerationConfig, change_generation

    settings = GenerationConfig(max_new_tokens=16)
    with pytest.raises(UserError) as err:
        change_generation(settings, changes, "/params")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert settings == GenerationConfig(max_new_tokens=16)
    assert change_generation(settings, {"do_sample": "true", "temperature": "0.9"}, "/params") == GenerationConfig(
        max_new_tokens=16, do_sample=True, temperature=0.9)


def test_a_float_setting_is_a_finite_number(tmp_path):
    with pytest.raises(UserError, match=re.escape("training.learning_rate must be a number, got nan")):
        load_config(write(tmp_path, "training:\n  learning_rate: .nan\n"))
    with pytest.raises(UserError, match=re.escape("generation.top_p must be a number, got 'inf'")):
        load_config(None, [("top_p", "inf")])


@pytest.mark.parametrize("args, message", [
    (["--learning_rate"], "command line: --learning_rate needs a value (--learning_rate VALUE)."),
    (["--output_dir", "x", "--max_steps"], "command line: --max_steps needs a value (--max_steps VALUE)."),
    (["--dataset_name", ""], "command line: --dataset_name is empty; give a value, or leave the option out."),
    (["--output_dir="], "command line: --output_dir is empty; give a value, or leave the option out."),
])
def test_a_missing_or_empty_option_value_is_named_as_such(args, message):
    with pytest.raises(UserError) as caught:
        load_config(None, parse_override_args(args))
    assert str(caught.value) == message


def test_a_bare_switch_is_still_true_and_an_empty_optional_value_still_null():
    cfg = load_config(None, parse_override_args(["--use_4bit", "--tokenizer_name", ""]))
    assert cfg.model.use_4bit is True and cfg.model.tokenizer_name is None
