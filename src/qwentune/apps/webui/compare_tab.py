"""The compare tab. (Being built: replaced by its real module before this lands.)"""

from __future__ import annotations

from .common import t

TITLE_KEY = "compare.title"
TEXT = {"compare.title": ("Compare", "compare")}


def build(settings, shared) -> None:
    import gradio as gr

    gr.Markdown(t("compare.title"))
