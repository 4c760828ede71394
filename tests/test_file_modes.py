"""Files and folders qwentune writes get the modes the user's umask gives (0644 / 0755 under umask 022), so a
server or a colleague running as another user can read adapters, merged weights, metrics and reports; under
umask 077 they stay private (0600 / 0700): the umask is respected, not forced open.

The real commands run in one child process that sets the umask first."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO, tiny_options

DRIVER = textwrap.dedent("""
    import json, os, sys
    os.umask(int(sys.argv[1], 8))
    from qwentune.cli import main

    root, model, train_options = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    inputs = os.path.dirname(root)
    quick = ["--max_new_tokens", "4", "--repetition_penalty", "1.0"]
    commands = [
        ["preprocess", "--dataset_name", f"{inputs}/qa.jsonl", "--tokenizer_name", model, "--max_length", "128",
         "--val_size", "4", "--output_dir", f"{root}/processed"],
        ["train", "--config", "config/training_config.yaml",
         *[item for key, value in train_options.items() for item in (f"--{key}", value)]],
        ["evaluate", "--config", "config/eval_config.yaml", "--model_name_or_path", model, "--adapter_path",
         f"{root}/out", "--processed_dir", f"{root}/processed", "--max_length", "128", "--eval_output_dir",
         f"{root}/evaluation", *quick],
        ["compare", "--base-model", model, "--finetuned-model", f"{root}/out", "--questions-file",
         f"{inputs}/questions.json", "--output", f"{root}/comparison_results.json", "--max-new-tokens", "4",
         "--repetition_penalty", "1.0"],
        ["infer", "--model_name_or_path", model, "--adapter_path", f"{root}/out", "--merge", f"{root}/merged"],
        ["infer", "--model_name_or_path", model, "--adapter_path", f"{root}/out", "--prompts_file",
         f"{inputs}/questions.json", "--output", f"{root}/answers.jsonl", *quick],
        # the same evaluation twice: a blind sheet needs two runs of the same prompts
        ["rating", "export", "--predictions", f"{root}/evaluation", f"{root}/evaluation", "--output",
         f"{root}/sheet.csv"],
    ]
    os.mkdir(root)
    for argv in commands:
        if argv[0] == "rating":
            argv[3] = argv[4] = os.path.join(argv[3], os.listdir(argv[3])[0])
        code = main(argv)
        assert code in (0, None), (argv, code)
""")


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_every_output_gets_the_modes_the_umask_gives(tmp_path, tiny_model_dir, umask):
    (tmp_path / "questions.json").write_text(json.dumps([{"question": "2+2?", "reference": "4"}]), encoding="utf-8")
    root = tmp_path / "outputs"  # made by the child, under its umask
    train = tiny_options(tmp_path, tiny_model_dir, max_steps=2, save_steps=1, eval_steps=1,
                         **{key: str(root / name) for key, name in (("output_dir", "out"), ("logging_dir", "logs"),
                                                                    ("processed_dir", "processed"), ("cache_dir", "cache"))})
    run = subprocess.run([sys.executable, "-c", DRIVER, oct(umask), str(root), str(tiny_model_dir), json.dumps(train)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    written = [root, *root.rglob("*")]
    names = {p.name for p in written}
    # What the issue names: adapters (final and checkpoints), merged weights, run summary, metrics, predictions,
    # comparison files, tokenized data, the loss curve and TensorBoard's events.
    assert {"adapter_model.safetensors", "model.safetensors", "run_summary.json", "metrics.json", "predictions.jsonl",
            "comparison_results.json", "comparison_results.html", "stats.json", "loss_curve.png", "answers.jsonl",
            "sheet.csv", "qwentune_complete", "optimizer.pt"} <= names
    assert any(name.endswith(".arrow") for name in names) and any(name.startswith("events.") for name in names)
    wrong = {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in written
             if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~umask}
    assert wrong == {}, f"not {oct(0o666 & ~umask)} / {oct(0o777 & ~umask)}: {sorted(wrong.items())}"
