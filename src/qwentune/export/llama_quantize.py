"""K-quants (q4_k_m and its kin) through llama.cpp's own quantizer, in this process via llama-cpp-python.

gguf-py can dequantize K-quants but has no quantizer for them, and writing one by hand would be a second
implementation of llama.cpp's (with its importance-free k-means-like search per super-block and its choice
of which tensors get more bits in each mix). llama.cpp's llama_model_quantize is the reference, and
llama-cpp-python (the `llama` extra, which qwentune verify uses anyway) exposes it: a GGUF file written
by gguf-py in f32 goes in, the quantized file comes out, exactly as `llama-quantize in.gguf out.gguf Q4_K_M`.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_output_file

# Our names -> llama.cpp's file types (llama_cpp.LLAMA_FTYPE_MOSTLY_<NAME>), the mixes llama-quantize offers.
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
LLAMA_EXTRA_HINT = 'pip install -e ".[llama]" (llama-cpp-python; pip compiles llama.cpp: minutes)'


def check_k_quant(name: str) -> None:
    """UserError when `name` (a K_QUANTS type) cannot be written here: llama-cpp-python is not installed."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise UserError(f"--gguf_type {name}: K-quants are written by llama.cpp's own quantizer, which qwentune runs "
                        f"through llama-cpp-python; install it with {LLAMA_EXTRA_HINT}, or choose q8_0, q5_0 or q4_0.")


def quantize_gguf(source: str | os.PathLike, target: str | os.PathLike, name: str) -> Path:
    """llama.cpp's quantization of the GGUF model file `source` (best f32) into `target` as K_QUANTS type `name`,
    written atomically; returns target. RuntimeError when llama.cpp reports a failure (its log says why)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name.upper()}")
    params.nthread = os.cpu_count() or 1
    target = Path(target)
    # llama-cpp-python passes llama.cpp's log to this logger (llama_cpp/_logger.py): its errors only, not the
    # hundred lines of tensor-by-tensor progress.
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with atomic_output_file(target, "wb", option="the GGUF path") as handle:
            handle.close()  # llama.cpp writes the temporary file by its name; the rename then covers what it wrote
            status = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(handle.name),
                                                    ctypes.byref(params))
            if status != 0:
                raise RuntimeError(f"llama.cpp's llama_model_quantize returned {status} for {source} -> {name}")
    finally:
        logger.setLevel(level)
    return target
