"""Load the base model on the right device in the right precision, and wrap it with LoRA / QLoRA.

Precision: the frozen base weights are loaded in the compute precision (bf16 where the
hardware has it, fp16 on older GPUs, fp32 otherwise) while PEFT keeps the small adapter
in fp32, and the Trainer runs under autocast. On a CPU with native bf16 (avx512_bf16 /
AMX) this is ~1.4x faster than fp32; on a CPU without it bf16 is emulated and slower,
so it is used there only when asked for explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Config
from .errors import UserError
from .fused_lora import use_fused_lora
from .fused_norm import use_fused_rms_norm
from .hub import is_local_reference, require_hub
from .lora_dropout import use_fast_lora_dropout

LOCAL_MODEL_HINT = "pass a local model directory as --model_name_or_path, or try `qwentune demo` (no model hub needed)."


@dataclass(frozen=True)
class Precision:
    device: str  # cuda, mps, npu or cpu
    dtype: torch.dtype  # of the frozen base weights
    bf16: bool  # mixed-precision flags for the Trainer
    fp16: bool

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[self.dtype]


def detect_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    try:
        import torch_npu  # noqa: F401  (Ascend; registers torch.npu)

        if torch.npu.is_available():
            return "npu"
    except ImportError:
        pass
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# Set to 1 or 0 to decide for this CPU instead of detecting (the test suite uses it to run the bf16
# path on a CPU without native bf16, where torch emulates it: the same numerics, slower).
CPU_BF16_OVERRIDE = "QWENTUNE_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions, where bf16 matmuls beat fp32 (~2.3x measured here).

    QWENTUNE_CPU_BF16=1 / 0 overrides the detection.
    """
    override = os.environ.get(CPU_BF16_OVERRIDE, "").strip()
    if override in ("0", "1"):
        return override == "1"
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or _cpu_flags_have_bf16()


def _cpu_flags_have_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(cfg: Config, device: str | None = None) -> Precision:
    device = device or detect_device()
    wants_bf16, wants_fp16 = cfg.training.bf16, cfg.training.fp16
    if device == "cuda":
        if wants_bf16 and torch.cuda.is_bf16_supported():
            return Precision(device, torch.bfloat16, True, False)
        if wants_bf16 or wants_fp16:  # e.g. a pre-Ampere card asked for bf16: fp16 is what it has
            return Precision(device, torch.float16, False, True)
        return Precision(device, torch.float32, False, False)
    if device == "npu" and (wants_bf16 or wants_fp16):
        return Precision(device, torch.bfloat16 if wants_bf16 else torch.float16, wants_bf16, wants_fp16)
    if device == "cpu" and wants_bf16 and cpu_has_native_bf16():
        return Precision(device, torch.bfloat16, True, False)
    return Precision(device, torch.float32, False, False)


def resolve_model_source(name: str) -> str:
    """A local directory as is; the embedded demo model or a .gguf file as its converted directory;
    a hub id if it is in the local cache or the hub is reachable."""
    from .gguf_convert import materialize

    name = materialize(name)
    if is_local_reference(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise UserError(f"{name}: model directory not found; check --model_name_or_path.")
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a model directory (no config.json); point --model_name_or_path at one.")
        return str(path)
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name
    except Exception:  # an id huggingface_hub rejects: let the hub check below report it
        pass
    require_hub(f"model '{name}'", LOCAL_MODEL_HINT)
    return name


def quantization_config(cfg: Config, precision: Precision):
    """NF4 with double quantization (the QLoRA recipe); None without use_4bit."""
    if not cfg.model.use_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError('model.use_4bit needs bitsandbytes: pip install -e ".[qlora]", or set use_4bit: false.') from None
    if precision.device == "mps":
        raise UserError("model.use_4bit is not supported on Apple MPS by bitsandbytes; set use_4bit: false.")
    from transformers import BitsAndBytesConfig

    compute = precision.dtype if precision.dtype != torch.float16 or precision.device == "cuda" else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def load_base_model(cfg: Config, precision: Precision):
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(cfg.model.model_name_or_path)
    quant = quantization_config(cfg, precision)
    device = precision.device
    if device == "cuda":  # one card per process under torchrun / accelerate launch
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=precision.dtype,
            quantization_config=quant,
            trust_remote_code=cfg.model.trust_remote_code,
            attn_implementation="sdpa",
            device_map={"": device} if quant is not None else None,
        )
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot load model '{source}' ({str(exc).splitlines()[0]}); check --model_name_or_path.") from None
    if quant is None:
        model.to(device)
    model.config.use_cache = False  # no KV cache while training (and padding-free packing needs it off)
    return model


def linear_module_names(model) -> list[str]:
    """Names (last component) of the Linear layers LoRA can target, output head excluded."""
    names = set()
    output_head = model.get_output_embeddings()
    for full_name, module in model.named_modules():
        if module is output_head:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def apply_lora(model, cfg: Config):
    """Wrap with a fresh LoRA adapter; the base weights are frozen (and prepared for k-bit when 4-bit)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = cfg.lora
    available = linear_module_names(model)
    targets: str | list[str]
    if lora.lora_target_modules == ["all-linear"]:
        targets = available  # every attention and MLP projection, found from this model
    else:
        missing = [name for name in lora.lora_target_modules if name not in available]
        if missing:
            raise UserError(
                f"lora.lora_target_modules: {', '.join(missing)} not in this model; its linear layers are "
                f"{', '.join(available)} (or use all-linear)."
            )
        targets = lora.lora_target_modules
    if cfg.model.use_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_config = LoraConfig(
        r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, target_modules=targets,
        use_rslora=lora.use_rslora, use_dora=lora.use_dora, bias="none", task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_config)
    if next(model.parameters()).device.type == "cpu":
        # Elementwise work is a large share of a CPU step (measured; see benchmarks/README.md).
        # These keep PEFT's results and parameters; they are measured on CPU only.
        use_fast_lora_dropout(model)  # torch's CPU dropout was a quarter of the step time
        use_fused_lora(model)
        use_fused_rms_norm(model)
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel() * (2 if type(param).__name__ == "Params4bit" else 1)
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total
