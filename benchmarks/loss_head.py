"""Loss head: peak memory and time of the naive full-logits loss vs qwentune's chunked one.

    python benchmarks/loss_head.py                         # vocab 151,936, hidden 896 (Qwen2-0.5B), fp32
    python benchmarks/loss_head.py --lengths 1024 4096 --hidden 3584

Both compute the summed cross-entropy of `tokens` hidden states against a frozen output head
and its gradient with respect to the hidden states (what LoRA training needs), every position
labelled (the worst case for the lean head; in training it also skips the prompt positions).
naive: logits = hidden @ W.T, cross_entropy(logits.float()), backward.
qwentune: LinearCrossEntropySum (src/qwentune/training/loss.py).
Each measurement runs in its own process: memory is the peak RSS (CPU; Linux, reset through
/proc/self/clear_refs) or peak allocated (CUDA) above what the process held just before the
loss, i.e. the loss head's own memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MEASURE = r"""
import json, sys, time, torch
from qwentune.training.loss import LinearCrossEntropySum, head_blocks
mode, tokens, hidden_size, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
weight = torch.empty(vocab, hidden_size, device=device).normal_(0, 0.02)
hidden = torch.randn(tokens, hidden_size, device=device, requires_grad=True)
targets = torch.randint(0, vocab, (tokens,), device=device)
def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
def peak():
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return status_kb("VmHWM")
def current():
    if device == "cuda":
        return torch.cuda.memory_allocated()
    return status_kb("VmRSS")
def run():
    if mode == "naive":
        logits = hidden @ weight.T
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    else:
        loss = LinearCrossEntropySum.apply(hidden, weight, None, targets, *head_blocks(vocab, device, trained=False))
    loss.backward()
    return loss.item()
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
else:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: resets the peak RSS (VmHWM) to the current RSS
        f.write("5")
before = current()
started = time.perf_counter()
loss = run()
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - started
print(json.dumps({"loss": loss, "seconds": seconds, "extra_bytes": peak() - before,
                  "grad_norm": hidden.grad.norm().item()}))
"""


def measure(mode: str, tokens: int, hidden: int, vocab: int) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, mode, str(tokens), str(hidden), str(vocab)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{mode} at {tokens} tokens failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--vocab", type=int, default=151_936)
    args = parser.parse_args()
    print(f"vocab {args.vocab:,}, hidden {args.hidden}, fp32; memory above the process's baseline")
    print(f"{'tokens':>6} {'naive GB':>9} {'ours GB':>8} {'memory ratio':>12} {'naive s':>8} {'ours s':>7} {'same loss':>9}")
    started = time.perf_counter()
    for tokens in args.lengths:
        naive, ours = (measure(mode, tokens, args.hidden, args.vocab) for mode in ("naive", "qwentune"))
        same = abs(naive["loss"] - ours["loss"]) <= 1e-4 * abs(naive["loss"]) and \
            abs(naive["grad_norm"] - ours["grad_norm"]) <= 1e-4 * naive["grad_norm"]
        print(f"{tokens:6d} {naive['extra_bytes'] / 1e9:9.2f} {ours['extra_bytes'] / 1e9:8.2f} "
              f"{naive['extra_bytes'] / max(ours['extra_bytes'], 1):11.1f}x {naive['seconds']:8.2f} "
              f"{ours['seconds']:7.2f} {'yes' if same else 'NO':>9}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
