"""Write a merged model as one GGUF file for llama.cpp and Ollama, with gguf-py (the `gguf` package: its writer,
tensor-name maps and quantizers); no llama.cpp build is needed to write.

What is written follows llama.cpp's own converter (convert_hf_to_gguf.py) and quantizer (llama-quant.cpp):
- 1-D tensors (norms, biases) stay F32: llama.cpp's kernels expect them so.
- Every 2-D weight gets the requested type; one whose row length is not a multiple of the type's block size
  (32 for q8_0 / q4_0 / q4_1 / q5_0 / q5_1) falls back to F16, as convert_hf_to_gguf.py does.
- In the 4- and 5-bit files the output projection (the token embedding when the two are tied, since it then is the
  output) is Q8_0: llama-quantize gives it Q6_K, a K-quant gguf-py has no quantizer for, and Q8_0 is the nearest
  type it can write (the embedded SmolLM2 Q4_1 file does the same). q8_0 keeps them at Q8_0 like the converter.
- Tied embeddings: no output.weight; llama.cpp then uses token_embd.weight for the output, and transformers' GGUF
  reader ties the two when output.weight is absent.
- Llama's q/k rows are permuted for llama.cpp's non-NeoX rope (permute_for_rope); Qwen2 and Qwen3 use NeoX rope
  and are written as they are.

K-quants (q4_k_m, q5_k_m, q6_k ...): gguf-py 0.19 can read them but has no quantizer (only dequantize_blocks),
so they are refused with the types we write; llama.cpp's llama-quantize can turn our f16 / q8_0 file into them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ..errors import UserError
from ..fsutil import atomic_output_file
from .gguf_tokenizer import add_tokenizer

Q = gguf.GGMLQuantizationType
# Name -> tensor type of the 2-D weights; with the llama.cpp file type each gives (general.file_type).
GGUF_TYPES: dict[str, gguf.GGMLQuantizationType] = {
    "f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0,
    "q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q5_0": Q.Q5_0, "q5_1": Q.Q5_1,
}
_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
    "q5_0": gguf.LlamaFileType.MOSTLY_Q5_0, "q5_1": gguf.LlamaFileType.MOSTLY_Q5_1,
}
_LOW_BIT = {Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1}

# transformers model_type -> (its causal LM class, llama.cpp architecture, whether q/k rows need permute_for_rope).
ARCHITECTURES: dict[str, tuple[str, gguf.MODEL_ARCH, bool]] = {
    "qwen2": ("Qwen2ForCausalLM", gguf.MODEL_ARCH.QWEN2, False),
    "qwen3": ("Qwen3ForCausalLM", gguf.MODEL_ARCH.QWEN3, False),
    "llama": ("LlamaForCausalLM", gguf.MODEL_ARCH.LLAMA, True),
}

def check_gguf_type(gguf_type: str) -> gguf.GGMLQuantizationType:
    """The tensor type for a --gguf_type name; UserError for a K-quant or an unknown name, listing ours."""
    key = str(gguf_type).lower()
    if key in GGUF_TYPES:
        return GGUF_TYPES[key]
    ours = ", ".join(GGUF_TYPES)
    if "_k" in key or key.startswith("iq"):
        raise UserError(f"--gguf_type {gguf_type}: gguf-py has no quantizer for K-quants and i-quants; qwentune writes "
                        f"{ours} with it, and K-quants (q4_k_m, ...) through llama.cpp with the llama extra; for "
                        f"i-quants run llama.cpp's llama-quantize with an importance matrix on the f16 file.")
    raise UserError(f"--gguf_type {gguf_type}: not a type qwentune writes; choose one of {ours}, or a K-quant "
                    f"(q4_k_m, q5_k_m, q6_k, ...: written through llama.cpp with the llama extra).")


def architecture_of(config, class_name: str | None = None) -> tuple[gguf.MODEL_ARCH, bool]:
    """(llama.cpp architecture, permute q/k) for a transformers config (by its model_type, which a model built
    from a config also has); UserError naming an unsupported architecture (`class_name`, else the config's
    architectures or model_type) and the ones supported."""
    if config.model_type in ARCHITECTURES:
        return ARCHITECTURES[config.model_type][1:]
    found = class_name or (getattr(config, "architectures", None) or [config.model_type])[0]
    raise UserError(f"GGUF export: the architecture {found} is not supported; qwentune writes "
                    f"{', '.join(entry[0] for entry in ARCHITECTURES.values())} models.")

def permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows (shape (n_head * head_dim, ...) or a bias (n_head * head_dim,)) from transformers'
    rotate-half rope layout to the interleaved pairs llama.cpp's non-NeoX rope (LLAMA arch) rotates: within each
    head, row i of the first half and row i of the second half become rows 2i and 2i + 1."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor as it goes into the file: GGUF name, source name in the state dict, stored type."""

    name: str
    source: str
    qtype: gguf.GGMLQuantizationType


def stored_type(name: str, shape: tuple[int, ...], requested: gguf.GGMLQuantizationType,
                output_name: str) -> gguf.GGMLQuantizationType:
    """The type tensor `name` (GGUF name, logical shape) is stored in for a file of type `requested`
    (see the module docstring); `output_name` is the tensor that serves as output (output.weight, or
    token_embd.weight when tied)."""
    if len(shape) < 2 or not name.endswith(".weight") or name.endswith("_norm.weight"):
        return Q.F32
    qtype = Q.Q8_0 if requested in _LOW_BIT and name == output_name else requested
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:
        return Q.F16  # convert_hf_to_gguf.py's fallback for a row the blocks do not divide
    return qtype


def _stored(array: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """`array` (float32) in the stored form: float32, float16, or the uint8 blocks of gguf.quants."""
    return gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)


def _stored_layout(shape: tuple[int, ...], qtype) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, nbytes) of _stored's result, without quantizing: the header is written before the data."""
    if qtype == Q.F32:
        dtype = np.dtype(np.float32)
    elif qtype == Q.F16:
        dtype = np.dtype(np.float16)
    else:
        dtype, shape = np.dtype(np.uint8), gguf.quant_shape_to_byte_shape(shape, qtype)
    return tuple(shape), dtype, int(np.prod(shape)) * dtype.itemsize


def _weights(model, permute: bool) -> dict[str, np.ndarray]:
    """The model's tensors as float32 numpy arrays in llama.cpp's layout (q/k permuted for LLAMA), by transformers
    name; a tied lm_head is left out (llama.cpp reuses token_embd.weight)."""
    config = model.config
    tied = model.get_output_embeddings() is not None and \
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    out = {}
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        array = tensor.detach().float().cpu().numpy()
        if permute and ".self_attn.q_proj." in name:
            array = permute_for_rope(array, config.num_attention_heads)
        elif permute and ".self_attn.k_proj." in name:
            array = permute_for_rope(array, config.num_key_value_heads)
        out[name] = array
    return out


def _add_hyperparameters(writer: gguf.GGUFWriter, config, rows: int) -> None:
    """The architecture's keys llama.cpp reads (UserError for a rope scaling it would not reproduce)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(rows)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:  # Qwen3 sets head_dim on its own
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope.get("original_max_position_embeddings")
                                                 or config.max_position_embeddings))
    elif kind not in (None, "default"):
        raise UserError(f"GGUF export: the model's rope scaling '{kind}' is not written by qwentune (default, linear "
                        f"and yarn are); merge with `qwentune infer --merge DIR` and convert DIR with llama.cpp's convert_hf_to_gguf.py.")


def check_writable(model, tokenizer) -> None:
    """UserError now, before minutes of work, for whatever write_gguf would refuse in the model's architecture, its
    rope scaling or its tokenizer: the file's key-values are built in memory and dropped (no tensor is touched)."""
    arch, _ = architecture_of(model.config, type(model).__name__)
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])
    try:
        rows = model.get_input_embeddings().weight.shape[0]
        _add_hyperparameters(writer, model.config, rows)
        add_tokenizer(writer, tokenizer, rows)
    finally:
        writer.close()


def write_gguf(model, tokenizer, path: str | os.PathLike, gguf_type: str, *, name: str | None = None) -> Path:
    """Write `model` (a transformers causal LM, merged, weights in memory, any float dtype) and `tokenizer` (its
    fast HF tokenizer) as one GGUF file at `path` of type `gguf_type` (a GGUF_TYPES name); returns path.

    Written under a temporary name and renamed when complete: on any error nothing is left at `path`. Memory: one
    tensor at a time is converted (the header, with every tensor's type and size, is computed first). Raises
    UserError for a type we do not write, an architecture or rope scaling we do not write, a tokenizer that is not
    byte-level BPE or whose pre-tokenizer llama.cpp has no name for, and a tokenizer larger than the embedding.
    """
    requested = check_gguf_type(gguf_type)
    config = model.config
    arch, permute = architecture_of(config, type(model).__name__)
    weights = _weights(model, permute)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    mapped = {}
    for source in weights:
        target = names.get_name(source, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise UserError(f"GGUF export: the model's tensor {source} has no llama.cpp "
                            f"{gguf.MODEL_ARCH_NAMES[arch]} name; this model variant cannot be written as GGUF.")
        mapped[target] = source
    output_name = "output.weight" if "output.weight" in mapped else "token_embd.weight"
    plan = [PlannedTensor(target, source, stored_type(target, weights[source].shape, requested, output_name))
            for target, source in mapped.items()]
    rows = model.get_input_embeddings().weight.shape[0]

    path = Path(path)
    with atomic_output_file(path, "wb", option="the GGUF path") as handle:
        writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])
        try:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(name or Path(str(getattr(config, "_name_or_path", "") or path.stem)).name or path.stem)
            writer.add_file_type(_FILE_TYPES[str(gguf_type).lower()])
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            _add_hyperparameters(writer, config, rows)
            add_tokenizer(writer, tokenizer, rows)
            for item in plan:
                shape, dtype, nbytes = _stored_layout(weights[item.source].shape, item.qtype)
                writer.add_tensor_info(item.name, shape, dtype, nbytes, raw_dtype=item.qtype)
            # gguf-py opens the file itself: the temporary one, so the atomic rename covers what it writes.
            writer.write_header_to_file(path=Path(handle.name))
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for item in plan:  # in header order; each converted only now, so one tensor at a time is held twice
                writer.write_tensor_data(_stored(weights.pop(item.source), item.qtype))
        finally:
            writer.close()
    return path
