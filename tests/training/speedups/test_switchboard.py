"""The speed-up switchboard: auto takes what the device allows, each switch turns one off, the summary says
what ran, and a switch set to true where it cannot run is one clear sentence."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from qwentune.config import load_config
from qwentune.errors import UserError
from qwentune.models.load import load_model
from qwentune.models.lora import apply_lora
from qwentune.training.speedups import choose_speedups
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
                "cpu_kernels": CPU_KERNELS, "tokens_per_pass": 512}
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
                                       "cpu_kernels": [], "tokens_per_pass": None}
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
    with pytest.raises(UserError, match="flash_attention_2 needs a CUDA GPU and the flash-attn package"):
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
