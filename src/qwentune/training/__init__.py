"""Training: train.py top to bottom, the Trainer subclass, callbacks, the lean loss head, the run's
output directory, several processes, the memory planner and hardware presets; speedups/ holds the
device-specific speed-ups and the one switchboard that chooses them.

May import: config, errors, fsutil, data, models, torch, transformers, peft, accelerate.
Importing this package imports nothing heavy: config/ reads presets.py.
"""
