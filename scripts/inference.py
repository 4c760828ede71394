"""Answer with a fine-tuned model: interactive chat (default), one prompt, a file of prompts, or merge.

    python scripts/inference.py --model_name_or_path Qwen/Qwen2-0.5B --adapter_path results/checkpoints
    python scripts/inference.py --adapter_path results/checkpoints --prompt "用一句话介绍 LoRA"
    python scripts/inference.py --adapter_path results/checkpoints --prompts_file prompts.txt --output answers.jsonl
    python scripts/inference.py --adapter_path results/checkpoints --merge results/merged
"""

import sys

from qwentune.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
