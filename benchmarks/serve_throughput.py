"""`qwentune serve` throughput: generated tokens/s at 1 and at N concurrent clients, against answering the same
requests one at a time with plain generate, all in one run.

    python benchmarks/serve_throughput.py                      # embedded SmolLM2-135M-Instruct, 16 questions
    python benchmarks/serve_throughput.py --questions 32 --max-tokens 128 --repeats 5 --clients 16

one at a time: generate.generate_batch on one conversation per call (one model.generate each), no server.
server, 1 client: the same requests through the HTTP API with the openai client, one after another.
server, N clients: the same requests from N client threads at once; the server batches those waiting.
The model is loaded once (fp32 unless the CPU has native bf16: the precision qwentune picks) with a LoRA
adapter (r 8, every linear layer, random weights) and every request asks `finetuned` (the adapter on), greedy,
for up to --max-tokens tokens: requests that stop early at the end-of-turn token count only what they generated.
Modes take turns within each repeat, so a slow spell of a shared machine falls on all of them; the table gives
each mode's median over the repeats with its min-max, and the speed-up against one at a time per repeat.
The client threads run in this process, beside the server: on a small CPU they take a little of its time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_speed import REPO, random_adapter  # noqa: E402  (the same random LoRA adapter)


def one_at_a_time(loaded, conversations, settings) -> tuple[float, int, list[str]]:
    from qwentune.inference.generate import generate_batch

    started = time.perf_counter()
    answers = [generate_batch(loaded, [c], settings)[0] for c in conversations]
    return time.perf_counter() - started, sum(a.new_tokens for a in answers), [a.text for a in answers]


def through_server(client, conversations, max_tokens: int, clients: int) -> tuple[float, int, list[str]]:
    def ask(messages):
        answer = client.chat.completions.create(model="finetuned", messages=messages, max_tokens=max_tokens,
                                                temperature=0)
        return answer.usage.completion_tokens, answer.choices[0].message.content

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(ask, conversations))
    return time.perf_counter() - started, sum(t for t, _ in results), [text for _, text in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", help="a local model directory (default: the embedded SmolLM2, converted)")
    parser.add_argument("--questions-file", default=str(REPO / "test_questions.json"))
    parser.add_argument("--questions", type=int, default=16, help="how many of the file's questions to ask")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import openai
    import torch

    from qwentune.apps.serve import InThread, bind, create_app, served_names
    from qwentune.apps.serve_requests import Served
    from qwentune.config import GenerationConfig
    from qwentune.inference.batching import Batcher
    from qwentune.inference.context import model_positions
    from qwentune.inference.prompts import read_questions
    from qwentune.models.load import load_for_inference

    base = args.base_model
    if base is None:
        from qwentune.models.gguf_source import converted_model_dir, embedded_demo_gguf

        base = str(converted_model_dir(embedded_demo_gguf()))
    conversations = [q.messages() for q in read_questions(args.questions_file)][:args.questions]
    settings = GenerationConfig(max_new_tokens=args.max_tokens, do_sample=False, repetition_penalty=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        random_adapter(base, Path(tmp) / "adapter")
        loaded = load_for_inference(base, str(Path(tmp) / "adapter"), log=lambda *a: None)
    served = Served(served_names(loaded, base, None), loaded.tokenizer, settings, model_positions(loaded.model))
    batcher = Batcher(loaded, settings, max_waiting=4 * args.clients, max_batch_size=args.clients).start()
    modes = {"one at a time (generate)": None, "server, 1 client": 1, f"server, {args.clients} clients": args.clients}
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in modes}
    same: dict[str, list[int]] = {name: [] for name in modes}
    batched = {name: [0, 0] for name in modes}  # rows, batches the server ran for each mode
    with InThread(create_app(served, batcher), bind("127.0.0.1", 0)) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600)
        through_server(client, conversations[:2], 4, 2)  # warm up (first calls allocate)
        for repeat in range(args.repeats):
            reference = None
            for name, clients in modes.items():
                if clients is None:
                    seconds, tokens, texts = one_at_a_time(loaded, conversations, settings)
                    reference = texts
                else:
                    before = dict(batcher.stats)
                    seconds, tokens, texts = through_server(client, conversations, args.max_tokens, clients)
                    batched[name][0] += batcher.stats["rows"] - before["rows"]
                    batched[name][1] += batcher.stats["batches"] - before["batches"]
                runs[name].append((seconds, tokens))
                same[name].append(sum(a == b for a, b in zip(texts, reference)))
                print(f"repeat {repeat + 1}: {name}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s",
                      file=sys.stderr)
    batcher.close(timeout=60)

    print(f"model {base} ({loaded.description['dtype']}, {torch.get_num_threads()} threads); {len(conversations)} "
          f"requests to 'finetuned', up to {args.max_tokens} tokens each, greedy; {args.repeats} repeats")
    print(f"{'mode':<28}{'tokens/s (median)':>18}{'min-max':>16}{'x one at a time':>18}{'same answers':>14}")
    alone = [tokens / seconds for seconds, tokens in runs["one at a time (generate)"]]
    summary = {}
    for name, results in runs.items():
        speeds = [tokens / seconds for seconds, tokens in results]
        ratios = [s / a for s, a in zip(speeds, alone)]
        summary[name] = {"tokens_per_s": speeds, "ratio": ratios, "same_answers": same[name]}
        print(f"{name:<28}{statistics.median(speeds):>18.1f}{f'{min(speeds):.1f}-{max(speeds):.1f}':>16}"
              f"{f'{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})':>18}"
              f"{f'{min(same[name])}/{len(conversations)}':>14}")
    for name, (rows, batches) in batched.items():
        if batches:
            print(f"{name}: {batches} batches, {rows / batches:.1f} requests each on average")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
