"""The data tab: choose a dataset (a registered name, a file under the working directory, or an upload), and see
its first examples exactly as training tokenizes them, the loss mask visible, with preprocess's counts."""

from __future__ import annotations

from ...data.convert import FORMATS
from .common import WebuiSettings, initial_config, page_config, shows_user_errors, t
from .data_view import PREVIEW_MAX, preview_data, preview_source, stats_markdown

TITLE_KEY = "data.title"
TEXT = {
    "data.title": ("Data", "数据"),
    "data.intro": (
        "Each example below is rendered with the model's own tokenizer and chat template, exactly as training reads "
        "it: highlighted tokens carry a label and count in the loss, faded ones are masked (label -100).",
        "下面每个示例都用所选模型的分词器和对话模板渲染，与训练时完全一致：高亮的词元有标签、计入损失，"
        "淡色的词元被掩码（标签为 -100）。"),
    "data.dataset": ("Dataset: a registered name (e.g. chinese_alpaca) or a .json/.jsonl/.csv/.parquet file",
                     "数据集：已注册的名称（如 chinese_alpaca）或 .json/.jsonl/.csv/.parquet 文件"),
    "data.format": ("Format (auto: detected from the records)", "格式（auto：根据记录自动识别）"),
    "data.upload": ("Or upload a file (used instead of the dataset above)", "或上传文件（将代替上面的数据集）"),
    "data.examples": (f"Examples to show (1-{PREVIEW_MAX})", f"显示的示例数（1-{PREVIEW_MAX}）"),
    "data.preview": ("Convert, tokenize and show", "转换、分词并显示"),
    "data.preview_label": ("Examples as trained", "训练时看到的示例"),
    "data.stats_label": ("Statistics", "统计"),
}


def preview(settings: WebuiSettings, dataset: str, data_format: str, upload: str | None, examples: float | None,
            model: str, config: str) -> tuple[str, str]:
    """The button's work: the page's config and model, the chosen source, and preview_data's HTML and stats."""
    from ...models.tokenizer import load_tokenizer

    cfg = page_config(config, model, settings)
    data = preview_source(cfg.data, dataset, data_format, upload, settings)
    tokenizer = load_tokenizer(cfg.model.tokenizer_name or cfg.model.model_name_or_path, cfg.model.trust_remote_code)
    result = preview_data(data, tokenizer, int(examples or 0))
    return result.html, stats_markdown(result.stats)


def build(settings: WebuiSettings, shared) -> None:
    """The tab's components (pre-filled from the page's config file) and the preview button's event."""
    import gradio as gr


    data = initial_config(settings).data
    gr.Markdown(t("data.intro"))
    with gr.Row():
        dataset = gr.Textbox(data.dataset_name, label=t("data.dataset"), elem_id="data-dataset", scale=3)
        data_format = gr.Dropdown(["auto", *FORMATS], value=data.dataset_format, label=t("data.format"),
                                  elem_id="data-format", scale=1)
    with gr.Row():
        upload = gr.File(label=t("data.upload"), type="filepath", file_count="single", elem_id="data-upload",
                         file_types=[".json", ".jsonl", ".csv", ".parquet", ".gz"], height=120, scale=3)
        examples = gr.Number(5, label=t("data.examples"), minimum=1, maximum=PREVIEW_MAX, precision=0,
                             elem_id="data-examples", scale=1)
    button = gr.Button(t("data.preview"), variant="primary", elem_id="data-preview-button")
    stats = gr.Markdown(elem_id="data-stats", label=t("data.stats_label"))
    shown = gr.HTML(label=t("data.preview_label"), elem_id="data-preview")

    @shows_user_errors
    def on_preview(*values):
        return preview(settings, *values)

    button.click(on_preview, inputs=[dataset, data_format, upload, examples, shared.model, shared.config],
                 outputs=[shown, stats])
