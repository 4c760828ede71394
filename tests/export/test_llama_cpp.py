"""llama.cpp itself (through llama-cpp-python) runs what GGUF export writes: the same logits as transformers in f32
(so the Llama q/k permutation and the tokenizer are right), the same token ids for English, Chinese and special
tokens, <|im_end|> as end of generation, and the LoRA file on the base file equal to the merged model.
Measured (f32 files, f32 KV cache, tiny Qwen2 and Llama): llama.cpp's logits within 8e-6 of the logit spread of
transformers' (1.3e-5 with the LoRA on the base), so 1e-4 is the bound. Skipped where llama_cpp is not installed (it compiles llama.cpp for minutes: `pip install llama-cpp-python`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from qwentune.export.gguf import write_gguf
from qwentune.export.gguf_lora import write_lora_gguf
from tests.export.test_gguf import TEXTS, peft_on, tiny_llama

llama_cpp = pytest.importorskip("llama_cpp")


def load(path, lora=None):
    """llama.cpp with an f32 KV cache (its default is f16, which alone moves tiny-model logits by ~2% of their
    spread), so that f32 files compare to transformers' fp32 at float rounding."""
    return llama_cpp.Llama(model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=128, n_batch=128,
                           n_threads=1, logits_all=True, verbose=False, type_k=llama_cpp.GGML_TYPE_F32,
                           type_v=llama_cpp.GGML_TYPE_F32)


def cpp_logits(llm, ids) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.fixture(scope="module")
def models(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    return {"qwen2": AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(),
            "llama": tiny_llama(tiny_tokenizer)}


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_llama_cpp_logits_and_tokens_match_transformers(models, tiny_tokenizer, tmp_path, arch):
    model = models[arch]
    llm = load(write_gguf(model, tiny_tokenizer, tmp_path / "m.gguf", "f32"))
    for text in TEXTS:
        ids = tiny_tokenizer(text)["input_ids"]
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == ids
        want = hf_logits(model, ids)
        np.testing.assert_allclose(cpp_logits(llm, ids), want, atol=1e-4 * want.std(), rtol=0)
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_eot(vocab) == im_end and llama_cpp.llama_vocab_is_eog(vocab, im_end)


def test_llama_cpp_stops_at_im_end_for_a_base_tokenizer(models, tmp_path):
    """A Qwen base checkpoint says eos <|endoftext|>: llama.cpp still ends generation at <|im_end|> (eot)."""
    from tests.helpers import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(eos_token="<|endoftext|>")
    llm = load(write_gguf(models["qwen2"], tokenizer, tmp_path / "base.gguf", "q8_0"))
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    for token in ("<|im_end|>", "<|endoftext|>"):
        assert llama_cpp.llama_vocab_is_eog(vocab, tokenizer.convert_tokens_to_ids(token)), token
    assert not llama_cpp.llama_vocab_is_eog(vocab, tokenizer.convert_tokens_to_ids("<|im_start|>"))


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_llama_cpp_lora_equals_the_merged_model(models, tiny_tokenizer, tmp_path, arch):
    model = models[arch]
    adapted = peft_on(model, use_rslora=True)
    base_file = write_gguf(model, tiny_tokenizer, tmp_path / "base.gguf", "f32")
    lora_file = write_lora_gguf(adapted, model.config, tmp_path / "lora.gguf")
    merged = copy.deepcopy(adapted).merge_and_unload().eval()
    llm = load(base_file, lora=lora_file)
    for text in TEXTS:
        ids = tiny_tokenizer(text)["input_ids"]
        want = hf_logits(merged, ids)
        assert np.abs(want - hf_logits(model, ids)).max() > 0.1 * want.std()  # the adapter changes the answer
        np.testing.assert_allclose(cpp_logits(llm, ids), want, atol=1e-4 * want.std(), rtol=0)


def test_llama_cpp_tokenizes_like_the_real_qwen2_tokenizer(qwen_tokenizer, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    llm = load(write_gguf(model, qwen_tokenizer, tmp_path / "qwen.gguf", "f16"))
    for text in TEXTS + ["  indented\n\tcode 3.14159 and 12345678", "Qwen2是一个大型语言模型，擅长中文。Don't stop!"]:
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == qwen_tokenizer(text)["input_ids"]
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_is_eog(vocab, qwen_tokenizer.convert_tokens_to_ids("<|im_end|>"))
