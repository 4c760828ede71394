"""GGUF export (issue 19): what qwentune writes with gguf-py reads back in transformers' GGUF loader as the model
it came from, tensor types follow llama.cpp's rules, the tokenizer goes in whole, and the LoRA file holds the
adapter llama.cpp would apply.

Tolerances. Every file is first checked exactly: its logits equal those of the fp32 model whose weights went
through the file's own types (gguf-py quantize -> dequantize, per tensor, types read from the file) to 1e-4 of
the logit spread, so writing, naming, permuting and reading lose nothing beyond the type's rounding. Then the
rounding itself against the fp32 model, as max |logit error| / std(logits): measured on the tiny Qwen2 and Llama
(hidden 64, initializer 0.2, logit std ~1.6) f16 <= 0.012, bf16 <= 0.066, q8_0 <= 0.24; bounds are about 4x that.
q4_0 on a random 64-wide model has no redundancy to hide 4-bit rounding (max error 2.8 std, correlation of the
logits 0.85-0.91 measured), so q4_0 is bounded by correlation >= 0.75 only.
"""

from __future__ import annotations

import copy

import gguf
import numpy as np
import pytest
import torch

from qwentune.errors import UserError
from qwentune.export.gguf import GGUF_TYPES, permute_for_rope, write_gguf
from qwentune.export.gguf_lora import write_lora_gguf

TEXTS = ["Hello world, what is the capital of France? 12345", "保持健康的三个提示。均衡饮食，经常锻炼。",
         "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>"]
SPREAD_BOUND = {"f32": 1e-5, "f16": 0.05, "bf16": 0.25, "q8_0": 1.0}


def tiny_llama(tokenizer, tie: bool = False, seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    options = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tie,
                   initializer_range=0.2, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    options.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**options)).eval()


@pytest.fixture(scope="module")
def models(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    return {"qwen2": AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(),
            "llama": tiny_llama(tiny_tokenizer)}


def read_back(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def file_types(path) -> dict[str, gguf.GGMLQuantizationType]:
    return {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}


def rounded_like(model, path):
    """The fp32 model with each weight passed through the type the file stores it in (rows are quantized along
    their own length, so llama.cpp's row permutation does not change the rounding)."""
    arch = {"qwen2": gguf.MODEL_ARCH.QWEN2, "llama": gguf.MODEL_ARCH.LLAMA}[model.config.model_type]
    names = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    types = file_types(path)
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in rounded.named_parameters():  # a tied lm_head is the embedding, listed once
            qtype = types[names.get_name(name, try_suffixes=(".weight", ".bias"))]
            stored = gguf.quants.quantize(param.numpy(), qtype)
            param.copy_(torch.from_numpy(np.asarray(gguf.quants.dequantize(stored, qtype), dtype=np.float32)))
    return rounded


def logits(model, tokenizer):
    with torch.no_grad():
        return [model(torch.tensor([tokenizer(text)["input_ids"]])).logits[0] for text in TEXTS]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("gguf_type", ["f32", "f16", "bf16", "q8_0", "q4_0"])
def test_file_reads_back_as_the_model(models, tiny_tokenizer, tmp_path, arch, gguf_type):
    model = models[arch]
    path = write_gguf(model, tiny_tokenizer, tmp_path / f"{arch}.gguf", gguf_type)
    got = logits(read_back(path), tiny_tokenizer)
    for back, own, full in zip(got, logits(rounded_like(model, path), tiny_tokenizer), logits(model, tiny_tokenizer)):
        spread = full.std().item()
        torch.testing.assert_close(back, own, atol=1e-4 * spread, rtol=0)
        if gguf_type == "q4_0":
            assert np.corrcoef(back.flatten(), full.flatten())[0, 1] >= 0.75
        else:
            assert (back - full).abs().max().item() / spread <= SPREAD_BOUND[gguf_type]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{arch}.gguf"]  # no temporary file left


def test_tensor_types_follow_llama_cpp(models, tiny_tokenizer, tiny_model_dir, tmp_path):
    tied = file_types(write_gguf(models["qwen2"], tiny_tokenizer, tmp_path / "q.gguf", "q4_0"))
    assert "output.weight" not in tied and tied["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0  # it is the output
    assert tied["blk.0.attn_q.weight"] == tied["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert tied["blk.0.attn_q.bias"] == tied["blk.0.attn_norm.weight"] == tied["output_norm.weight"] == \
        gguf.GGMLQuantizationType.F32
    untied = file_types(write_gguf(models["llama"], tiny_tokenizer, tmp_path / "l.gguf", "q5_1"))
    assert untied["output.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert untied["token_embd.weight"] == untied["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q5_1
    # Rows of 48 are not a whole number of 32-blocks: those weights fall back to F16, as convert_hf_to_gguf.py does.
    narrow = tiny_llama(tiny_tokenizer, hidden_size=48, num_attention_heads=4, num_key_value_heads=2)
    odd = file_types(write_gguf(narrow, tiny_tokenizer, tmp_path / "n.gguf", "q8_0"))
    assert odd["blk.0.attn_q.weight"] == odd["output.weight"] == gguf.GGMLQuantizationType.F16
    assert odd["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0  # rows of 128
    assert set(GGUF_TYPES) == {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}


def test_tied_and_untied_embeddings_read_back_as_they_were(models, tiny_tokenizer, tmp_path):
    for arch, tied in (("qwen2", True), ("llama", False)):
        path = write_gguf(models[arch], tiny_tokenizer, tmp_path / f"{arch}.gguf", "f32")
        assert ("output.weight" in file_types(path)) is not tied
        back = read_back(path)
        assert back.config.tie_word_embeddings is tied
        assert (back.get_output_embeddings().weight is back.get_input_embeddings().weight) is tied


def metadata(path) -> dict:
    reader = gguf.GGUFReader(path)
    skip = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"}
    return {key: field.contents() for key, field in reader.fields.items() if key not in skip and
            not key.startswith("GGUF.")}


@pytest.mark.parametrize("eos", ["<|im_end|>", "<|endoftext|>"])
def test_tokenizer_goes_in_whole(models, tmp_path, eos):
    """Instruct tokenizers say eos <|im_end|>, base ones <|endoftext|>: eos stays the tokenizer's, and eot is the
    end of turn either way, so llama.cpp stops at <|im_end|>."""
    from transformers import AutoTokenizer

    from tests.helpers import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(eos_token=eos)
    path = write_gguf(models["qwen2"], tokenizer, tmp_path / "m.gguf", "f16")
    meta = metadata(path)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.convert_tokens_to_ids(eos)
    assert meta["tokenizer.ggml.eot_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert meta["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert meta["tokenizer.ggml.add_bos_token"] is False and "tokenizer.ggml.bos_token_id" not in meta
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template
    reader = gguf.GGUFReader(path)
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()
    types = reader.get_field("tokenizer.ggml.token_type").contents()
    assert tokens == [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    control = {tokens[i] for i, kind in enumerate(types) if kind == gguf.TokenType.CONTROL}
    assert control == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}

    back = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in TEXTS:
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert back.eos_token == eos and back.chat_template == tokenizer.chat_template


def test_refusals_are_one_line_and_leave_no_file(models, tiny_tokenizer, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(UserError) as refused:
        write_gguf(gpt2, tiny_tokenizer, tmp_path / "g.gguf", "f16")
    assert str(refused.value) == ("GGUF export: the architecture GPT2LMHeadModel is not supported; qwentune writes "
                                  "Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM models.")
    with pytest.raises(UserError, match=r"--gguf_type q4_k_m: gguf-py has no quantizer for K-quants .* writes "
                                        r"f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 with it") as refused:
        write_gguf(models["qwen2"], tiny_tokenizer, tmp_path / "k.gguf", "q4_k_m")
    # Found mid-write (the tokenizer is checked inside the file's block): the temporary file goes too.
    small = tiny_llama(tiny_tokenizer, vocab_size=100)
    with pytest.raises(UserError, match="has 100 rows") as refused:
        write_gguf(small, tiny_tokenizer, tmp_path / "s.gguf", "f32")
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def qwen_gguf(qwen_tokenizer, tmp_path_factory):
    """A one-layer Qwen2 with the real tokenizer set up as the base checkpoints are (eos <|endoftext|>)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    base_like = copy.deepcopy(qwen_tokenizer)
    base_like.eos_token = "<|endoftext|>"
    return write_gguf(model, base_like, tmp_path_factory.mktemp("qwen") / "qwen.gguf", "f32")


def test_real_qwen2_tokenizer(qwen_tokenizer, qwen_gguf):
    """Qwen2's embedding has more rows (151936) than the tokenizer has tokens: the rest are padding entries."""
    # transformers' own GGUF metadata reader: gguf-py's GGUFReader takes ~20 s over 151936 tokens and their merges.
    from transformers.integrations.gguf.reader import read_gguf_metadata

    meta, _ = read_gguf_metadata(str(qwen_gguf), ("tokenizer.ggml.tokens",))
    im_end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert meta["tokenizer.ggml.pre"] == "qwen2"
    assert meta["tokenizer.ggml.eot_token_id"] == im_end
    assert meta["tokenizer.ggml.eos_token_id"] == qwen_tokenizer.convert_tokens_to_ids("<|endoftext|>") != im_end
    tokens, size = meta["tokenizer.ggml.tokens"], len(qwen_tokenizer)
    assert len(tokens) == 151936 and tokens[im_end] == "<|im_end|>"
    assert tokens[:size] == [t for t, _ in sorted(qwen_tokenizer.get_vocab().items(), key=lambda item: item[1])]
    assert tokens[size:] == [f"[PAD{i}]" for i in range(size, 151936)]


@pytest.mark.slow
def test_real_qwen2_tokenizer_reads_back(qwen_tokenizer, qwen_gguf):
    """transformers' GGUF reader rebuilds the 151k-token tokenizer in pure Python (~40 s on 2 busy cores)."""
    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(qwen_gguf.parent, gguf_file=qwen_gguf.name)
    for text in TEXTS + ["  indented\n\tcode 3.14159", "Qwen2是一个大型语言模型，擅长中文。"]:
        assert back(text)["input_ids"] == qwen_tokenizer(text)["input_ids"]


def peft_on(model, **options):
    from peft import LoraConfig, get_peft_model

    settings = dict(r=4, lora_alpha=8, init_lora_weights=False,
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    settings.update(options)
    torch.manual_seed(1)
    return get_peft_model(copy.deepcopy(model), LoraConfig(**settings))


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("options", [{}, {"use_rslora": True}, {"rank_pattern": {"down_proj": 2},
                                                                  "alpha_pattern": {"v_proj": 3}}],
                         ids=["lora", "rslora", "patterns"])
def test_lora_gguf_is_what_llama_cpp_applies(models, tmp_path, arch, options):
    """llama.cpp applies W + alpha / r * lora_b @ lora_a (r: lora_a's rows) on the permuted base weights: rebuilt
    from the file that way, every adapted weight equals PEFT's merge, for plain LoRA, rsLoRA and rank / alpha
    patterns (one alpha, the rest folded into lora_b); from the PeftModel and from its saved directory alike."""
    model = models[arch]
    adapted = peft_on(model, **options)
    adapted.save_pretrained(tmp_path / "adapter")
    from_dir = write_lora_gguf(tmp_path / "adapter", model.config, tmp_path / "dir.gguf")
    path = write_lora_gguf(adapted, model.config, tmp_path / "lora.gguf")
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("general.architecture").contents() == arch
    alpha = reader.get_field("adapter.lora.alpha").contents()
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert tensors.keys() == {t.name for t in gguf.GGUFReader(from_dir).tensors}
    assert len(tensors) == 2 * 7 * model.config.num_hidden_layers
    config = model.config
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    merged = adapted.merge_and_unload().state_dict()
    base = model.state_dict()
    hf_names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
    for layer in range(config.num_hidden_layers):
        for short, hf in hf_names.items():
            lora_a = tensors[f"blk.{layer}.{short}.weight.lora_a"]
            lora_b = tensors[f"blk.{layer}.{short}.weight.lora_b"]
            weight, want = base[f"model.layers.{layer}.{hf}.weight"].numpy(), merged[f"model.layers.{layer}.{hf}.weight"].numpy()
            assert lora_a.shape == (lora_a.shape[0], weight.shape[1]) and lora_b.shape == (weight.shape[0], lora_a.shape[0])
            if arch == "llama" and short in heads:
                weight, want = permute_for_rope(weight, heads[short]), permute_for_rope(want, heads[short])
            np.testing.assert_allclose(weight + alpha / lora_a.shape[0] * lora_b @ lora_a, want, atol=1e-5, rtol=0)


def test_lora_gguf_refuses_what_llama_cpp_cannot_apply(models, tmp_path):
    for options, said in (({"use_dora": True}, "is DoRA"), ({"bias": "lora_only"}, "also trains")):
        with pytest.raises(UserError, match=said):
            write_lora_gguf(peft_on(models["qwen2"], **options), models["qwen2"].config, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_embedded_demo_model_round_trip(tmp_path):
    """The demo's SmolLM2-135M (Llama architecture, tied embeddings) as q8_0: its tokenizer metadata matches the
    original GGUF it was converted from, and transformers reads our file back as the model with its weights rounded
    to the file's types (25-70 s on 2 busy cores, so slow)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qwentune.models.gguf_source import EMBEDDED_MODEL, embedded_demo_gguf, materialize

    directory = materialize(EMBEDDED_MODEL, log=lambda *_: None)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    path = write_gguf(model, tokenizer, tmp_path / "smollm2.gguf", "q8_0")
    ours, original = metadata(path), metadata(embedded_demo_gguf(log=lambda *_: None))
    # The original says "smollm" (each digit alone, then GPT-2's split). transformers' GGUF reader, which made the
    # demo's tokenizer, knows no "smollm" split and gives it GPT-2's: ours names the split the tokenizer has.
    assert original["tokenizer.ggml.pre"] == "smollm" and ours["tokenizer.ggml.pre"] == "gpt-2"
    for key in ("general.architecture", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template",
                "tokenizer.ggml.add_bos_token", "llama.rope.dimension_count", "llama.attention.head_count_kv"):
        assert ours[key] == original[key], key
    assert ours["tokenizer.ggml.eot_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = torch.tensor([tokenizer("The capital of France is Paris, and 2+2=4.")["input_ids"]])
    with torch.no_grad():
        back, own = read_back(path)(ids).logits, rounded_like(model, path)(ids).logits
    torch.testing.assert_close(back, own, atol=1e-4 * own.std().item(), rtol=0)


def test_qwen3_with_q_and_k_norms(tiny_tokenizer, tmp_path):
    """Qwen3 (attn_q_norm / attn_k_norm, head_dim set on its own). head_dim is 128 as in every Qwen3 checkpoint:
    transformers' GGUF reader ignores attention.key_length for qwen3 and assumes Qwen3Config's 128."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, tie_word_embeddings=True,
                                         initializer_range=0.2)).eval()
    path = write_gguf(model, tiny_tokenizer, tmp_path / "qwen3.gguf", "bf16")
    types = file_types(path)
    assert types["blk.1.attn_q_norm.weight"] == types["blk.1.attn_k_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert metadata(path)["qwen3.attention.key_length"] == 128
    for back, full in zip(logits(read_back(path), tiny_tokenizer), logits(model, tiny_tokenizer)):
        assert (back - full).abs().max().item() / full.std().item() <= SPREAD_BOUND["bf16"]
