"""The data path: registry -> sources -> readers -> convert (+ oasst) -> tokenize -> collate, and
preprocess, which runs the chain and writes the splits. Each step is a small module of pure functions.

May import: config, errors, fsutil, models.tokenizer (preprocess) and models.hub (sources: the offline probe),
datasets, pyarrow.
"""
