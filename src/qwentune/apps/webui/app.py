"""The page: a model row shared by every tab, then one tab per step of the path; and its launch."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from ...errors import UserError
from . import chat_tab, compare_tab, data_tab, evaluate_tab, export_tab, train_tab
from .common import WebuiSettings, hidden_entries, t, translations

TABS = (data_tab, train_tab, evaluate_tab, chat_tab, compare_tab, export_tab)

TEXT = {
    "app.title": ("qwentune: fine-tune Qwen with LoRA, see what changed", "qwentune：用 LoRA 微调 Qwen，看清变化"),
    "app.model": ("Base model (hub id or local folder)", "基座模型（Hub ID 或本地目录）"),
    "app.adapter": ("Fine-tuned adapter (training output folder; empty: none)", "微调后的适配器（训练输出目录；留空：无）"),
    "app.config": ("Config file (YAML; empty: the defaults)", "配置文件（YAML；留空：默认值）"),
    "app.language_hint": ("Language: the page follows the browser; switch it under Settings at the bottom.",
                          "语言：页面跟随浏览器设置；可在页面底部的“设置”中切换。"),
}


@dataclass
class SharedInputs:
    """The model row's components; every tab reads them as inputs of its events."""

    model: Any  # gr.Textbox: model_name_or_path
    adapter: Any  # gr.Textbox: adapter_path
    config: Any  # gr.Textbox: config file


def build_app(settings: WebuiSettings):
    """The page as a gr.Blocks (not launched), with its I18n translations in `.qwentune_i18n`."""
    import gradio as gr

    i18n = translations(TEXT, *(tab.TEXT for tab in TABS))
    # analytics_enabled=False: a local tool sends nothing about its user to Gradio's servers (and waits on no network).
    with gr.Blocks(title="qwentune", analytics_enabled=False) as page:
        gr.Markdown(t("app.title"), elem_id="app-title")
        with gr.Row():
            shared = SharedInputs(
                model=gr.Textbox(settings.model_name_or_path, label=t("app.model"), elem_id="app-model"),
                adapter=gr.Textbox(settings.adapter_path or "", label=t("app.adapter"), elem_id="app-adapter"),
                config=gr.Textbox(settings.config_path or "", label=t("app.config"), elem_id="app-config"),
            )
        with gr.Tabs():
            for tab in TABS:
                with gr.Tab(t(tab.TITLE_KEY), id=tab.__name__.rsplit(".", 1)[-1], elem_id=f"tab-{tab.__name__.rsplit('.', 1)[-1]}"):
                    tab.build(settings, shared)
        gr.Markdown(t("app.language_hint"))
    page.qwentune_i18n = i18n
    return page


def launch(settings: WebuiSettings, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           password: str | None = None, log=print) -> None:
    """Serve the page until interrupted. UserError before anything starts for a port in use or a bad host;
    a printed warning when the page is reachable from other machines (another host, or --share)."""
    from ..serve import bind

    if password is not None and not password:
        raise UserError("webui: --password is empty; give a password, or leave the option out.")
    bind(host, port, command="webui").close()  # a port in use is one line now, not a traceback from uvicorn
    page = build_app(settings)
    if share or host not in ("127.0.0.1", "localhost", "::1"):
        reach = "anyone with the public link" if share else f"every machine that can reach {host}:{port}"
        log(f"warning: the page is open to {reach}: it can train, read and write files under "
            f"{', '.join(map(str, settings.roots()))}" + ("" if password else "; set --password"))
    auth = None
    if password:
        def auth(_username: str, typed: str) -> bool:  # any user name; the password is what is checked
            return hmac.compare_digest(typed.encode(), password.encode())
    page.queue(default_concurrency_limit=4)
    if not share:  # quiet below: Gradio's own lines would tell a command-line user to "set share=True in launch()"
        shown = f"[{host}]" if ":" in host else host
        log(f"qwentune webui: http://{shown}:{port} (Ctrl-C stops it)")
    page.launch(server_name=host, server_port=port, share=share, auth=auth, i18n=page.qwentune_i18n, quiet=not share,
                allowed_paths=[str(r) for r in settings.roots()],
                blocked_paths=[str(p) for p in hidden_entries(settings.roots())], inbrowser=False, show_error=True)
