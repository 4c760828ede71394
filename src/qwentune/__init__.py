"""qwentune: LoRA / QLoRA fine-tuning of Qwen models on one PC, and what it changed."""

__version__ = "0.1.0"
