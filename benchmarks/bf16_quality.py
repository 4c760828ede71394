"""bf16 training quality on any CPU: train_throughput.py's job in bf16, its adapter evaluated in fp32 and bf16.

    python benchmarks/bf16_quality.py                   # qwentune as it is
    python benchmarks/bf16_quality.py --peft-order      # as before issue 18: PEFT adds the LoRA output after rounding
    python benchmarks/bf16_quality.py --fp32            # the same job in fp32, for reference

On a CPU without native bf16 (no avx512_bf16 / amx_bf16) torch's bf16 matrix products take a
fallback path that ran at 0.1-0.4 GFLOP/s here (fp32: 50-77), too slow for a training job. The
numerics of native bf16 hardware (oneDNN's avx512_bf16 kernels, cuBLAS) are: bf16 inputs, products
summed in fp32, one rounding of the result (plus C, for addmm) to bf16. This script runs every
bf16 matrix product that way through fp32 products (a TorchDispatchMode), which torch's own
fallback matches on all but 0.02% of elements (measured on 128 x 576 x 256). Everything else
(norms, attention, elementwise ops) runs in bf16 as it would natively. Seconds mean nothing here:
quality only. On a CPU with native bf16 the mode is not used (`--emulate never`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as job_of  # noqa: E402  (the same data, tokenization and held-out loss)


def bf16_products_summed_in_fp32():
    """A TorchDispatchMode computing mm / addmm / bmm / baddbmm (and in-place addmm_) on bf16 tensors as
    fp32 products of the bf16 values, rounded once to bf16: native bf16 GEMM numerics, at fp32 speed."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    products = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}

    class Bf16ProductsInFp32(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            bf16 = any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args)
            if not bf16 or (func not in products and func is not aten.addmm_.default):
                return func(*args, **kwargs)
            wide = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 else a for a in args]
            if func is aten.addmm_.default:
                return args[0].copy_(aten.addmm.default(*wide, **kwargs))
            return func(*wide, **kwargs).to(torch.bfloat16)

    return Bf16ProductsInFp32()


def use_peft_order() -> None:
    """qwentune before issue 18 on bf16 weights: PEFT's LoRA forward (the fused CPU kernel did not take fp32
    adapters on bf16 weights, so PEFT's forward ran)."""
    import qwentune.models.lora as lora
    import qwentune.training.speedups.fused_lora as fused

    lora.add_lora_inside_base_multiply = lambda model: 0
    fused._fast_path_adapter = lambda *args: None
    fused.lora_forward_in_accumulator = lambda layer, x, *args, **kwargs: type(layer).forward(layer, x, *args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peft-order", action="store_true", help="PEFT's LoRA forward, as before issue 18")
    parser.add_argument("--fp32", action="store_true", help="train in fp32 instead")
    parser.add_argument("--emulate", choices=("auto", "always", "never"), default="auto",
                        help="fp32 products for bf16 GEMMs: auto = on CPUs without native bf16")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    for option, value in (("--rows", args.rows), ("--eval-rows", args.eval_rows), ("--max-length", args.max_length)):
        if value < 1:
            parser.error(f"{option} must be at least 1 (got {value})")  # exit 2, before minutes of training

    import os

    os.environ["QWENTUNE_CPU_BF16"] = "0" if args.fp32 else "1"
    from qwentune.errors import UserError
    from qwentune.models.precision import _cpu_flags_have_bf16
    from qwentune.training.train import train

    if args.peft_order:
        use_peft_order()
    emulate = not args.fp32 and (args.emulate == "always" or (args.emulate == "auto" and not _cpu_flags_have_bf16()))
    with tempfile.TemporaryDirectory(prefix="qwentune-bf16-") as tmp:
        work = Path(tmp)
        train_file, eval_file, data = job_of.prepare_data(Namespace(data=None, rows=args.rows, eval_rows=args.eval_rows),
                                                          work)
        job = {"model": "embedded:SmolLM2-135M-Instruct", "train_file": train_file, "eval_file": eval_file,
               "max_length": args.max_length, "batch": 4, "accumulation": 1, "epochs": 1, "learning_rate": 2e-4,
               "work": str(work)}
        cfg = job_of.job_config(job, work)
        mode = bf16_products_summed_in_fp32() if emulate else None
        if mode is not None:
            mode.__enter__()
        try:
            result = train(cfg, log=lambda *a: None)
        except UserError as exc:
            sys.exit(f"bf16_quality: {exc}")
        examples, _ = job_of.tokenized(cfg, eval_file)
        losses = job_of.held_out_losses(result.model, examples)  # the bf16 figure before the in-place upcast
        if mode is not None:
            mode.__exit__(None, None, None)
    variant = "fp32" if args.fp32 else ("bf16, PEFT's LoRA order" if args.peft_order else "bf16, qwentune")
    figures = {"variant": variant, "precision": result.summary["precision"], "emulated_bf16_products": emulate,
               "data": data, **losses}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
