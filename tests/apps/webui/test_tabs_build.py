"""The chat, evaluate and export tabs build inside a gr.Blocks with the elem_ids the browser test drives, and
every text they show is in their translation tables."""

from __future__ import annotations

import pytest

from qwentune.apps.webui import chat_tab, evaluate_tab, export_tab
from qwentune.apps.webui.app import SharedInputs
from qwentune.apps.webui.common import WebuiSettings

ELEM_IDS = {
    chat_tab: {"chat-side", "chat-system", "chat-max-new-tokens", "chat-temperature", "chat-input", "chat-send",
               "chat-base", "chat-finetuned"},
    evaluate_tab: {"eval-dataset", "eval-run", "eval-metrics", "eval-predictions"},
    export_tab: {"export-merge-dir", "export-merge", "export-gguf-types", "export-output-dir", "export-run",
                 "export-status"},
}


def texts_of(block):
    """The I18nData keys a component shows: label, value, and each choice's label."""
    from gradio.i18n import I18nData

    found = [getattr(block, name, None) for name in ("label", "value", "placeholder")]
    found += [choice[0] for choice in getattr(block, "choices", None) or [] if isinstance(choice, tuple)]
    return [item.key for item in found if isinstance(item, I18nData)]


@pytest.mark.parametrize("tab", [chat_tab, evaluate_tab, export_tab], ids=lambda tab: tab.__name__.rsplit(".", 1)[-1])
def test_tab_builds_with_its_elem_ids_and_translated_texts(tab, tmp_path):
    import gradio as gr

    settings = WebuiSettings("Qwen/Qwen2-0.5B", "results/checkpoints", workdir=tmp_path)
    with gr.Blocks() as page:
        shared = SharedInputs(gr.Textbox(), gr.Textbox(), gr.Textbox())
        tab.build(settings, shared)
    blocks = list(page.blocks.values())
    assert ELEM_IDS[tab] <= {block.elem_id for block in blocks}
    shown = [key for block in blocks for key in texts_of(block)]
    assert shown and set(shown) <= set(tab.TEXT)
    assert tab.TITLE_KEY in tab.TEXT and all(len(pair) == 2 and all(pair) for pair in tab.TEXT.values())
    assert all(key.startswith(tab.TITLE_KEY.split(".")[0] + ".") for key in tab.TEXT)
    assert len(page.fns) >= 1  # its events are wired


def test_chat_side_choices_are_the_three_sides(tmp_path):
    import gradio as gr

    with gr.Blocks() as page:
        chat_tab.build(WebuiSettings("m", None, workdir=tmp_path), SharedInputs(gr.Textbox(), gr.Textbox(),
                                                                                  gr.Textbox()))
    side = next(b for b in page.blocks.values() if b.elem_id == "chat-side")
    assert [value for _, value in side.choices] == list(chat_tab.SIDES) and side.value == "base"  # no adapter yet
