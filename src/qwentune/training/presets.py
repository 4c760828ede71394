"""Hardware presets: the cards the seed names, with their memory; the config's allowed values come from here.

`auto` reads the memory of the device at hand and `cpu` this machine's RAM; the planner in memory.py
turns either into a batch size, accumulation, checkpointing and 4-bit setting that fit.
No imports beyond the standard library: config/ reads this module.
"""

# Device memory in GB. The RTX A5000 is the 16 GB laptop part the seed lists (the desktop A5000 has
# 24 GB: use rtx4090 or auto for it).
PRESETS_GB = {"rtx3060": 12, "rtx4060ti": 16, "rtxa5000": 16, "rtx4080": 16, "rtx4090": 24}
HARDWARE_CHOICES = ("auto", "cpu", *PRESETS_GB)
