"""Evaluation: evaluate a model on a dataset, the metrics registry (every metric defined once, read by
evaluation, comparison, report and demo), and blind human rating.

May import: config, errors, fsutil, data, models, inference. metrics.py imports no torch at load:
config/ reads its names.
"""
