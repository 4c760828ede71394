"""Models: where one comes from (source, hub, gguf_source), the precision it runs in, its tokenizer
and chat template, the one loading path (load), and the LoRA / QLoRA wrap (lora; lora_precision keeps the
adapter's output on 16-bit base weights).

May import: config, errors, fsutil, torch, transformers, peft, huggingface_hub, gguf. Not data/,
training/ or anything above.
"""

import contextlib
import sys
import warnings


def import_peft():
    """Import peft with bitsandbytes hidden, unless one of them is imported already; returns peft.

    peft (0.21) imports bitsandbytes in peft/helpers.py whenever it is installed, though its LoRA code
    imports it lazily. bitsandbytes then loads torch's compiler (3.3 s more per command, measured) and,
    on CPUs with avx512_bf16, logs that an optional `kernels` package is missing. Hidden, peft's import
    sets its module-level `bnb` to None and caches nothing, so when 4-bit is asked for later in the same
    process, `import bitsandbytes` (models/load.py) and peft's 4-bit LoRA layers work as usual.
    """
    if "peft" not in sys.modules and "bitsandbytes" not in sys.modules:
        sys.modules["bitsandbytes"] = None  # `import bitsandbytes` raises ImportError while this is set
        try:
            import peft  # noqa: F401
        finally:
            if "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
                del sys.modules["bitsandbytes"]
    import peft

    return peft


@contextlib.contextmanager
def peft_checkpointing_probe_quiet():
    """Run the block without the FutureWarning peft's model wrappers raise on transformers 5.

    peft (0.21) reads `model.is_gradient_checkpointing`, which transformers 5 deprecated in favour of
    `is_activation_checkpointing` (removed in v6): a warning about peft's code, not the user's, once per
    wrapped model. Only that message is silenced, and only inside the block.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
