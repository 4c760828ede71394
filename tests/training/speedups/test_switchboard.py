"""The speed-up switchboard: auto takes what the device allows, each switch turns one off, the summary says
what ran, and a switch set to true where it cannot run is one clear sentence."""

import dataclasses
import itertools
import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from qwentune.config import load_config
from qwentune.errors import UserError
from qwentune.models.load import load_model
from qwentune.models.lora import apply_lora
from qwentune.training.speedups import (
    ModelFacts,
    Plan,
    Speedups,
    choose_speedups,
    cuda_packages,
    lean_head_kernel,
    model_facts,
    plan_speedups,
)
from qwentune.training.speedups.cuda_packages import FLASH_ATTN, LIGER_KERNEL
from qwentune.training.speedups.liger import FUSED_HEAD, fused_linear_cross_entropy_sum
from qwentune.training.train import train
from tests.helpers import FP32, silent, tiny_config

ALL_OFF = dict(lean_head="false", cpu_kernels="false", attn_implementation="sdpa")
CPU_KERNELS = ["fast_lora_dropout", "fused_lora", "fused_rms_norm"] + (
    ["keep_freed_memory"] if sys.platform.startswith("linux") else [])  # glibc's allocator


def wrapped(model_dir, **options):
    cfg = load_config(None, [("model_name_or_path", str(model_dir)), *options.items()])
    return cfg, apply_lora(load_model(str(model_dir), FP32), cfg)


def test_auto_takes_every_cpu_speedup_and_the_summary_lists_them(tmp_path, tiny_model_dir, per_example_attention_calls):
    lines = []
    result = train(tiny_config(tmp_path, tiny_model_dir, save_steps=100, eval_steps=100), log=lines.append)
    expected = {"packing": True, "attn_implementation": "qwentune_packed", "lean_head": True,
                "cpu_kernels": CPU_KERNELS, "cuda_kernels": [], "tokens_per_pass": 512}
    assert result.summary["speedups"] == expected
    assert json.loads((tmp_path / "out" / "run_summary.json").read_text())["speedups"] == expected
    assert any(line.startswith("speed-ups: packing, qwentune_packed attention, lean loss head, CPU kernels (")
               for line in lines), lines
    assert per_example_attention_calls  # the packed kernel really ran in training


def test_switched_off_they_do_not_run_and_the_adapter_is_the_same(tmp_path, tiny_model_dir,
                                                                  per_example_attention_calls):
    """The speed-ups change speed and memory, not the result (dropout off: the CPU dropout draws other masks)."""
    common = dict(lora_dropout=0.0, max_steps=3, val_size=0, save_steps=100)
    for run in ("on", "off"):
        (tmp_path / run).mkdir()
    train(tiny_config(tmp_path / "on", tiny_model_dir, **common), log=silent)
    calls_with_speedups = len(per_example_attention_calls)
    off = train(tiny_config(tmp_path / "off", tiny_model_dir, **common, **ALL_OFF), log=silent)
    assert off.summary["speedups"] == {"packing": True, "attn_implementation": "sdpa", "lean_head": False,
                                       "cpu_kernels": [], "cuda_kernels": [], "tokens_per_pass": None}
    assert len(per_example_attention_calls) == calls_with_speedups > 0  # none in the second run
    assert not any(hasattr(module, "_qwentune_group") for module in off.model.modules())  # no fused LoRA
    with_speedups = load_file(tmp_path / "on" / "out" / "adapter_model.safetensors")
    without = load_file(tmp_path / "off" / "out" / "adapter_model.safetensors")
    for name, tensor in with_speedups.items():
        # Other summation orders (fused layers, blocked loss head) round differently; Adam magnifies that where
        # a gradient is near zero (6.5e-7 measured). A wrong loss or gradient would move weights by about the
        # learning rate (3e-3) a step.
        torch.testing.assert_close(without[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_a_switch_that_cannot_run_here_is_refused(tiny_model_dir, monkeypatch):
    cfg, model = wrapped(tiny_model_dir, attn_implementation="flash_attention_2")
    with pytest.raises(UserError, match="flash_attention_2 needs a CUDA GPU .* and the flash-attn package"):
        choose_speedups(cfg.training, "cpu", model, 128)
    cfg, model = wrapped(tiny_model_dir, cpu_kernels="true")
    with pytest.raises(UserError, match="cpu_kernels is true, but this run is on cuda"):
        choose_speedups(cfg.training, "cuda", model, 128)
    # FSDP shards the head's weight: auto leaves the lean head out, true is refused.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    cfg, model = wrapped(tiny_model_dir)
    assert not choose_speedups(cfg.training, "cpu", model, 128).lean_head
    cfg, model = wrapped(tiny_model_dir, lean_head="true")
    with pytest.raises(UserError, match="lean_head is true, but this run cannot use it"):
        choose_speedups(cfg.training, "cpu", model, 128)


def test_sliding_window_models_keep_sdpa(tmp_path, tiny_tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                         max_window_layers=0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "windowed")
    cfg, model = wrapped(tmp_path / "windowed")
    assert choose_speedups(cfg.training, "cpu", model, 128).attn_implementation == "sdpa"
    cfg, model = wrapped(tmp_path / "windowed", attn_implementation="qwentune_packed")
    with pytest.raises(UserError, match="has sliding-window layers; use sdpa or auto"):
        choose_speedups(cfg.training, "cpu", model, 128)


# The pure decision, with the usable CUDA kernel packages and the model's facts given.
ALL_PACKAGES = frozenset({FLASH_ATTN, LIGER_KERNEL})
QWEN_BF16 = ModelFacts(full_attention=True, lean_head=True, flash_attention=True, half_precision=True)


def training(**options):
    return load_config(None, list(options.items())).training


def plan(device="cuda", packages=ALL_PACKAGES, facts=QWEN_BF16, **options):
    return plan_speedups(training(**options), device, 1024, facts, packages)


def outcome(device, packages, facts, options):
    try:
        return plan(device, packages, facts, **options)
    except UserError as error:
        return str(error)


SWITCHES = [dict(zip(("packing", "attn_implementation", "lean_head", "cpu_kernels", "cuda_kernels"), values))
            for values in itertools.product(("auto", "false"), ("auto", "qwentune_packed", "sdpa"), ("auto", "true"),
                                            ("auto", "true", "false"), ("auto", "false"))]
FACTS = [QWEN_BF16, dataclasses.replace(QWEN_BF16, half_precision=False, full_attention=False, lean_head=False)]


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_off_cuda_the_choice_is_the_same_whatever_is_installed(device):
    for options, facts in itertools.product(SWITCHES, FACTS):
        assert outcome(device, ALL_PACKAGES, facts, options) == outcome(device, frozenset(), facts, options), options


def test_cuda_takes_flash_attention_and_liger_where_they_run():
    assert plan() == Plan(packing=True, attn_implementation="flash_attention_2", lean_head=True, cpu_kernels=False,
                          liger_kernels=True, tokens_per_pass=None)
    assert plan(packages=frozenset({LIGER_KERNEL})).attn_implementation == "qwentune_packed"
    assert plan(packages=frozenset({FLASH_ATTN})).liger_kernels is False
    # without either: sdpa per example and qwentune's own lean head, as before
    assert plan(packages=frozenset()) == Plan(True, "qwentune_packed", True, False, False, None)


def test_flash_attention_only_where_it_can_take_the_run():
    assert plan(facts=dataclasses.replace(QWEN_BF16, half_precision=False)).attn_implementation == "qwentune_packed"
    assert plan(facts=dataclasses.replace(QWEN_BF16, flash_attention=False)).attn_implementation == "qwentune_packed"
    assert plan(packing="false").attn_implementation == "sdpa"  # padded batches keep transformers' sdpa
    # flash-attn honours sliding windows, which per-example sdpa cannot
    windowed = dataclasses.replace(QWEN_BF16, full_attention=False)
    assert plan(facts=windowed).attn_implementation == "flash_attention_2"
    assert plan(facts=windowed, packages=frozenset()).attn_implementation == "sdpa"
    # each switch still turns its part off
    assert plan(attn_implementation="qwentune_packed").attn_implementation == "qwentune_packed"
    assert plan(cuda_kernels="false").liger_kernels is False
    assert plan(lean_head="false").lean_head is False


def test_a_cuda_switch_that_cannot_run_here_is_refused():
    with pytest.raises(UserError, match="cuda_kernels is true, but this run is on cpu without a liger-kernel"):
        plan("cpu", cuda_kernels="true")
    with pytest.raises(UserError, match="cuda_kernels is true, but this run is on cuda without a liger-kernel"):
        plan(packages=frozenset({FLASH_ATTN}), cuda_kernels="true")
    with pytest.raises(UserError, match="flash_attention_2 needs a CUDA GPU .* and the flash-attn package"):
        plan(packages=frozenset({LIGER_KERNEL}), attn_implementation="flash_attention_2")
    with pytest.raises(UserError, match="flash_attention_2 needs bf16 or fp16 weights"):
        plan(facts=dataclasses.replace(QWEN_BF16, half_precision=False), attn_implementation="flash_attention_2")
    assert plan(cuda_kernels="true", attn_implementation="flash_attention_2").liger_kernels


def test_a_cpu_run_is_the_same_when_cuda_kernels_are_installed(tiny_model_dir, monkeypatch):
    """The real switchboard, told that every CUDA kernel package can run: a CPU run does not change."""
    cfg, model = wrapped(tiny_model_dir)
    expected = choose_speedups(cfg.training, "cpu", model, 128)
    monkeypatch.setattr(cuda_packages, "usable_packages", lambda device: ALL_PACKAGES)
    cfg, model = wrapped(tiny_model_dir)
    assert choose_speedups(cfg.training, "cpu", model, 128) == expected
    assert expected.cuda_kernels == () and expected.attn_implementation == "qwentune_packed"


def test_the_model_facts_and_the_record(tiny_model_dir):
    cfg, model = wrapped(tiny_model_dir)
    # the tiny Qwen2 in fp32: transformers has a flash-attention path for it, but flash-attn takes bf16/fp16 only
    assert model_facts(model.get_base_model()) == dataclasses.replace(QWEN_BF16, half_precision=False)
    model.get_base_model().to(torch.bfloat16)
    assert model_facts(model.get_base_model()).half_precision
    record = Speedups(True, "flash_attention_2", True, (), ("liger_rms_norm", FUSED_HEAD), None)
    assert record.describe() == ("packing, flash_attention_2 attention, lean loss head, "
                                 "CUDA kernels (liger rms norm, liger fused linear cross entropy)")
    assert record.as_dict()["cuda_kernels"] == ["liger_rms_norm", FUSED_HEAD]
    # the lean head runs Liger's kernel exactly when the record says so
    assert lean_head_kernel(record) is fused_linear_cross_entropy_sum
    assert lean_head_kernel(dataclasses.replace(record, cuda_kernels=("liger_rms_norm",))) is None
