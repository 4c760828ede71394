"""Export: the fine-tuned model taken where people run models; today, merging an adapter into its base.

May import: config, errors, fsutil, models, torch, transformers, peft.
"""
