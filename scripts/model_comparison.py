"""Base model vs fine-tuned model, side by side.

    python scripts/model_comparison.py --base-model "Qwen/Qwen2-0.5B" --finetuned-model "./results/checkpoints" --interactive
    python scripts/model_comparison.py --base-model "Qwen/Qwen2-0.5B" --finetuned-model "./results/checkpoints" \
        --questions-file "test_questions.json" --output "comparison_results.json"

See docs/model_comparison_guide.md.
"""

import sys

from qwentune.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
