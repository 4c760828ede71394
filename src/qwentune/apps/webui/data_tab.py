"""The data tab. (Being built: replaced by its real module before this lands.)"""

from __future__ import annotations

from .common import t

TITLE_KEY = "data.title"
TEXT = {"data.title": ("Data", "data")}


def build(settings, shared) -> None:
    import gradio as gr

    gr.Markdown(t("data.title"))
