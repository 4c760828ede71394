"""The evaluate tab. (Being built: replaced by its real module before this lands.)"""

from __future__ import annotations

from .common import t

TITLE_KEY = "evaluate.title"
TEXT = {"evaluate.title": ("Evaluate", "evaluate")}


def build(settings, shared) -> None:
    import gradio as gr

    gr.Markdown(t("evaluate.title"))
