"""qwentune: LoRA / QLoRA fine-tuning of Qwen models on one PC, and what it changed.

The package, by room (dependencies point down this list; each folder's __init__ says more):
    cli.py          the one entry point: `qwentune <command>` and the thin scripts/
    apps/           front ends: compare (batch, interactive), report, demo
    evaluation/     evaluate, the metrics registry, blind human rating
    inference/      generation (batched, streamed), chat
    export/         merge an adapter into its base
    training/       train top to bottom, trainer, loss head, memory planner; speedups/ per device
    models/         where a model comes from, precision, tokenizer, loading, LoRA
    data/           registry -> sources -> readers -> convert -> tokenize -> collate
    config/         the typed config: schema, values, loading and checking
    errors.py fsutil.py shipped.py   UserError and did-you-mean, file reading and atomic writes, shipped files
"""

__version__ = "0.1.0"


def library_versions() -> dict[str, str]:
    """The versions a result was made with (qwentune, torch, transformers, peft, datasets, python)."""
    import platform
    from importlib.metadata import version

    return {"qwentune": __version__, **{name: version(name) for name in ("torch", "transformers", "peft", "datasets")},
            "python": platform.python_version()}
