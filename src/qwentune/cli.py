"""`qwentune <command>`: one entry point; the scripts in data/ and scripts/ call it too.

Mistakes a user can fix (UserError) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback

from .config import KEY_TO_SECTION, load_config, parse_override_args
from .errors import EXIT_BUG, EXIT_USER_ERROR, UserError, did_you_mean
from .fsutil import check_output_file, hold_output
from .models.hub import HUBS, select_hub

# Options of `preprocess`: the data section, plus where the tokenizer comes from and the seed.
PREPROCESS_KEYS = [k for k, s in KEY_TO_SECTION.items() if s == "data"] + [
    "tokenizer_name", "model_name_or_path", "trust_remote_code", "hub", "seed"]


def _config_with_options(config_path: str | None, extra: list[str], allowed: list[str], command: str,
                         aliases: dict[str, str] | None = None):
    """Load the config, then apply `--key value` options restricted to `allowed` keys."""
    allowed = list(dict.fromkeys(allowed))  # each option named once in the message listing them
    pairs = []
    for name, text in parse_override_args(extra):
        name = (aliases or {}).get(name, name)
        key = name.split(".", 1)[-1]
        if key not in allowed:
            hint = did_you_mean(key, allowed, "--") or f" (options: {', '.join('--' + a for a in allowed)})."
            raise UserError(f"{command}: unknown option --{name}{hint}")
        pairs.append((name, text))
    cfg = load_config(config_path, pairs)
    select_hub(cfg.model.hub)  # hub ids of models, tokenizers and datasets come from there (models/hub.py)
    return cfg


def cmd_datasets(args: argparse.Namespace, extra: list[str]) -> None:
    from .data.registry import load_registry

    registry = load_registry(args.dataset_registry)
    width = max(map(len, registry))
    for name, entry in registry.items():
        where = entry.hub_id or entry.file
        if entry.modelscope_id:
            where += f" (ModelScope: {entry.modelscope_id})"
        print(f"{name:<{width}}  {entry.format:<10}  {where}\n{'':<{width}}  {entry.description}")


def cmd_download(args: argparse.Namespace, extra: list[str]) -> None:
    from tqdm import tqdm

    from .data.registry import DEFAULT_DATASETS, load_registry, unknown_dataset_error
    from .data.sources import download

    select_hub(args.hub)
    registry = load_registry(args.dataset_registry)
    names = args.datasets or DEFAULT_DATASETS
    for name in names:
        if name not in registry:
            raise unknown_dataset_error(name, registry)
    for name in tqdm(names, desc="datasets", unit="dataset"):
        path = download(registry[name], args.cache_dir, force=args.force)
        tqdm.write(f"{name}: {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


def cmd_preprocess(args: argparse.Namespace, extra: list[str]) -> None:
    from .data.preprocess import preprocess

    # In the seed's command --output_dir names the processed-data directory.
    cfg = _config_with_options(args.config, extra, PREPROCESS_KEYS + ["processed_dir"], "preprocess",
                               aliases={"output_dir": "processed_dir"})
    tokenizer = cfg.model.tokenizer_name or cfg.model.model_name_or_path
    with hold_output(cfg.data.processed_dir):  # preprocess refuses a directory it may not replace, first thing
        preprocess(cfg.data, tokenizer, cfg.data.processed_dir, seed=cfg.training.seed,
                   trust_remote_code=cfg.model.trust_remote_code)


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int | None:
    from .training.train import train

    cfg = _config_with_options(args.config, extra, list(KEY_TO_SECTION), "train")
    result = train(cfg)
    # Stopped by Ctrl-C / SIGTERM after saving a checkpoint: the shell's 128 + signal convention.
    return 128 + result.interrupted_by if result.interrupted_by else None


def cmd_evaluate(args: argparse.Namespace, extra: list[str]) -> None:
    from .evaluation.evaluate import evaluate

    evaluate(_config_with_options(args.config, extra, list(KEY_TO_SECTION), "evaluate"))


INFER_KEYS = [k for k, s in KEY_TO_SECTION.items() if s in ("model", "generation")] + [
    "adapter_path", "eval_batch_size", "system_prompt", "seed", "bf16", "fp16"]


def cmd_infer(args: argparse.Namespace, extra: list[str]) -> None:
    # What infer writes (--merge DIR, or --output with --prompts_file) is checked and held from before the
    # model loads; so is what it reads (--prompts_file).
    output = None
    if args.output and (args.merge or not args.prompts_file):
        raise UserError("infer: --output goes with --prompts_file (the answers to a file of prompts); --prompt "
                        "prints its answer and --merge writes to its own DIR.")
    if args.merge:
        from .export.merge import check_merge_dir

        check_merge_dir(args.merge)
        output = (args.merge, "--merge")
    elif args.prompts_file and args.output:
        check_output_file(args.output, "--output", "answers.jsonl")
        output = (args.output, "--output")
    with hold_output(*output) if output else contextlib.nullcontext():
        _infer(args, extra)


def _infer(args: argparse.Namespace, extra: list[str]) -> None:
    import json

    from .data.convert import conversation
    from .inference.chat import answer_prompts, chat
    from .inference.generate import stream
    from .inference.prompts import is_utf8_text, read_questions
    from .models.load import load_for_inference
    from .models.precision import choose_precision

    cfg = _config_with_options(args.config, extra, INFER_KEYS, "inference")
    questions = read_questions(args.prompts_file, "prompts") if args.prompts_file and not args.merge else None
    if args.prompt is not None and not is_utf8_text(args.prompt):  # before minutes of loading, not after
        raise UserError("--prompt is not UTF-8 text; set the terminal (or the shell's locale) to UTF-8.")

    def note(message: str) -> None:  # stdout carries only the answers, so they can be piped
        print(message, file=sys.stderr)

    if args.merge:
        from .export.merge import merge_model

        out = merge_model(cfg.model.model_name_or_path, cfg.eval.adapter_path, args.merge, args.merge_dtype,
                          cfg.model.trust_remote_code, log=note)
        print(f"merged model written to {out} (loads with AutoModelForCausalLM.from_pretrained)")
        return
    loaded = load_for_inference(cfg.model.model_name_or_path, cfg.eval.adapter_path,
                                choose_precision(cfg.training.bf16, cfg.training.fp16), cfg.model.trust_remote_code,
                                log=note)
    system, settings, seed = cfg.data.system_prompt, cfg.generation, cfg.training.seed
    if args.prompt is not None and not args.prompts_file:
        if not args.prompt.strip():
            raise UserError("--prompt is empty; give the text to answer.")
        for piece in stream(loaded, conversation(args.prompt, system), settings, seed=seed):
            print(piece, end="", flush=True)
        print()
    elif args.prompts_file:
        rows = answer_prompts(loaded, questions, settings, system, cfg.eval.eval_batch_size, seed)
        if args.output:
            from .fsutil import atomic_output_file

            with atomic_output_file(args.output, encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            print(f"{len(rows)} answers written to {args.output}")
        else:
            for row in rows:
                print(f"### {row['prompt']}\n{row['answer']}\n")
    else:
        chat(loaded, settings, system, seed)


SERVE_KEYS = [k for k, s in KEY_TO_SECTION.items() if s in ("model", "generation")] + [
    "adapter_path", "system_prompt", "bf16", "fp16"]


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> None:
    from .apps.serve import serve

    cfg = _config_with_options(args.config, extra, SERVE_KEYS, "serve")
    # `--api_key ""` is an empty key, which serve refuses; only a missing option falls back to the environment.
    api_key = args.api_key if args.api_key is not None else os.environ.get("QWENTUNE_API_KEY")
    serve(cfg, args.host, args.port, api_key, args.max_queue, args.max_batch_size)


WEBUI_KEYS = [k for k, s in KEY_TO_SECTION.items() if s == "model"] + ["adapter_path"]


def cmd_webui(args: argparse.Namespace, extra: list[str]) -> None:
    from .apps.webui.app import launch
    from .apps.webui.common import WebuiSettings, command_line_roots

    cfg = _config_with_options(args.config, extra, WEBUI_KEYS, "webui")
    settings = WebuiSettings(model_name_or_path=cfg.model.model_name_or_path, adapter_path=cfg.eval.adapter_path,
                             config_path=args.config, extra_roots=command_line_roots(cfg, args.config),
                             trust_remote_code=cfg.model.trust_remote_code, overrides=tuple(parse_override_args(extra)))
    password = args.password if args.password is not None else os.environ.get("QWENTUNE_WEBUI_PASSWORD")
    launch(settings, args.host, args.port, args.share, password)


def cmd_rating_export(args: argparse.Namespace, extra: list[str]) -> None:
    from .evaluation.rating import export_sheet

    check_output_file(args.output, "--output", "ratings.csv")
    with hold_output(args.output, "--output"):
        key = export_sheet(args.predictions, args.output, args.seed)
    print(f"blind sheet {args.output}: fill the score column (1-5); the key is {key} (keep it from the raters)")


def cmd_rating_import(args: argparse.Namespace, extra: list[str]) -> None:
    import json

    from .evaluation.rating import describe_head_to_head, import_head_to_head, import_scores

    if args.output:
        check_output_file(args.output, "--output", "scores.json")
    result = import_scores(args.sheet, args.key)
    for model, stats in result.items():
        print(f"{model}: mean {stats['mean']} over {stats['rated']} rated answers (stdev {stats['stdev']})")
    for pairing in import_head_to_head(args.sheet, args.key):
        print(describe_head_to_head(pairing))
    if args.output:
        from .fsutil import write_json

        with hold_output(args.output, "--output"):
            write_json(args.output, result)
    else:
        print(json.dumps(result, ensure_ascii=False, allow_nan=False))


COMPARE_KEYS = [k for k, s in KEY_TO_SECTION.items() if s == "generation"] + [
    "seed", "trust_remote_code", "hub", "bf16", "fp16"]


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> None:
    from .apps.compare import compare_to_files, load_pair
    from .inference.prompts import read_questions
    from .models.precision import choose_precision

    cfg = _config_with_options(args.config, extra, COMPARE_KEYS, "model_comparison")
    if not args.interactive and not args.questions_file:
        raise UserError("model_comparison: give --questions-file FILE (batch) or --interactive.")
    if args.batch_size < 1:
        raise UserError(f"model_comparison: --batch-size is {args.batch_size}; it must be at least 1.")
    if args.interactive:
        from .apps.interactive import Session

        precision = choose_precision(cfg.training.bf16, cfg.training.fp16)
        pair = load_pair(args.base_model, args.finetuned_model, precision, cfg.model.trust_remote_code)
        Session(pair, cfg.generation, args.system, cfg.training.seed).run()
        return
    questions = read_questions(args.questions_file)
    report, pages = compare_to_files(args.base_model, args.finetuned_model, questions, args.output, cfg,
                                     args.batch_size, args.system)
    overall = report["summary"]["overall"]
    print(f"{overall['questions']} questions; ROUGE-L base {overall['base']['rouge_l']} -> fine-tuned "
          f"{overall['finetuned']['rouge_l']}; BLEU-4 base {overall['base']['bleu_4']} -> fine-tuned "
          f"{overall['finetuned']['bleu_4']}")
    print("results: " + ", ".join(str(p) for p in pages))


EXPORT_KEYS = ["model_name_or_path", "trust_remote_code", "hub", "adapter_path", "system_prompt"]


def _verification_inputs(args: argparse.Namespace, extra: list[str], command: str):
    """The config of export / verify: EXPORT_KEYS from --config and the options (--max_new_tokens checked first)."""
    from .export.verify import check_max_new_tokens

    check_max_new_tokens(args.max_new_tokens, command)
    return _config_with_options(args.config, extra, EXPORT_KEYS, command)


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int | None:
    from .export.export import report_lines, run_export

    cfg = _verification_inputs(args, extra, "export")
    result = run_export(cfg, args.output_dir, args.gguf_type, prompts_file=args.prompts_file,
                        max_new_tokens=args.max_new_tokens, lora_only=args.lora_only, verify=args.verify == "true",
                        log=lambda message: print(message, file=sys.stderr))
    print("\n".join(report_lines(result)))
    return None if result.verified else 1


def cmd_verify(args: argparse.Namespace, extra: list[str]) -> int | None:
    from pathlib import Path

    from .export.verify import check_gguf_file, format_table, verification_inputs, verify
    from .models.gguf_source import require_gguf_model

    for path in args.gguf or []:  # before minutes of loading and answering
        if not os.path.isfile(path):
            raise UserError(f"--gguf {path}: no such file; give a .gguf file written by qwentune export.")
        require_gguf_model(Path(path))
    cfg = _verification_inputs(args, extra, "verify")
    loaded, conversations, _ = verification_inputs(cfg, args.prompts_file, args.max_new_tokens, "verify",
                                                   log=lambda message: print(message, file=sys.stderr))
    for path in args.gguf or []:
        check_gguf_file(path, loaded)
    server_answers = None
    if args.server == "true":
        from .apps.serve import answers_over_http as server_answers
    reference, agreements, notes = verify(loaded, conversations, args.gguf or [], args.max_new_tokens,
                                          server_answers, log=lambda message: print(message, file=sys.stderr))
    for note in notes:
        print(f"note: {note}")
    print(format_table(reference, agreements))
    return 1 if any(a.failed for a in agreements) else None


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int | None:
    from .apps.demo import DEMO_CONFIG, run_demo

    result = run_demo(_config_with_options(str(DEMO_CONFIG), extra, list(KEY_TO_SECTION), "demo"))
    return 128 + result["interrupted_by"] if result.get("interrupted_by") else None


def _add_verification_options(p: argparse.ArgumentParser, tokens_help: str) -> None:
    """export's and verify's shared options: the config, the prompts and the reply length."""
    p.add_argument("--config", help="a YAML config whose model section and adapter_path are used")
    p.add_argument("--prompts_file", help="the prompts the sides answer: .txt, .json or .jsonl (as infer "
                   "--prompts_file); default: the demo's 20 questions")
    p.add_argument("--max_new_tokens", type=int, default=64, help=tokens_help)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="qwentune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"qwentune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "demo", help="offline: train the embedded SmolLM2 on the demo data, evaluate, compare, report",
        description="Runs config/demo.yaml; any config key can be overridden, e.g. --max_steps 10.",
    )
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser("datasets", help="list the named datasets")
    p.add_argument("--dataset_registry", help="a YAML file with more named datasets")
    p.set_defaults(func=cmd_datasets)

    p = commands.add_parser("download", help="download named datasets into data/cache/")
    p.add_argument("datasets", nargs="*", help="names (default: the seed's five datasets)")
    p.add_argument("--cache_dir", default="data/cache")
    p.add_argument("--dataset_registry", help="a YAML file with more named datasets")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument("--hub", choices=HUBS, default="huggingface",
                   help="where from: the Hugging Face hub (or the mirror HF_ENDPOINT names) or ModelScope")
    p.set_defaults(func=cmd_download)

    p = commands.add_parser(
        "preprocess", help="convert and tokenize a dataset into train/validation splits",
        description="Options: --config FILE, --output_dir DIR, and any of "
        + ", ".join("--" + k for k in PREPROCESS_KEYS) + ".",
    )
    p.add_argument("--config", help="a YAML config; its data section is used")
    p.set_defaults(func=cmd_preprocess)

    p = commands.add_parser(
        "train", help="LoRA / QLoRA fine-tuning",
        description="Options: --config FILE, and any config key as --key value (e.g. --num_train_epochs 1).",
    )
    p.add_argument("--config", help="a YAML config, e.g. config/training_config.yaml")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser(
        "evaluate", help="perplexity, BLEU and ROUGE of a base model, an adapter or a merged model",
        description="Options: --config FILE, and any config key as --key value (e.g. --adapter_path DIR).",
    )
    p.add_argument("--config", help="a YAML config, e.g. config/eval_config.yaml")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser(
        "infer", help="answer one prompt, a file of prompts, or chat interactively (the default)",
        description="Model options: " + ", ".join("--" + k for k in INFER_KEYS)
        + ". --adapter_path null answers with the base model alone.",
    )
    p.add_argument("--config", help="a YAML config whose model / generation sections are used")
    p.add_argument("--prompt", help="answer this one prompt (streamed) and exit")
    p.add_argument("--prompts_file", help=".txt (one per line), .json or .jsonl prompts to answer in batches; the "
                   "same files as compare --questions-file (an item's own 'system' is honoured)")
    p.add_argument("--output", help="with --prompts_file: write the answers here as JSON Lines")
    p.add_argument("--merge", metavar="DIR", help="merge the adapter into the base and save a full model in DIR")
    p.add_argument("--merge_dtype", choices=["bf16", "fp16", "fp32"], default="bf16",  # export.merge.MERGE_DTYPES
                   help="precision the merged weights are stored in (merging itself runs in fp32)")
    p.set_defaults(func=cmd_infer)

    p = commands.add_parser(
        "compare", help="base vs fine-tuned, side by side: batch from a questions file, or interactive",
        description="Generation options: " + ", ".join("--" + k for k in COMPARE_KEYS) + " (same on both sides).",
    )
    p.add_argument("--base-model", required=True, help="hub id or local directory of the base model")
    p.add_argument("--finetuned-model", required=True,
                   help="adapter directory, training output / checkpoints directory, merged model directory, "
                        "or a .gguf model file")
    p.add_argument("--interactive", action="store_true", help="ask questions in the terminal")
    p.add_argument("--questions-file", help="JSON list of questions (see docs/model_comparison_guide.md)")
    p.add_argument("--output", default="comparison_results.json", help="results JSON; .html and .md go beside it")
    p.add_argument("--batch-size", type=int, default=32,
                   help="questions per generate call (default 32; lower it if memory runs short)")
    p.add_argument("--system", help="a system prompt for every question that has none")
    p.add_argument("--config", help="a YAML config whose generation section is used")
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser(
        "export", help="the fine-tuned model as GGUF files (llama.cpp, Ollama) + an Ollama Modelfile, then verify",
        description="Options: --config FILE, --output_dir DIR, and any of " + ", ".join("--" + k for k in EXPORT_KEYS)
        + ". Types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 (written by gguf-py), and q4_k_m, q5_k_m, q6_k and "
        "the other K-quants (by llama.cpp's own quantizer, with the llama extra installed).",
    )
    _add_verification_options(p, "tokens per verification reply (default 64)")
    p.add_argument("--output_dir", default="results/export",
                   help="where the .gguf files and the Modelfile go (default results/export)")
    p.add_argument("--gguf_type", nargs="+", default=["q8_0"], metavar="TYPE",
                   help="one or more weight types, e.g. --gguf_type f16 q8_0 (default q8_0)")
    p.add_argument("--lora_only", action="store_true",
                   help="the base as GGUF plus the adapter alone as a GGUF LoRA (llama.cpp --lora, Ollama ADAPTER)")
    p.add_argument("--verify", choices=["true", "false"], default="true",
                   help="compare greedy replies: adapter, merged model, each GGUF in llama.cpp (default true)")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser(
        "verify", help="do the adapter, the merged model, GGUF files (llama.cpp) and the server answer alike?",
        description="Options: --config FILE, and any of " + ", ".join("--" + k for k in EXPORT_KEYS)
        + ". Exit code 1 when a side that must agree does not.",
    )
    _add_verification_options(p, "tokens per reply (default 64)")
    p.add_argument("--gguf", nargs="+", metavar="FILE", help="GGUF model files to run in llama.cpp")
    p.add_argument("--server", choices=["true", "false"], default="true",
                   help="also ask qwentune serve's OpenAI API, started on 127.0.0.1 for the check (default true)")
    p.set_defaults(func=cmd_verify)

    p = commands.add_parser(
        "serve", help="an OpenAI-compatible HTTP API: models 'base' and 'finetuned' from one loaded base",
        description="Model options: " + ", ".join("--" + k for k in SERVE_KEYS)
        + ". --adapter_path null serves the base model alone; a merged model is served under its own name.",
    )
    p.add_argument("--config", help="a YAML config whose model / generation sections are used")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api_key", help="require 'Authorization: Bearer KEY' (default: $QWENTUNE_API_KEY, else none)")
    p.add_argument("--max_queue", type=int, default=64, help="requests that may wait; more are answered 503")
    p.add_argument("--max_batch_size", type=int, default=16, help="requests answered together in one batch")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser(
        "webui", help="the whole path in a web page: data, train, evaluate, chat, compare and rate, export",
        description="Pre-fills the page with --config FILE and any of " + ", ".join("--" + k for k in WEBUI_KEYS) + ".",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every machine)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also a public link through Gradio's share servers")
    p.add_argument("--password", help="ask for this password (any user name); default: $QWENTUNE_WEBUI_PASSWORD")
    p.add_argument("--config", help="a YAML config: the page's forms start from it")
    p.set_defaults(func=cmd_webui)

    rating = commands.add_parser("rating", help="blind human rating of answers").add_subparsers(
        dest="rating_command", required=True)
    p = rating.add_parser("export", help="a shuffled sheet of answers with the model names hidden")
    p.add_argument("--predictions", nargs="+", required=True,
                   help="predictions.jsonl files (or evaluation result directories), one per model")
    p.add_argument("--output", required=True, help="the sheet: .csv or .jsonl")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_rating_export)
    p = rating.add_parser("import", help="scores per model, and win rates head to head, from a filled sheet")
    p.add_argument("--sheet", required=True)
    p.add_argument("--key", help="default: <sheet>.key.json")
    p.add_argument("--output", help="write the scores here as JSON")
    p.set_defaults(func=cmd_rating_import)
    return parser


class Terminated(BaseException):
    """SIGTERM arrived (kill, a scheduler, a closing terminal): unwinds like Ctrl-C, so what was being written is
    removed (atomic_output_dir / atomic_output_file clean up on any exception). Training installs its own
    handler while it runs, which saves a checkpoint instead."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def tolerate_console_encoding() -> None:
    """Print what the console cannot show as '?' instead of failing with UnicodeEncodeError.

    A console with a legacy code page (Windows' GBK / cp936, or PYTHONIOENCODING=gbk) shows Chinese but not
    an emoji or a rare CJK character that a model may well answer with; the strict default would end the
    run on that character, after minutes of loading. Files are always written as UTF-8, whole.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    tolerate_console_encoding()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(parser, args, extra)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> int:
    if extra and args.func not in (cmd_preprocess, cmd_train, cmd_evaluate, cmd_infer, cmd_compare, cmd_demo,
                                  cmd_export, cmd_verify, cmd_serve, cmd_webui):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = args.func(args, extra)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # not the user's input: a bug of ours, shown whole
        traceback.print_exc()
        print(f"error: this is a bug in qwentune, not a problem with your input; please report it to the qwentune "
              f"developers with the command you ran and the traceback above ({_versions_line()}).", file=sys.stderr)
        return EXIT_BUG
    return code or 0


def _versions_line() -> str:
    from . import library_versions

    return ", ".join(f"{name} {version}" for name, version in library_versions().items())


if __name__ == "__main__":
    sys.exit(main())
