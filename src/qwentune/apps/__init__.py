"""Front ends: base-vs-fine-tuned comparison (batch and interactive), its report, and the demo. Each
calls the same package functions as the CLI, never a second implementation.

May import: everything below it (config, errors, fsutil, data, models, training, inference,
evaluation, export).
"""
