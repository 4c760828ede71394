"""The train tab. (Being built: replaced by its real module before this lands.)"""

from __future__ import annotations

from .common import t

TITLE_KEY = "train.title"
TEXT = {"train.title": ("Train", "train")}


def build(settings, shared) -> None:
    import gradio as gr

    gr.Markdown(t("train.title"))
