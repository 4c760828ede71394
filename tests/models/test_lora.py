"""The LoRA wrap: only the adapter trains; target modules checked against the model, the output head refused."""

import pytest

from qwentune.config import load_config
from qwentune.errors import UserError
from qwentune.models.load import load_model
from qwentune.models.lora import apply_lora
from tests.helpers import FP32


def wrapped(model_dir, **options):
    cfg = load_config(None, [("model_name_or_path", str(model_dir)), *options.items()])
    return apply_lora(load_model(str(model_dir), FP32), cfg)


def test_only_adapter_parameters_train(tiny_model_dir):
    model = wrapped(tiny_model_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    targets = set(model.peft_config["default"].target_modules)
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # not lm_head


def test_the_output_head_is_refused_with_the_reason_and_the_allowed_names(tiny_model_dir):
    with pytest.raises(UserError) as err:
        wrapped(tiny_model_dir, lora_target_modules="q_proj,lm_head")
    message = str(err.value)
    assert "lm_head is the output head, which qwentune leaves out of LoRA on purpose" in message
    assert "q_proj" in message and "down_proj" in message and "not in this model" not in message
    with pytest.raises(UserError, match=r"qkv_proj not in this model; its linear layers are .*gate_proj"):
        wrapped(tiny_model_dir, lora_target_modules="qkv_proj")
