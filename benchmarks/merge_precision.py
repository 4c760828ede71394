"""Does a merged model stored in bf16 or fp16 still answer as base + adapter? (issue 19)

The base weights are first rounded to bf16, as Qwen's own checkpoints are stored, so W is exact in bf16 and
round(W + BA) falls back to W wherever BA is below half a bf16 step. The reference is the adapter on that base in
fp32; each merged copy is W + BA rounded to the storage dtype and computed in fp32 (the rounding alone is measured).

    python benchmarks/merge_precision.py --adapter results/demo/adapter
"""

from __future__ import annotations

import argparse
import sys

import torch

from qwentune.apps.demo import DEMO_QUESTIONS
from qwentune.errors import UserError
from qwentune.export.verify import agreement, transformers_replies
from qwentune.inference.prompts import read_questions
from qwentune.models.load import LoadedModel, load_for_inference
from qwentune.models.precision import choose_precision


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", required=True, help="an adapter or training output directory")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1")
    try:
        loaded = load_for_inference(args.base_model, args.adapter, choose_precision(bf16=False, fp16=False),
                                    log=lambda message: None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with torch.no_grad():
        for name, parameter in loaded.model.named_parameters():
            if "lora_" not in name:
                parameter.copy_(parameter.to(torch.bfloat16).float())
    conversations = [q.messages() for q in read_questions(DEMO_QUESTIONS)]
    reference = transformers_replies(loaded, conversations, args.max_new_tokens, "adapter on a bf16 base", True)
    merged = loaded.model.merge_and_unload()
    exact = {name: parameter.detach().clone() for name, parameter in merged.named_parameters()}
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        with torch.no_grad():
            for name, parameter in merged.named_parameters():
                parameter.copy_(exact[name].to(dtype).float())
        name = f"merged, stored {str(dtype).removeprefix('torch.')}"
        side = transformers_replies(LoadedModel(merged, loaded.tokenizer, False, {"kind": "merged"}), conversations,
                                    args.max_new_tokens, name, False)
        result = agreement(reference, side, loaded.tokenizer)
        print(f"{name}: {result.agreed}/{result.total} identical replies, same start {100 * result.same_start:.1f}%, "
              f"first difference: {result.first_difference or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
