"""Evaluate a fine-tuned adapter (or a base or merged model): perplexity, BLEU-4, ROUGE-1/2/L.

    python scripts/evaluate.py --config config/eval_config.yaml
    python scripts/evaluate.py --config config/eval_config.yaml --adapter_path null     # the base model alone
"""

import sys

from qwentune.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
