"""LoRA / QLoRA fine-tuning with a config file and any key overridden on the command line.

    python scripts/train.py --config config/training_config.yaml
    python scripts/train.py --config config/training_config.yaml --model_name_or_path ./models/Qwen2-0.5B \
        --output_dir ./results/checkpoints --num_train_epochs 3 --learning_rate 0.0002
"""

import sys

from qwentune.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
