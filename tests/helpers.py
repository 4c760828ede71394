"""Plain helpers shared by the tests: tiny tokenizer and model builders, the small QA data, and the shipped
training config pointed at them. Fixtures that use these are in conftest.py.

benchmarks/gpu_check.py imports the builders too, on a machine that may have no pytest: pytest is
imported only where a test is skipped."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from qwentune.config import load_config
from qwentune.models.precision import choose_precision

# Answer in fp32 on any CPU, so exact comparisons hold whatever the CPU's bf16 support.
FP32 = choose_precision(bf16=False, fp16=False)

REPO = Path(__file__).resolve().parents[1]
# The real chat templates of Qwen2.5-Instruct and Qwen3 (sources in tests/templates/README.md).
TEMPLATES = REPO / "tests" / "templates"
QWEN25_TEMPLATE = TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja"
QWEN3_TEMPLATE = TEMPLATES / "Qwen-Qwen3-0.6B.jinja"
SHARED_REAL = Path(os.environ.get("QWENTUNE_SHARED_DATA", REPO.parent / "shared" / "data" / "real"))

CORPUS = [
    "You are a helpful assistant. Give three tips for staying healthy.",
    "Eat a balanced diet, exercise regularly and get enough sleep.",
    "What is the capital of France? The capital of France is Paris.",
    "保持健康的三个提示。均衡饮食，经常锻炼，保证充足的睡眠。",
    "法国的首都是哪里？法国的首都是巴黎。你好，我是一个乐于助人的助手。",
    "def add(a, b):\n    return a + b\n",
] * 4


def build_tiny_tokenizer(eos_token: str = "<|im_end|>", pad_token: str | None = "<|endoftext|>",
                         template: Path | None = None):
    """A byte-level BPE tokenizer with Qwen's special tokens and ChatML template (vocab ~400); with `template`
    (a .jinja file) that chat template instead, and for a template that thinks (Qwen3's) also Qwen3's
    `<think>` and `</think>`, added tokens that are not special, as in Qwen3's tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from qwentune.models.tokenizer import CHATML_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(CORPUS, trainer)
    chat_template = template.read_text(encoding="utf-8") if template else CHATML_TEMPLATE
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos_token, pad_token=pad_token,
                                        chat_template=chat_template, additional_special_tokens=specials[1:])
    if "<think>" in chat_template:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    return tokenizer


def real_sample(name: str) -> Path:
    path = SHARED_REAL / name
    if not path.exists():
        import pytest

        pytest.skip(f"real data sample {name} not present (../shared is absent)")
    return path


def build_tiny_qwen2(path, tokenizer, seed: int = 0, positions: int = 512):
    """A 2-layer Qwen2 with hidden size 64 (about 0.1M parameters) and `positions` positions, saved with its
    tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions, tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        # Wider than the usual 0.02: with a frozen tied head and a unit-scale final norm, tiny embeddings
        # cap the logits near uniform, and no adapter could make the model confident about anything.
        initializer_range=0.2,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_qwen3(path, tokenizer, seed: int = 0, positions: int = 512):
    """A 2-layer Qwen3ForCausalLM in Qwen3's real configuration, scaled down: RMSNorm on q and k per head,
    no q/k/v bias, and a head_dim of its own (32, not hidden_size / heads = 16, as Qwen3-0.6B's 128 is not
    1024 / 16), tied embeddings; saved with its tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, attention_bias=False,
        max_position_embeddings=positions, tie_word_embeddings=True, rms_norm_eps=1e-6,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, initializer_range=0.2,  # wide, for the reason given in build_tiny_qwen2
    )
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def examples_of(lengths, vocab=200, seed=0):
    """Random tokenized examples whose first half is an unlabelled prompt."""
    import torch

    from qwentune.data.tokenize import IGNORE_INDEX

    generator = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(5, vocab, (n,), generator=generator).tolist()
        labels = [IGNORE_INDEX] * (n // 2) + ids[n // 2:]  # a prompt half without labels
        out.append({"input_ids": ids, "labels": labels})
    return out
QA = [("法国的首都是哪里？", "巴黎。"), ("What is the capital of France?", "Paris."),
      ("保持健康的提示？", "均衡饮食。"), ("2+2?", "4")]


def qa_file(tmp_path, repeats=8):
    rows = [{"instruction": q, "input": "", "output": a} for _ in range(repeats) for q, a in QA]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def tiny_options(tmp_path, model_dir, **overrides) -> dict[str, str]:
    """Command-line options that point the shipped training config at the tiny model and small local data."""
    options = {
        "model_name_or_path": str(model_dir), "dataset_name": str(qa_file(tmp_path)),
        "output_dir": str(tmp_path / "out"), "logging_dir": str(tmp_path / "logs"),
        "processed_dir": str(tmp_path / "processed"), "cache_dir": str(tmp_path / "cache"),
        "per_device_train_batch_size": "4", "gradient_accumulation_steps": "2", "num_train_epochs": "1",
        "val_size": "4", "max_length": "128", "bf16": "false", "logging_steps": "1", "save_steps": "2",
        "eval_steps": "2", "learning_rate": "0.003",
    }
    options.update({k: str(v) for k, v in overrides.items()})
    return options


def tiny_config(tmp_path, model_dir, **overrides):
    """The shipped training config with tiny_options (fp32, so runs compare exactly)."""
    return load_config(REPO / "config" / "training_config.yaml", list(tiny_options(tmp_path, model_dir, **overrides).items()))


def silent(*args):
    pass


def write_gguf(path, model_dir, gguf_type: str = "model"):
    """The model in `model_dir` written as a real F32 GGUF file by qwentune's own exporter (export/gguf.py, whose
    files llama.cpp and transformers read: tests/export); gguf_type "adapter" writes a llama.cpp LoRA adapter of a
    fresh LoRA on that model instead (general.type "adapter")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qwentune.export.gguf import write_gguf as export_gguf

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if gguf_type == "adapter":
        from peft import LoraConfig, get_peft_model

        from qwentune.export.gguf_lora import write_lora_gguf

        return write_lora_gguf(get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])), model.config, path)
    return export_gguf(model, AutoTokenizer.from_pretrained(model_dir), path, "f32")


def signal_self_at(step: int, signum: int | None = None):
    """A TrainerCallback that sends this process SIGTERM (or `signum`) when optimizer step `step` ends, as a
    scheduler or a user's Ctrl-C would: training saves a checkpoint after the next step and stops."""
    import signal

    from transformers import TrainerCallback

    class SignalSelf(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signum or signal.SIGTERM)

    return SignalSelf()


HOLDER = "import sys\nfrom qwentune.fsutil import hold_output\nwith hold_output(sys.argv[1]):\n" \
         "    print('held', flush=True)\n    sys.stdin.read()\n"


@contextlib.contextmanager
def held_by_another_process(target):
    """A second real process that holds the output `target` (qwentune's own hold_output) until the block ends;
    yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0


def interrupt_and_wait(process, timeout: float = 30) -> None:
    """Ctrl-C for a server started by a test (subprocess.Popen), then wait; killed when it does not end in time."""
    import signal
    import subprocess

    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
