"""The export tab. (Being built: replaced by its real module before this lands.)"""

from __future__ import annotations

from .common import t

TITLE_KEY = "export.title"
TEXT = {"export.title": ("Export", "export")}


def build(settings, shared) -> None:
    import gradio as gr

    gr.Markdown(t("export.title"))
