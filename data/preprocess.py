"""Convert and tokenize a dataset into train/validation splits for training.

    python data/preprocess.py --dataset_name chinese_alpaca --tokenizer_name Qwen/Qwen2-0.5B \
        --max_length 1024 --output_dir ./data/processed
    python data/preprocess.py --dataset_name my_data.jsonl --tokenizer_name ./models/Qwen2-0.5B
"""

import sys

from qwentune.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
