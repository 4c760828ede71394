"""The chat tab. (Being built: replaced by its real module before this lands.)"""

from __future__ import annotations

from .common import t

TITLE_KEY = "chat.title"
TEXT = {"chat.title": ("Chat", "chat")}


def build(settings, shared) -> None:
    import gradio as gr

    gr.Markdown(t("chat.title"))
