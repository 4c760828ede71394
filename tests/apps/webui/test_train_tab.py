"""The train tab: an input for every config key, read back into exactly the config it shows, checked by the config's
own validation and the page's path rules; the memory estimate train prints; the status the page refreshes."""

from __future__ import annotations

import time

import pytest

from qwentune.apps.webui import runs, train_tab
from qwentune.apps.webui.common import WebuiSettings, translations
from qwentune.config import KEY_TO_SECTION, load_config
from qwentune.errors import UserError
from qwentune.training.outputs import Progress
from tests.helpers import REPO, tiny_config


def settings_for(tmp_path, **kwargs) -> WebuiSettings:
    return WebuiSettings(model_name_or_path=kwargs.pop("model", "Qwen/Qwen2-0.5B"), workdir=tmp_path, **kwargs)


def test_the_tab_builds_with_an_input_for_every_key_prefilled_from_the_config_and_the_model_row(tmp_path):
    import gradio as gr

    from qwentune.apps.webui.app import SharedInputs

    config = tmp_path / "my.yaml"
    config.write_text("training:\n  max_steps: 7\n  hardware: rtx3060\n  packing: false\n"
                      "data:\n  columns: {instruction: question}\n", encoding="utf-8")
    settings = settings_for(tmp_path, model="./models/tiny", config_path=str(config))
    with gr.Blocks() as page:
        shared = SharedInputs(model=gr.Textbox(settings.model_name_or_path), adapter=gr.Textbox(""),
                              config=gr.Textbox(str(config)))
        train_tab.build(settings, shared)
    by_id = {block.elem_id: block for block in page.blocks.values() if getattr(block, "elem_id", None)}
    for key in KEY_TO_SECTION:
        assert f"train-key-{key}" in by_id, key
    for fixed in ("train-preset", "train-memory", "train-start", "train-stop", "train-resume", "train-status",
                  "train-loss", "train-log"):
        assert fixed in by_id, fixed
    value = {key: by_id[f"train-key-{key}"].value for key in KEY_TO_SECTION}
    assert value["max_steps"] == "7" and value["packing"] == "false" and value["columns"] == "{instruction: question}"
    assert value["model_name_or_path"] == "./models/tiny"  # the model row's, over the config's default
    assert value["hardware"] == by_id["train-preset"].value == "rtx3060"
    assert isinstance(by_id["train-key-bf16"], gr.Checkbox) and isinstance(by_id["train-key-optim"], gr.Dropdown)
    assert isinstance(by_id["train-key-learning_rate"], gr.Number)
    assert isinstance(by_id["train-key-max_steps"], gr.Textbox)  # a number input would send 0 for null
    assert isinstance(by_id["train-key-lora_target_modules"], gr.Textbox)
    assert by_id["train-key-max_steps"].info.startswith("Stop after this many optimizer steps")  # the schema's comment
    assert isinstance(by_id["train-loss"], gr.LinePlot)
    translations(train_tab.TEXT)  # every state has its words in both languages
    for state in ("idle", "starting", "running", "stopping", "finished", "stopped", "failed"):
        assert f"train.state.{state}" in train_tab.TEXT


@pytest.mark.parametrize("config", [None, "config/training_config.yaml", "config/demo.yaml"])
def test_the_form_reads_back_exactly_the_config_it_shows(tmp_path, config):
    cfg = load_config(REPO / config if config else None)
    settings = settings_for(tmp_path)
    assert train_tab.form_config(train_tab.form_values(cfg), settings) == cfg


def test_the_form_is_read_as_the_command_line_and_checked_in_the_same_place(tmp_path):
    settings = settings_for(tmp_path)
    values = train_tab.form_values(load_config(None))
    # What the browser sends: numbers as floats (an emptied one as None); optional numbers, lists and null as text.
    values.update(max_steps="", save_total_limit="5", per_device_train_batch_size=2.0, learning_rate=1e-05,
                  lora_target_modules="q_proj, v_proj", hardware="cpu", cpu_kernels="false", system_prompt="")
    cfg = train_tab.form_config(values, settings)
    assert cfg.training.max_steps is None and cfg.training.per_device_train_batch_size == 2
    assert cfg.training.save_total_limit == 5
    assert cfg.training.learning_rate == 1e-05 and cfg.lora.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.training.hardware == "cpu" and cfg.training.cpu_kernels is False and cfg.data.system_prompt is None

    with pytest.raises(UserError) as refused:
        train_tab.form_config(values | dict(per_device_train_batch_size=2.5, learning_rate=None, lora_r=0), settings)
    message = str(refused.value)
    assert message.startswith("3 problems: (1) train form (--per_device_train_batch_size): "
                              "training.per_device_train_batch_size must be an integer, got 2.5; fix the value.")
    assert "(2) train form: --learning_rate is empty" in message
    assert "train form: lora.lora_r must be at least 1." in message


def test_paths_in_the_form_must_lie_in_the_pages_folders(tmp_path):
    settings = settings_for(tmp_path)
    values = train_tab.form_values(load_config(None))
    for key, path in (("output_dir", "/etc/qwentune"), ("dataset_name", "../../elsewhere.jsonl"),
                      ("model_name_or_path", "/opt/models/x")):
        with pytest.raises(UserError, match=rf"^train form: {key}: .* is outside the folders this page may use"):
            train_tab.form_config(values | {key: path}, settings)
    cfg = train_tab.form_config(values | {"output_dir": "runs/a"}, settings)
    assert cfg.training.output_dir == "runs/a"  # kept as typed: the run starts in the working directory


def test_the_memory_estimate_is_what_train_prints(tmp_path, tiny_model_dir):
    settings = settings_for(tmp_path, extra_roots=(tiny_model_dir,))
    values = {"model_name_or_path": str(tiny_model_dir), "max_length": 128, "bf16": False}
    text = train_tab.memory_estimate(values, settings)
    assert text.startswith("memory estimate: ") and " GB on " in text
    planned = train_tab.memory_estimate(values | {"hardware": "rtx3060"}, settings)
    assert planned.splitlines()[0].startswith("hardware rtx3060 (12 GB): batch ")
    assert "memory estimate: " in planned.splitlines()[1]
    missing = train_tab.memory_estimate(values | {"model_name_or_path": str(tmp_path / "nothing")}, settings)
    assert missing == f"{tmp_path / 'nothing'}: model directory not found; check --model_name_or_path."


def test_status_progress_and_loss_curve_as_shown(tmp_path):
    progress = Progress(step=3, max_steps=8, epoch=0.375, losses=[(1, 2.5), (2, 2.25), (3, None)],
                        eval_losses=[(2, 2.4)], latest={"learning_rate": 2e-4, "tokens_per_second": 812.4})
    status = runs.RunStatus(tmp_path, "running", pid=42, progress=progress)
    text = train_tab.status_text(status)
    assert "train.state.running" in text  # translated in the browser
    assert text.endswith(": step 3/8 (38%), epoch 0.38, eval loss 2.4000, lr 2.00e-04, 812 tokens/s, pid 42")
    assert '<progress max="8" value="3"' in train_tab.progress_html(status)
    frame = train_tab.loss_frame(status)
    assert frame.values.tolist() == [[1, 2.5, "train"], [2, 2.25, "train"], [2, 2.4, "eval"]]
    failed = runs.RunStatus(tmp_path, "failed", exit_code=2, reason="error: no such file")
    assert train_tab.status_text(failed).endswith(": exit code 2, error: no such file")
    assert train_tab.watched("/etc", settings_for(tmp_path)).startswith("train form: output_dir: /etc is outside")


def test_the_form_starts_a_run_that_the_status_follows(tmp_path, tiny_model_dir):
    """What the Start button does, short of the browser: the form's config, started and followed by status."""
    settings = settings_for(tmp_path, model=str(tiny_model_dir), extra_roots=(tiny_model_dir,))
    values = train_tab.form_values(tiny_config(tmp_path, tiny_model_dir, max_steps=1))
    started = runs.start(train_tab.form_config(values, settings), settings.workdir)
    try:
        assert started.output_dir == tmp_path / "out" and started.state == "starting"
        assert "train.state.starting" in train_tab.status_text(train_tab.watched("out", settings))
    finally:
        runs.stop(started.output_dir)  # as Ctrl-C: it stops while loading, or after its one step
        while runs.status(started.output_dir).active:
            time.sleep(0.2)
