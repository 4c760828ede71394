"""The memory probe: the step-down rule, the worst batch, and the real probe loop on a tiny Qwen2 on CPU.

On CPU a normal run does not probe; these tests pass a measure_peak that runs the real probe step and reports
a peak from what that step really ran (the tokens the embedding saw, whether checkpointing recomputed the
layers), so the loop's decisions, its RNG and gradient hygiene and its log lines are those of a GPU run.
"""

import importlib.util
import json
import re

import pytest
import torch

from qwentune.config import load_config
from qwentune.errors import UserError
from qwentune.training.memory import GB, Plan
from qwentune.training.memory_probe import (
    RUN_MEMORY_PROBE,
    Measurement,
    adopt_recorded_plan,
    longest_rows,
    next_plan,
    probe_wanted,
)
from qwentune.training.train import train
from tests.helpers import silent, tiny_config


def test_the_steps_down_keep_the_effective_batch_and_put_4bit_last():
    configured = Plan(4, 2, False, False)
    plan, seen = configured, []
    while plan is not None:
        seen.append(plan)
        plan = next_plan(None, None, plan, configured, four_bit_possible=True)  # nothing ever fits
    assert seen == [Plan(4, 2, False, False), Plan(4, 2, True, False), Plan(2, 4, True, False),
                    Plan(1, 8, True, False), Plan(4, 2, True, True), Plan(2, 4, True, True), Plan(1, 8, True, True)]
    assert next_plan(1.0 * GB, 1.2 * GB, Plan(2, 4, True, False), configured, True) == Plan(2, 4, True, False)
    assert next_plan(1.3 * GB, 1.2 * GB, Plan(2, 4, True, False), configured, True) == Plan(1, 8, True, False)
    assert next_plan(None, None, Plan(1, 8, True, False), configured, four_bit_possible=False) is None
    # Batches that do not halve evenly still keep batch x accumulation exact.
    assert next_plan(None, None, Plan(6, 1, True, False), configured, True) == Plan(3, 2, True, False)
    assert next_plan(None, None, Plan(3, 2, True, False), configured, True) == Plan(1, 6, True, False)


def test_the_probe_runs_where_asked_and_where_it_can():
    assert probe_wanted("auto", "cuda", 1, measure_given=False)
    assert not probe_wanted("auto", "cpu", 1, measure_given=False)  # RSS is no clean peak
    assert not probe_wanted("auto", "cuda", 2, measure_given=False)  # several GPUs: not built
    assert probe_wanted("auto", "cpu", 1, measure_given=True)
    assert not probe_wanted(False, "cuda", 1, measure_given=False)
    with pytest.raises(UserError, match="memory_probe is true"):
        probe_wanted(True, "cpu", 1, measure_given=False)


def test_the_worst_batch_is_the_longest_rows_of_this_split_fully_labelled():
    import datasets

    from qwentune.data.collate import pad_batch
    from qwentune.training.trainer import make_collator

    lengths = [3, 9, 5, 9, 2, 7, 12, 4]
    rows = {"input_ids": [list(range(1, n + 1)) for n in lengths], "labels": [[-100] * n for n in lengths]}
    whole = datasets.Dataset.from_dict(rows)
    split = whole.select([0, 1, 2, 3, 5])  # an index mapping over the table: the 12-token row is not in it
    longest = longest_rows(split, 3)
    assert [len(r["input_ids"]) for r in longest] == [9, 9, 7]  # ties: the earlier row first
    assert all(r["labels"] == r["input_ids"] for r in longest)  # every position labelled
    packed = make_collator(True, 0)(longest)
    assert packed["input_ids"].shape == (1, 25)  # one row: all three back to back
    assert (packed["shift_labels"] != -100).sum() == 25 - 3  # all but each example's last position
    padded = pad_batch(longest, pad_token_id=0)
    assert padded["input_ids"].shape == (3, 9)
    assert len(longest_rows(split, 10)) == 5


class RealStepMeasure:
    """A measure_peak for CPU: runs the real probe step and derives a "peak" from what it really ran.

    fits(call, tokens, checkpointed) -> bool decides; oom_on: call numbers that end in torch.cuda.OutOfMemoryError
    after the step has run (as a backward running out would). Each call records what the step did.
    """

    def __init__(self, fits, oom_on=()):
        self.fits, self.oom_on, self.calls = fits, set(oom_on), []

    def __call__(self, step):
        from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

        tokens, layer_calls, modules = [], [], []

        def record(module, args):
            if isinstance(module, torch.nn.Embedding):
                tokens.append(args[0].numel())
            # A checkpointed layer's parts start again in backward (a pre-hook: the recompute stops early).
            if isinstance(module, Qwen2MLP):
                layer_calls.append(module)
            modules.append(module)

        rng = torch.get_rng_state()
        handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
        try:
            loss = step()
        finally:
            handle.remove()
        layers = len(set(map(id, layer_calls)))
        call = {"tokens": sum(tokens), "checkpointed": len(layer_calls) == 2 * layers,
                "loss": float(loss), "rng_moved": not torch.equal(rng, torch.get_rng_state()),
                "lora_grads": any(p.grad is not None for m in modules for n, p in m.named_parameters() if "lora_" in n)}
        self.calls.append(call)
        if len(self.calls) in self.oom_on:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")
        fits = self.fits(len(self.calls), call["tokens"], call["checkpointed"])
        return Measurement(peak=(1.0 if fits else 2.0) * GB, usable=1.5 * GB)


def fresh(path):
    path.mkdir()
    return path


def adapter_of(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def assert_same_adapter(a, b):
    first, second = adapter_of(a), adapter_of(b)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_probe_that_fits_leaves_the_run_as_it_would_be_without_it(tmp_path, tiny_model_dir):
    # Padded batches, dropout on: the probe's own dropout draws must be undone for the runs to agree.
    options = dict(packing="false", save_steps=100, eval_steps=100, max_steps=2)
    lines = []
    measure = RealStepMeasure(fits=lambda call, tokens, checkpointed: True)
    probed = train(tiny_config(fresh(tmp_path / "probed"), tiny_model_dir, **options), log=lines.append,
                   measure_peak=measure)
    plain = train(tiny_config(fresh(tmp_path / "plain"), tiny_model_dir, memory_probe="false", **options), log=silent)
    assert_same_adapter(probed.output_dir, plain.output_dir)
    assert probed.summary["final_train_loss"] == plain.summary["final_train_loss"]

    [call] = measure.calls  # a real forward and backward, with dropout, at 4 rows of the longest example
    assert call["rng_moved"] and call["lora_grads"] and call["loss"] > 0 and not call["checkpointed"]
    probe_lines = [line for line in lines if line.startswith("memory probe:")]
    assert len(probe_lines) == 2, lines
    rows, width = re.search(r"\((\d+) x (\d+) tokens, the 4 longest examples padded\)", probe_lines[0]).groups()
    assert int(rows) == 4 and int(rows) * int(width) == call["tokens"]
    assert "1.00 GB measured (with 0.00 GB of gradients and AdamW state to come), " in probe_lines[0]
    assert "GB estimated, 1.50 GB usable: fits" in probe_lines[0]
    assert probe_lines[1] == "memory probe: keeping batch 4 x accumulation 2"
    record = json.loads((probed.output_dir / RUN_MEMORY_PROBE).read_text())
    assert record["chosen"] == record["configured"] and probed.summary["memory_probe"] == record
    assert not (plain.output_dir / RUN_MEMORY_PROBE).exists() and plain.summary["memory_probe"] is None


def test_the_probe_steps_down_to_what_fits_and_resume_keeps_it(tmp_path, tiny_model_dir):
    # Out of memory at first; checkpointing alone is not enough; half the batch with checkpointing fits.
    first_tokens = []

    def fits(call, tokens, checkpointed):
        first_tokens.append(tokens)
        return checkpointed and tokens < first_tokens[0]

    measure = RealStepMeasure(fits, oom_on={1})
    lines = []
    options = dict(save_steps=2, eval_steps=100, max_steps=2)
    cfg = tiny_config(fresh(tmp_path / "probed"), tiny_model_dir, **options)
    probed = train(cfg, log=lines.append, measure_peak=measure)
    plain = train(tiny_config(fresh(tmp_path / "plain"), tiny_model_dir, memory_probe="false", gradient_checkpointing="true",
                              per_device_train_batch_size=2, gradient_accumulation_steps=4, **options), log=silent)
    assert_same_adapter(probed.output_dir, plain.output_dir)

    assert [(c["checkpointed"], c["lora_grads"]) for c in measure.calls] == [(False, True), (True, True), (True, True)]
    assert measure.calls[0]["tokens"] == measure.calls[1]["tokens"] > measure.calls[2]["tokens"]
    probe_lines = [line for line in lines if line.startswith("memory probe:")]
    assert probe_lines[0].startswith("memory probe: batch 4 x accumulation 2 at its longest batch (1 x ")
    assert probe_lines[0].endswith("the 4 longest examples packed): ran out of memory")
    assert probe_lines[1].startswith("memory probe: batch 4 x accumulation 2, gradient checkpointing at")
    assert probe_lines[1].endswith(": too much") and probe_lines[2].endswith(": fits")
    assert probe_lines[3] == ("memory probe: training with batch 2 x accumulation 4, gradient checkpointing "
                              "(configured: batch 4 x accumulation 2)")
    saved = load_config(probed.output_dir / "qwentune_config.yaml")
    assert (saved.training.per_device_train_batch_size, saved.training.gradient_accumulation_steps,
            saved.training.gradient_checkpointing) == (2, 4, True)  # the values that were used
    assert [p["fits"] for p in probed.summary["memory_probe"]["probes"]] == [False, False, True]

    # The same command again resumes with what the probe chose (a checkpoint's batch cannot change) ...
    assert adopt_recorded_plan(cfg, probed.output_dir, silent).training.per_device_train_batch_size == 2
    lines.clear()
    again = RealStepMeasure(fits=lambda call, tokens, checkpointed: True)
    train(cfg, log=lines.append, measure_peak=again)
    assert any("continuing" in line and "batch 2 x accumulation 4, gradient checkpointing" in line for line in lines)
    assert again.calls[0]["checkpointed"] and again.calls[0]["tokens"] == measure.calls[2]["tokens"]
    record = json.loads((probed.output_dir / RUN_MEMORY_PROBE).read_text())
    assert record["configured"]["batch_size"] == 4 and record["chosen"]["batch_size"] == 2  # still adoptable
    # ... and when those no longer fit, it says so rather than changing a checkpoint's settings.
    with pytest.raises(UserError, match="resuming .*no longer fits"):
        train(cfg, log=silent, measure_peak=RealStepMeasure(fits=lambda call, tokens, checkpointed: False))


@pytest.mark.slow  # CI's 15 minutes; `pytest -m slow` runs it (the 4-bit reload itself runs in the next test)
def test_4bit_comes_last_and_reloads_the_model(tmp_path, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    measure = RealStepMeasure(fits=lambda call, tokens, checkpointed: call == 5)  # only 4-bit at batch 4 fits
    lines = []
    options = dict(save_steps=100, eval_steps=100, max_steps=2)
    probed = train(tiny_config(fresh(tmp_path / "probed"), tiny_model_dir, **options), log=lines.append, measure_peak=measure)
    plain = train(tiny_config(fresh(tmp_path / "plain"), tiny_model_dir, memory_probe="false", use_4bit="true",
                              gradient_checkpointing="true", **options), log=silent)
    assert_same_adapter(probed.output_dir, plain.output_dir)
    assert "memory probe: training with batch 4 x accumulation 2, gradient checkpointing, 4-bit weights " \
           "(configured: batch 4 x accumulation 2)" in lines
    assert any("4-bit NF4 base" in line for line in lines)


def test_nothing_fitting_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, per_device_train_batch_size=1, gradient_accumulation_steps=2)
    four_bit = importlib.util.find_spec("bitsandbytes") is not None
    measure = RealStepMeasure(fits=lambda call, tokens, checkpointed: False)
    with pytest.raises(UserError, match="does not fit this GPU at the longest batch of the data even with "
                                        "batch 1 x accumulation 2, gradient checkpointing"):
        train(cfg, log=silent, measure_peak=measure)
    assert len(measure.calls) == (3 if four_bit else 2)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_broken_record_is_one_line(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir)
    (tmp_path / RUN_MEMORY_PROBE).write_text('{"configured": {"batch_size": 4}}')
    with pytest.raises(UserError, match="not a memory probe record"):
        adopt_recorded_plan(cfg, tmp_path, silent)
    assert adopt_recorded_plan(cfg, tmp_path / "nothing here", silent) is cfg
