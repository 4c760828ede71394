"""The train tab: every key of `qwentune train` as a form, grouped by config section and pre-filled from the config
file and the model row; a hardware preset and the memory estimate before starting; start, stop and resume; and,
while a run trains (as its own process: runs.py), its progress, loss curve and log, refreshed every few seconds.

The form is read the way the command line is: each value as the text `--key value` would give
(config.apply_overrides), then config.validate, so a setting is checked in one place however it arrives.
The functions above build() need no gradio and are tested directly.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from ...config import KEY_TO_SECTION, SECTIONS, Config, Problems, apply_overrides, load_config, validate
from ...config.schema import key_comments, section_fields
from ...errors import UserError
from . import runs
from .common import WebuiSettings, check_remote_code, initial_config, model_reference, page_path, shows_user_errors, t

TITLE_KEY = "train.title"
TEXT = {
    "train.title": ("Train", "训练"),
    "train.intro": ("Every setting of `qwentune train`, pre-filled from the config file and the model row above. "
                    "Training runs as its own process: closing the page or the browser does not stop it, and "
                    "opening the page again (with the same output_dir) shows it. One run per output directory.",
                    "`qwentune train` 的全部设置，由上方的配置文件和模型预先填好。训练在独立进程中运行："
                    "关闭页面或浏览器不会停止训练，重新打开页面（同一个 output_dir）即可看到它。每个输出目录同时只能有一个训练。"),
    "train.section.model": ("Model", "模型"),
    "train.section.data": ("Data", "数据"),
    "train.section.lora": ("LoRA", "LoRA"),
    "train.section.training": ("Training", "训练"),
    "train.section.eval": ("Evaluation (not used by training)", "评估（训练不使用）"),
    "train.section.generation": ("Generation (not used by training)", "生成（训练不使用）"),
    "train.preset": ("Hardware preset: sets batch size, accumulation, checkpointing and 4-bit to fit (null: as set "
                     "below)", "硬件预设：自动设置批大小、梯度累积、梯度检查点和 4 位量化以适配显存（null：按下方设置）"),
    "train.memory": ("Memory estimate (rows of max_length tokens; training plans for the data's longest)",
                     "显存/内存估算（按 max_length 长度估算；训练时按数据中最长的样本规划）"),
    "train.start": ("Start", "开始训练"),
    "train.stop": ("Stop (saves a checkpoint)", "停止（保存检查点）"),
    "train.resume": ("Resume from the last checkpoint", "从最近的检查点继续"),
    "train.status": ("Status", "状态"),
    "train.progress": ("Progress", "进度"),
    "train.loss": ("Loss (training and validation) by optimizer step", "损失（训练集与验证集）随优化步数变化"),
    "train.log": ("Log (last lines)", "日志（最后几行）"),
    "train.state.idle": ("not started", "未开始"),
    "train.state.starting": ("starting (loading data and model)", "启动中（加载数据和模型）"),
    "train.state.running": ("training", "训练中"),
    "train.state.stopping": ("stopping (saving a checkpoint after this step)", "正在停止（本步结束后保存检查点）"),
    "train.state.finished": ("finished", "已完成"),
    "train.state.stopped": ("stopped (resume continues from its checkpoint)", "已停止（可从检查点继续）"),
    "train.state.failed": ("failed", "失败"),
}

WHERE = "train form"
LOG_LINES_SHOWN = 12  # the log tail in the page: the newest lines, all in view
REFRESH_SECONDS = 2.0
# The keys the memory estimate depends on (memory.estimate_before_training): a change to one of them estimates again.
MEMORY_KEYS = ("model_name_or_path", "trust_remote_code", "use_4bit", "max_length", "lora_r",
               "per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing", "bf16", "fp16",
               "packing", "cpu_kernels", "hardware")
# Keys that name a file or folder the training reads or writes: checked with page_path (local paths only) ...
PATH_KEYS = ("output_dir", "logging_dir", "cache_dir", "processed_dir", "dataset_registry", "eval_output_dir")
# ... or with model_reference (a local path, or a name: a hub id, a registered dataset).
REFERENCE_KEYS = ("model_name_or_path", "tokenizer_name", "dataset_name", "adapter_path", "eval_dataset")
_OPEN_SECTIONS = ("model", "data", "lora", "training")  # eval and generation do not change a training


@dataclass(frozen=True)
class FormField:
    """One config key in the form: its section, declared type, and the kind of input that shows it."""

    key: str
    section: str
    type: Any
    kind: str  # checkbox, dropdown, number, text
    choices: tuple[str, ...] = ()  # a dropdown's values, as the command line spells them

    @property
    def integer(self) -> bool:
        return int in _alternatives(self.type)


def _alternatives(tp: Any) -> tuple:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _choices(tp: Any) -> tuple[str, ...] | None:
    """The values of a Literal (or Literal | bool, Literal | None) as command-line text; None for other types."""
    choices: list[str] = []
    for alternative in _alternatives(tp):
        if typing.get_origin(alternative) is Literal:
            choices += [_as_text(c) for c in typing.get_args(alternative)]
        elif alternative is bool:
            choices += ["true", "false"]
        elif alternative is type(None):
            choices.append("null")
        else:
            return None
    return tuple(choices) if any(typing.get_origin(a) is Literal for a in _alternatives(tp)) else None


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def form_fields() -> list[FormField]:
    """Every config key, section by section, in the schema's order."""
    fields = []
    for section, cls in SECTIONS.items():
        for key, tp in section_fields(cls).items():
            choices = _choices(tp)
            if tp is bool:
                kind = "checkbox"
            elif choices:
                kind = "dropdown"
            elif tp in (int, float):  # not int | None: the number input shows and sends 0 when emptied
                kind = "number"
            else:
                kind = "text"
            fields.append(FormField(key, section, tp, kind, choices or ()))
    return fields


FIELDS = form_fields()
_BY_KEY = {f.key: f for f in FIELDS}


def widget_value(field: FormField, value: Any) -> Any:
    """A config value as its input shows it: lists as `a, b`, mappings as `{a: b}`, null as empty text."""
    if field.kind == "checkbox" or field.kind == "number":
        return value
    if field.kind == "dropdown":
        return _as_text(value)
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip() if value else ""
    return str(value)


def form_values(cfg: Config) -> dict[str, Any]:
    """The form's inputs for cfg, by key."""
    return {f.key: widget_value(f, getattr(getattr(cfg, f.section), f.key)) for f in FIELDS}


def option_text(field: FormField, value: Any) -> str:
    """An input's value as the text of `--key TEXT` on the command line (what apply_overrides reads)."""
    if value is None:
        return ""  # an empty number: null where the key allows it, else "is empty" from apply_overrides
    if isinstance(value, bool):
        return _as_text(value)
    if isinstance(value, (int, float)):
        # A whole number in an integer key is that integer (the number input gives 4.0); any other stays itself,
        # so 2.5 in an integer key is reported as not an integer.
        return str(int(value)) if field.integer and float(value).is_integer() else repr(value)
    if not str(value).strip() and typing.get_origin(field.type) in (list, dict):
        return "[]" if typing.get_origin(field.type) is list else "{}"  # a blank list or mapping is an empty one
    return str(value)


def form_config(values: dict[str, Any], settings: WebuiSettings) -> Config:
    """The Config the form's values (by key; keys left out keep their defaults) describe, read as command-line
    options are and checked by config.validate; every path must pass the page's checks (page_path /
    model_reference). Raises one UserError naming every problem ("train form (--key): ...")."""
    cfg = Config()
    problems = Problems()
    apply_overrides(cfg, [(key, option_text(_BY_KEY[key], value)) for key, value in values.items()], problems, WHERE)
    validate(cfg, WHERE, problems)
    problems.raise_if_any()
    check_remote_code(cfg, settings, WHERE)
    for key in (*PATH_KEYS, *REFERENCE_KEYS, "resume_from_checkpoint"):
        value = getattr(getattr(cfg, KEY_TO_SECTION[key]), key)
        if value is None or (key == "resume_from_checkpoint" and value in ("auto", "false", "no", "")):
            continue
        # Checked, and kept as typed: the run starts in the page's working directory, so relative paths mean the
        # same there, and the run's recorded values stay those a command line in that folder would give.
        (model_reference if key in REFERENCE_KEYS else page_path)(value, settings, f"{WHERE}: {key}")
    return cfg


def row_values(cfg: Config, model_text: str, adapter_text: str) -> dict[str, Any]:
    """The form's values for cfg, with the model row's model and adapter in place of cfg's (the row is what every
    tab uses; an empty model box keeps the config's model)."""
    values = form_values(cfg)
    if model_text and model_text.strip():
        values["model_name_or_path"] = model_text.strip()
    values["adapter_path"] = (adapter_text or "").strip()
    return values


def memory_estimate(values: dict[str, Any], settings: WebuiSettings) -> str:
    """What `qwentune train` would print about memory for these settings (memory.estimate_before_training), or
    why there is no estimate: shown in the form, never as an error, since it follows every edit."""
    from ...training.memory import estimate_before_training

    lines: list[str] = []
    try:
        estimate_before_training(form_config(values, settings), log=lines.append)
    except UserError as exc:
        lines.append(str(exc))
    except (OSError, ValueError) as exc:  # a model folder transformers cannot read: training would say more
        lines.append(f"no estimate: cannot read the model's config ({exc})")
    return "\n".join(lines)


def status_text(status: runs.RunStatus) -> str:
    """The status line: the state (in the page's language) and "step N/M, loss ...". Reads through t()."""
    details = status.describe()
    return t(f"train.state.{status.state}") + (f": {details}" if details else "")


def progress_html(status: runs.RunStatus) -> str:
    """The progress bar: steps done of max_steps; a moving bar while the run loads, an empty one with no run."""
    p = status.progress
    if not p.max_steps or status.state == "starting":
        bar = '<progress style="width:100%"></progress>' if status.active else \
            '<progress max="1" value="0" style="width:100%"></progress>'
        return f'<div class="qt-train-progress">{bar}</div>'
    percent = 100 * p.step / p.max_steps
    return (f'<div class="qt-train-progress"><progress max="{p.max_steps}" value="{p.step}" style="width:100%">'
            f'</progress><div>{p.step} / {p.max_steps} ({percent:.0f}%)</div></div>')


def loss_frame(status: runs.RunStatus):
    """The loss curve as the plot's table: step, loss, series ("train" or "eval")."""
    import pandas as pd

    rows = [(step, loss, "train") for step, loss in status.progress.losses if loss is not None]
    rows += [(step, loss, "eval") for step, loss in status.progress.eval_losses if loss is not None]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


def watched(output_dir_text: str, settings: WebuiSettings) -> runs.RunStatus | str:
    """The status of the run in the form's output_dir, or why it cannot be shown (a path the page may not use,
    or one being typed): a refresh every few seconds must not raise an error toast each time."""
    try:
        # As many lines as the box shows: a textbox filled by a timer keeps its scroll at the top (autoscroll does
        # not act then), so a longer tail would hide the newest lines below the fold.
        return runs.status(page_path(output_dir_text, settings, f"{WHERE}: output_dir"), tail_lines=LOG_LINES_SHOWN)
    except UserError as exc:
        return str(exc)


def build(settings: WebuiSettings, shared) -> None:
    import gradio as gr

    # The config the command line named (it read it a moment ago; not a path typed into the page).
    initial = row_values(initial_config(settings), settings.model_name_or_path, settings.adapter_path or "")
    comments = key_comments()
    inputs: dict[str, Any] = {}

    gr.Markdown(t("train.intro"))
    for section in SECTIONS:
        with gr.Accordion(t(f"train.section.{section}"), open=section in _OPEN_SECTIONS):
            with gr.Row(equal_height=False):
                for field in (f for f in FIELDS if f.section == section):
                    inputs[field.key] = _input(gr, field, initial[field.key], comments.get(field.key))
    with gr.Row(equal_height=False):
        preset = gr.Dropdown(list(_BY_KEY["hardware"].choices), value=initial["hardware"], label=t("train.preset"),
                             elem_id="train-preset", scale=1)
        memory = gr.Textbox(label=t("train.memory"), elem_id="train-memory", interactive=False, lines=2, scale=3)
    with gr.Row():
        start = gr.Button(t("train.start"), variant="primary", elem_id="train-start")
        stop = gr.Button(t("train.stop"), variant="stop", elem_id="train-stop")
        resume = gr.Button(t("train.resume"), elem_id="train-resume")
    status = gr.Textbox(label=t("train.status"), elem_id="train-status", interactive=False)
    progress = gr.HTML(label=t("train.progress"), elem_id="train-progress")
    with gr.Row(equal_height=False):
        loss = gr.LinePlot(x="step", y="loss", color="series", label=t("train.loss"), x_title="step",
                           y_title="loss", elem_id="train-loss", scale=1)
        log = gr.Textbox(label=t("train.log"), elem_id="train-log", interactive=False, lines=LOG_LINES_SHOWN,
                         max_lines=2 * LOG_LINES_SHOWN, autoscroll=True, scale=1)  # room for wrapped lines
    timer = gr.Timer(REFRESH_SECONDS)

    keys = list(inputs)
    form = [inputs[k] for k in keys]
    shown = [status, progress, loss, log]

    def show(found: runs.RunStatus | str):
        if isinstance(found, str):
            return found, progress_html(runs.RunStatus(settings.workdir, "idle")), None, ""
        return status_text(found), progress_html(found), loss_frame(found), found.log_tail

    def values_of(args) -> dict[str, Any]:
        return dict(zip(keys, args))

    @shows_user_errors
    def on_start(*args):
        cfg = form_config(values_of(args), settings)
        return show(runs.start(cfg, settings.workdir))

    @shows_user_errors
    def on_resume(*args):
        cfg = form_config(values_of(args), settings)
        return show(runs.start(cfg, settings.workdir, resume=True))

    @shows_user_errors
    def on_stop(output_dir_text):
        return show(runs.stop(page_path(output_dir_text, settings, f"{WHERE}: output_dir")))

    def on_tick(output_dir_text):
        return show(watched(output_dir_text, settings))

    start.click(on_start, form, shown, concurrency_limit=1)
    resume.click(on_resume, form, shown, concurrency_limit=1)
    stop.click(on_stop, inputs["output_dir"], shown)
    # Reading a few files: no queue limit, and no spinner over the plot every two seconds.
    gr.on([timer.tick, inputs["output_dir"].change], on_tick, inputs["output_dir"], shown, show_progress="hidden",
          concurrency_limit=None, trigger_mode="always_last")

    memory_inputs = [inputs[k] for k in MEMORY_KEYS]

    def on_memory_change(*args):
        return memory_estimate(dict(zip(MEMORY_KEYS, args)), settings)

    # triggers None: on page load, and whenever one of these inputs changes.
    gr.on(None, on_memory_change, memory_inputs, memory, show_progress="hidden", trigger_mode="always_last")
    # The preset above the buttons and the hardware key in the form are one setting: each follows the other's edits.
    preset.input(lambda value: value, preset, inputs["hardware"])
    inputs["hardware"].input(lambda value: value, inputs["hardware"], preset)

    loaded = gr.State((settings.config_path or "").strip())  # the config file the form was last filled from

    def on_config(config_text, model_text, adapter_text, loaded_text, again: bool):
        text = (config_text or "").strip()
        if text == loaded_text and not again:  # left unchanged: the form keeps what was typed into it since
            return gr.skip()
        values = row_values(load_config(page_path(text, settings, "Config file") if text else None,
                                        list(settings.overrides)), model_text,
                            adapter_text)
        return [values[k] for k in keys] + [values["hardware"], text]

    # Enter in the config box (re)loads the file; leaving the box loads it when it names another file.
    config_inputs, config_outputs = [shared.config, shared.model, shared.adapter, loaded], [*form, preset, loaded]
    shared.config.submit(shows_user_errors(lambda *args: on_config(*args, again=True)), config_inputs, config_outputs)
    shared.config.blur(shows_user_errors(lambda *args: on_config(*args, again=False)), config_inputs, config_outputs)
    shared.model.change(lambda text: text.strip(), shared.model, inputs["model_name_or_path"])
    shared.adapter.change(lambda text: text.strip(), shared.adapter, inputs["adapter_path"])


def _input(gr, field: FormField, value: Any, help_text: str | None):
    """The input for one key, elem_id train-key-<key>; its label is the key (as in config files and on the command
    line, in every language), its help the schema's comment."""
    common = dict(label=field.key, info=help_text, elem_id=f"train-key-{field.key}", min_width=220)
    if field.kind == "checkbox":
        return gr.Checkbox(value=value, **common)
    if field.kind == "dropdown":
        return gr.Dropdown(list(field.choices), value=value, **common)
    if field.kind == "number":
        return gr.Number(value=value, **common)
    return gr.Textbox(value=value, max_lines=1 if field.key != "system_prompt" else 4, **common)
