"""The export tab: the adapter merged into its base (`qwentune infer --merge DIR --merge_dtype ...`), and the
fine-tuned model as GGUF files with an Ollama Modelfile, verified (`qwentune export`: the adapter's greedy
replies, the merged model's and each GGUF file's in llama.cpp, compared).

Both call the CLI's own functions (export.merge.merge_model, export.export.run_export) and, like the CLI,
load their own fp32 copy of the model: merging changes a model in place, so the page's shared model (chat,
evaluate) is never the one merged. The folder written is held while it is written: a second session asking
for the same folder is told at once.
"""

from __future__ import annotations

from .common import WebuiSettings, page_path, shows_user_errors, t
from .models import row_config

TITLE_KEY = "export.title"
TEXT = {
    "export.title": ("Export", "导出"),
    "export.merge_intro": ("Merge the adapter into its base model: a full model folder that loads with "
                           "AutoModelForCausalLM.from_pretrained (merged in fp32, stored in the dtype chosen).",
                           "把适配器合并进基座模型：得到一个可用 AutoModelForCausalLM.from_pretrained 加载的完整模型目录"
                           "（以 fp32 合并，按所选精度保存）。"),
    "export.merge_dir": ("Merged model folder", "合并后模型的目录"),
    "export.merge_dtype": ("Stored as", "保存精度"),
    "export.merge": ("Merge", "合并"),
    "export.gguf_intro": ("GGUF files for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile; then the adapter, "
                          "the merged model and each file in llama.cpp answer the same prompts and are compared. "
                          "K-quants (q4_k_m, ...) need llama-cpp-python.",
                          "为 llama.cpp、Ollama 和 LM Studio 导出 GGUF 文件及 Ollama Modelfile；随后适配器、合并模型与"
                          "llama.cpp 中的每个文件回答相同的提示并逐一比较。K 量化（q4_k_m 等）需要 llama-cpp-python。"),
    "export.gguf_types": ("GGUF types", "GGUF 类型"),
    "export.lora_only": ("Base and adapter as separate files (llama.cpp --lora, Ollama ADAPTER)",
                         "基座与适配器分开导出（llama.cpp --lora，Ollama ADAPTER）"),
    "export.output_dir": ("Export folder", "导出目录"),
    "export.prompts_file": ("Verification prompts: a .txt, .json or .jsonl file (empty: the demo's 20 questions)",
                            "验证用提示：.txt、.json 或 .jsonl 文件（留空：演示的 20 个问题）"),
    "export.max_new_tokens": ("Tokens per verification reply", "每条验证回复的 token 数"),
    "export.run": ("Export and verify", "导出并验证"),
    "export.status": ("Result", "结果"),
}
MERGE_FOLDER = "merged model folder"  # also in "choose another merged model folder"
EXPORT_FOLDER = "export folder"


def gguf_type_choices() -> list[str]:
    """Every type `qwentune export --gguf_type` takes: gguf-py's own, then llama.cpp's K-quants."""
    from ...export.gguf import GGUF_TYPES
    from ...export.llama_quantize import K_QUANTS

    return [*GGUF_TYPES, *K_QUANTS]


def _code(lines: list[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```"


def run_merge(settings: WebuiSettings, model: str, adapter: str, config: str, merge_dir: str, dtype_name: str,
              progress=None) -> str:
    """`qwentune infer --merge merge_dir --merge_dtype dtype_name` with the page's model row; returns the status
    text (where the merged model is). UserError: no adapter, a folder outside the page's or holding other
    files, one being written by another session, and whatever loading says."""
    from ...errors import UserError
    from ...export.merge import check_merge_dir, merge_model
    from ...fsutil import hold_output

    cfg = row_config(settings, config, model, adapter)
    if not cfg.eval.adapter_path:
        raise UserError("adapter: empty, so there is nothing to merge; type the training output folder in the "
                        "adapter field.")
    out = page_path(merge_dir, settings, MERGE_FOLDER)
    check_merge_dir(out, MERGE_FOLDER)  # before minutes of loading
    if progress is not None:
        progress(None, desc="loading the model in fp32 and merging")
    with hold_output(out, MERGE_FOLDER):
        written = merge_model(cfg.model.model_name_or_path, cfg.eval.adapter_path, out, dtype_name,
                              cfg.model.trust_remote_code, log=lambda message: None, option=MERGE_FOLDER)
    return _code([f"merged model ({dtype_name}) written to {written} (loads with "
                  f"AutoModelForCausalLM.from_pretrained)"])


def run_gguf_export(settings: WebuiSettings, model: str, adapter: str, config: str, gguf_types: list[str],
                    output_dir: str, lora_only: bool, prompts_file: str = "", max_new_tokens=64,
                    progress=None) -> str:
    """`qwentune export --gguf_type ... --output_dir output_dir [--lora_only] [--prompts_file FILE]
    --max_new_tokens N` with verification, on the page's model row; returns the status text: the verdict, the
    files written (size, type, seconds), the Ollama command, notes and the verification table, as the CLI prints
    them. UserError: as run_export says, and a file or folder outside the page's."""
    from ...errors import UserError
    from ...export.export import report_lines, run_export

    cfg = row_config(settings, config, model, adapter)
    out = page_path(output_dir, settings, EXPORT_FOLDER)
    prompts = page_path(prompts_file, settings, "verification prompts") if (prompts_file or "").strip() else None
    if max_new_tokens is None or int(max_new_tokens) != max_new_tokens:
        raise UserError(f"export: tokens per verification reply is {max_new_tokens}; give a whole number of at "
                        f"least 1.")

    def log(message: str) -> None:
        if progress is not None:
            progress(None, desc=message)

    result = run_export(cfg, out, list(gguf_types or []), prompts_file=prompts, max_new_tokens=int(max_new_tokens),
                        lora_only=bool(lora_only), verify=True, option=EXPORT_FOLDER, log=log)
    verdict = ("verified: every side that must agree does" if result.verified
               else "VERIFICATION FAILED: a side that must agree answered differently (see the table)")
    return f"**{verdict}**\n\n" + _code(report_lines(result))


def build(settings: WebuiSettings, shared) -> None:
    """The tab's components (elem_ids: export-merge-dir, export-merge-dtype, export-merge, export-gguf-types,
    export-lora-only, export-prompts-file, export-max-new-tokens, export-output-dir, export-run, export-status) and
    its events, inside the page's gr.Blocks."""
    import gradio as gr

    gr.Markdown(t("export.merge_intro"))
    with gr.Row():
        merge_dir = gr.Textbox("results/merged", label=t("export.merge_dir"), elem_id="export-merge-dir", scale=3)
        merge_dtype = gr.Radio(["bf16", "fp16", "fp32"], value="bf16", label=t("export.merge_dtype"),
                               elem_id="export-merge-dtype")
        merge = gr.Button(t("export.merge"), elem_id="export-merge")
    gr.Markdown(t("export.gguf_intro"))
    with gr.Row():
        gguf_types = gr.CheckboxGroup(gguf_type_choices(), value=["q8_0"], label=t("export.gguf_types"),
                                      elem_id="export-gguf-types", scale=3)
        lora_only = gr.Checkbox(False, label=t("export.lora_only"), elem_id="export-lora-only")
    with gr.Row():
        prompts_file = gr.Textbox("", label=t("export.prompts_file"), elem_id="export-prompts-file", scale=3)
        max_new_tokens = gr.Number(64, precision=0, minimum=1, label=t("export.max_new_tokens"),
                                   elem_id="export-max-new-tokens")
    with gr.Row():
        output_dir = gr.Textbox("results/export", label=t("export.output_dir"), elem_id="export-output-dir", scale=3)
        run = gr.Button(t("export.run"), variant="primary", elem_id="export-run")
    status = gr.Markdown("", label=t("export.status"), elem_id="export-status")

    @shows_user_errors
    def on_merge(model, adapter, config, merge_dir, merge_dtype, progress=gr.Progress()):
        return run_merge(settings, model, adapter, config, merge_dir, merge_dtype, progress)

    @shows_user_errors
    def on_export(model, adapter, config, gguf_types, output_dir, lora_only, prompts_file, max_new_tokens,
                  progress=gr.Progress(track_tqdm=True)):
        return run_gguf_export(settings, model, adapter, config, gguf_types, output_dir, lora_only, prompts_file,
                               max_new_tokens, progress)

    row = [shared.model, shared.adapter, shared.config]
    merge.click(on_merge, [*row, merge_dir, merge_dtype], status)
    run.click(on_export, [*row, gguf_types, output_dir, lora_only, prompts_file, max_new_tokens], status)
