"""Download the named instruction datasets into data/cache/ (all five by default).

    python data/download_data.py                          # chinese_alpaca, alpaca_gpt4_data, oasst1, ...
    python data/download_data.py chinese_alpaca tatsu-lab/alpaca
    qwentune datasets                                     # what the names mean
"""

import sys

from qwentune.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
