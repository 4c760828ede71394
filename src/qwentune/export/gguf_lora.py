"""The LoRA adapter alone as a GGUF LoRA file, for llama.cpp's --lora and Ollama's ADAPTER (on the base model's GGUF).

Laid out as llama.cpp's convert_lora_to_gguf.py does and llama-adapter.cpp reads: general.type "adapter",
adapter.type "lora", adapter.lora.alpha, and for each adapted weight `<gguf name>.lora_a` (PEFT's lora_A,
(r, in_features)) and `<gguf name>.lora_b` (PEFT's lora_B, (out_features, r)); for LLAMA the rows of q/k lora_b are
permuted like the base weights. llama.cpp computes W x + (alpha / r) * B A x with r the rank of each pair, so
PEFT's scaling carries over exactly: plain LoRA as it is (alpha / r); rsLoRA (alpha / sqrt(r)), rank_pattern and
alpha_pattern by writing one alpha and folding each module's remaining factor into its lora_b.
Stored in F32: an adapter is a few MB, and F32 keeps it exactly as trained (convert_lora_to_gguf.py's default too).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import gguf
import numpy as np

from ..errors import UserError
from ..fsutil import atomic_output_file, read_json_object
from .gguf import architecture_of, permute_for_rope

PREFIX = "base_model.model."


def _adapter_parts(adapter) -> tuple[dict, dict[str, np.ndarray], str]:
    """(LoRA config as a dict, PEFT state dict as float32 arrays, a name) of a PeftModel or an adapter directory."""
    if hasattr(adapter, "peft_config"):  # a PeftModel in memory
        from peft import get_peft_model_state_dict

        active = adapter.active_adapter
        config = adapter.peft_config[active].to_dict()
        state = get_peft_model_state_dict(adapter, adapter_name=active)
        name = Path(str(getattr(adapter.peft_config[active], "base_model_name_or_path", "") or "adapter")).name
    else:
        directory = Path(adapter)
        config = read_json_object(directory / "adapter_config.json",
                                  "save the adapter again (PEFT's save_pretrained writes it).")
        weights = directory / "adapter_model.safetensors"
        if weights.is_file():
            from safetensors.torch import load_file

            state = load_file(str(weights))
        elif (directory / "adapter_model.bin").is_file():
            import torch

            state = torch.load(directory / "adapter_model.bin", map_location="cpu", weights_only=True)
        else:
            raise UserError(f"{directory}: no adapter_model.safetensors; give a PEFT adapter directory.")
        name = directory.name
    return config, {key: value.detach().float().cpu().numpy() for key, value in state.items()}, name


def _check_expressible(config: dict, keys) -> None:
    """UserError for what a GGUF LoRA cannot hold: another PEFT method, DoRA's magnitude vectors, trained biases,
    fully trained modules (modules_to_save) and adapted embeddings."""
    kind = config.get("peft_type", "LORA")
    kind = str(getattr(kind, "value", kind))  # a PeftType enum in memory, a string in adapter_config.json
    if kind.upper() != "LORA":
        raise UserError(f"GGUF LoRA export: the adapter is {kind}, not LoRA; llama.cpp loads LoRA "
                        f"adapters only: export the merged model instead.")
    if config.get("use_dora"):
        raise UserError("GGUF LoRA export: the adapter is DoRA, whose magnitude vectors llama.cpp's LoRA cannot "
                        "apply; export the merged model instead.")
    extra = sorted(k for k in keys if ".lora_A." not in k and ".lora_B." not in k)
    if extra or config.get("bias", "none") != "none":
        what = extra[0] if extra else f"bias='{config.get('bias')}'"
        raise UserError(f"GGUF LoRA export: the adapter also trains {what} (biases, modules_to_save or embeddings), "
                        f"which a llama.cpp LoRA file cannot hold; export the merged model instead.")


def _scalings(config: dict, modules: dict[str, int]) -> dict[str, float]:
    """PEFT's scaling of each adapted module (name -> its rank), as PEFT computes it (LoraModel._create_and_replace)."""
    from peft.utils.other import get_pattern_key

    alpha_pattern = config.get("alpha_pattern") or {}
    out = {}
    for module, rank in modules.items():
        alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), config["lora_alpha"])
        out[module] = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return out


def write_lora_gguf(peft_model_or_adapter_dir, base_config, path: str | os.PathLike) -> Path:
    """Write the adapter (a PeftModel, or a directory with adapter_config.json + adapter_model.safetensors) of a
    base model whose transformers config is `base_config` as a GGUF LoRA at `path` (atomically); returns path.

    Raises UserError for an architecture GGUF export does not write, and for adapters llama.cpp cannot apply
    (_check_expressible), or an adapter on the output head of a base with tied embeddings (llama.cpp has no
    output tensor there to adapt).
    """
    arch, permute = architecture_of(base_config)
    config, state, name = _adapter_parts(peft_model_or_adapter_dir)
    _check_expressible(config, state)
    names = gguf.get_tensor_name_map(arch, base_config.num_hidden_layers)
    pairs = {}
    for key in state:
        if ".lora_A." in key:
            module = key.removeprefix(PREFIX).split(".lora_A.")[0]
            pairs[module] = (state[key], state[key.replace(".lora_A.", ".lora_B.")])
    if not pairs:
        raise UserError("GGUF LoRA export: the adapter holds no LoRA weights; check the adapter path.")
    scalings = _scalings(config, {module: a.shape[0] for module, (a, _) in pairs.items()})
    first = next(iter(pairs))
    alpha = scalings[first] * pairs[first][0].shape[0]  # llama.cpp applies alpha / r

    path = Path(path)
    with atomic_output_file(path, "wb", option="the GGUF path") as handle:
        writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
            writer.add_name(name)
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            for module, (lora_a, lora_b) in pairs.items():
                target = names.get_name(module + ".weight", try_suffixes=(".weight",))
                if target is None:
                    raise UserError(f"GGUF LoRA export: the adapted module {module} has no llama.cpp name; adapt "
                                    f"only the attention and MLP projections.")
                if target == "output.weight" and getattr(base_config, "tie_word_embeddings", False):
                    raise UserError("GGUF LoRA export: the adapter adapts lm_head, which a base model with tied "
                                    "embeddings has no separate tensor for in llama.cpp; export the merged model.")
                rank = lora_a.shape[0]
                factor = scalings[module] * rank / alpha  # 1.0 unless rank or alpha differs between modules
                lora_b = lora_b * np.float32(factor) if not math.isclose(factor, 1.0, rel_tol=1e-6) else lora_b
                if permute and target.endswith("attn_q.weight"):
                    lora_b = permute_for_rope(lora_b, base_config.num_attention_heads)
                elif permute and target.endswith("attn_k.weight"):
                    lora_b = permute_for_rope(lora_b, base_config.num_key_value_heads)
                writer.add_tensor(target + ".lora_a", np.ascontiguousarray(lora_a, dtype=np.float32))
                writer.add_tensor(target + ".lora_b", np.ascontiguousarray(lora_b, dtype=np.float32))
            writer.write_header_to_file(path=Path(handle.name))
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return path
