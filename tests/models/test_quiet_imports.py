"""bitsandbytes stays out of a run that does not ask for 4-bit (peft would import it, and it is slow and
noisy), and comes back whole when 4-bit is asked for in the same process."""

import subprocess
import sys

PROBE = """
import sys
from qwentune.models import import_peft
import qwentune.training.trainer  # transformers' Trainer, which imports peft
import_peft()
print("bitsandbytes imported:", "bitsandbytes" in sys.modules)
import bitsandbytes  # what models/load.py does when use_4bit is true
from peft.import_utils import is_bnb_4bit_available
from peft.tuners.lora.model import LoraModel
from transformers.utils import is_bitsandbytes_available
print("4-bit available afterwards:", is_bnb_4bit_available() and is_bitsandbytes_available())
"""


def test_peft_is_imported_without_bitsandbytes_until_4bit_is_asked_for():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "bitsandbytes imported: False" in run.stdout
    assert "4-bit available afterwards: True" in run.stdout
