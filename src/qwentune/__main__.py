"""`python -m qwentune ...`: the same as the `qwentune` command (the web page starts training this way, with the
Python it runs under, which need not have the `qwentune` script on its PATH)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
