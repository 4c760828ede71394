"""Inference: generation (batched, streamed, every prompt of a list) and the interactive chat.

May import: config, errors, fsutil, data, models, torch, transformers.
"""
