"""The chat tab: talk to the base model, the fine-tuned model, or both side by side, the reply streamed as it
is generated (inference.generate.stream, as `qwentune infer` chats).

"Both" answers one side after the other, base first: with a LoRA adapter both sides are one model in memory
(the adapter switched off is the base), so their replies cannot be generated at the same time. Each side keeps
its own conversation (what its window shows is what that model was asked, with its own replies), per browser
session; a long conversation drops its oldest turns as `qwentune infer` does (inference.context). Generation
settings are checked by config.change_generation, as everywhere else.
"""

from __future__ import annotations

from typing import Any, Iterator

from ...config import GenerationConfig, change_generation
from ...errors import UserError
from .common import WebuiSettings, initial_config, shows_user_errors, t
from .models import MODELS, ModelSpec, no_finetuned_model, row_config

TITLE_KEY = "chat.title"
TEXT = {
    "chat.title": ("Chat", "对话"),
    "chat.intro": ("Ask the base model, the fine-tuned model (the adapter above), or both. With both, the base "
                   "answers first, then the fine-tuned model: one copy of the model is in memory, the adapter "
                   "switched off being the base. Each window keeps its own conversation.",
                   "向基座模型、微调后的模型（上方的适配器）或两者提问。选择“两者”时，基座先回答，微调模型随后回答："
                   "内存中只有一份模型，关闭适配器即为基座。每个窗口各自保留自己的对话。"),
    "chat.side": ("Answer with", "回答者"),
    "chat.side_base": ("base", "基座"),
    "chat.side_finetuned": ("fine-tuned", "微调后"),
    "chat.side_both": ("both, side by side", "两者并排"),
    "chat.system": ("System prompt (empty: the chat template's default)", "系统提示词（留空：使用对话模板的默认值）"),
    "chat.settings": ("Generation settings", "生成参数"),
    "chat.max_new_tokens": ("Max new tokens", "最大生成 token 数"),
    "chat.do_sample": ("Sample (off: greedy, the same reply every time)", "采样（关闭：贪心解码，每次回答相同）"),
    "chat.temperature": ("Temperature (with sampling)", "温度（采样时）"),
    "chat.top_p": ("Top-p (with sampling)", "Top-p（采样时）"),
    "chat.repetition_penalty": ("Repetition penalty (1: none)", "重复惩罚（1：不惩罚）"),
    "chat.base": ("Base model", "基座模型"),
    "chat.finetuned": ("Fine-tuned model", "微调后的模型"),
    "chat.input": ("Your message (Enter sends)", "你的消息（回车发送）"),
    "chat.send": ("Send", "发送"),
    "chat.clear": ("Clear the conversation", "清空对话"),
}
SIDES = ("base", "finetuned", "both")
WAITING = "(waiting: the model is answering another session)"
LOADING = "Loading the model (once; later questions start at once)..."


def new_state() -> dict[str, Any]:
    """A session's chat: each side's conversation (user and assistant messages, no system prompt), and whether
    the oldest turns have started being dropped (said once)."""
    return {"base": [], "finetuned": [], "trimming": False}


def chat_settings(base: GenerationConfig, max_new_tokens, temperature, top_p, repetition_penalty,
                  do_sample) -> GenerationConfig:
    """The form's generation settings on top of `base` (the config's), checked as every front end's are
    (config.change_generation): UserError naming "chat settings" and each problem."""
    return change_generation(base, {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                                    "repetition_penalty": repetition_penalty, "do_sample": do_sample},
                             "chat settings")


def _shown(state: dict[str, Any], side: str, turn: list[dict[str, str]] = ()) -> list[dict[str, str]]:
    return [dict(m) for m in state[side]] + [dict(m) for m in turn]


def respond(settings: WebuiSettings, model: str, adapter: str, config: str, side: str, system: str,
            max_new_tokens, temperature, top_p, repetition_penalty, do_sample, message: str,
            state: dict[str, Any] | None) -> Iterator[tuple]:
    """Answer `message` on `side` ("base", "finetuned" or "both"), streamed: yields (base window, fine-tuned
    window, new state, the input box's text, status) after every piece of text, the reply growing in its
    window. The session's `state` (new_state()) is not changed in place; the last yield holds the new one.

    UserError: a bad setting (chat_settings), the fine-tuned side without an adapter, a question that does not
    fit the model's positions even alone, and whatever loading the model says."""
    from ...data.convert import conversation
    from ...inference.context import fit_conversation, model_positions, question_too_long, too_long_notice
    from ...inference.generate import stream

    state = state or new_state()
    text = (message or "").strip()
    if not text:
        yield _shown(state, "base"), _shown(state, "finetuned"), state, "", ""
        return
    if side not in SIDES:
        raise UserError(f"chat: unknown side {side!r}; choose one of {', '.join(SIDES)}.")
    cfg = row_config(settings, config, model, adapter)
    generation = chat_settings(cfg.generation, max_new_tokens, temperature, top_p, repetition_penalty, do_sample)
    spec = ModelSpec.of(cfg)
    sides = ["base", "finetuned"] if side == "both" else [side]
    if "finetuned" in sides and spec.adapter is None:  # before minutes of loading
        raise no_finetuned_model()
    system = (system or "").strip() or None
    new = {"base": list(state["base"]), "finetuned": list(state["finetuned"]), "trimming": state["trimming"]}
    notes: list[str] = []

    def shown(turns: dict[str, list[dict[str, str]]]) -> tuple:
        return (_shown(new, "base", turns.get("base", ())), _shown(new, "finetuned", turns.get("finetuned", ())),
                new, "", "\n\n".join(notes))

    if spec not in MODELS.loaded():
        notes.append(LOADING)
        yield shown({})
        notes.clear()
    shared = MODELS.get(spec)
    models = {name: shared.side(name) for name in sides}
    # Every side's prompt is fitted before any generation: a question that cannot fit fails before a reply.
    prompts = {}
    for name, (loaded, _) in models.items():
        positions = model_positions(loaded.model)
        messages = conversation(text, system, new[name])
        fitted = fit_conversation(loaded.tokenizer, messages, generation.max_new_tokens, positions)
        if fitted is None:
            yield shown({})  # the loading note goes; the error says why nothing was answered
            alone = question_too_long(loaded.tokenizer, conversation(text, system), positions,
                                      generation.max_new_tokens)
            raise UserError(f"chat: {alone}.")
        if fitted is not messages and not new["trimming"]:
            new["trimming"] = True
            notes.append(too_long_notice(positions, generation.max_new_tokens) + ".")
        prompts[name] = fitted
    turns = {name: [{"role": "user", "content": text}, {"role": "assistant", "content": ""}] for name in sides}
    if shared.busy():
        for name in sides:
            turns[name][1]["content"] = WAITING
        yield shown(turns)
        for name in sides:
            turns[name][1]["content"] = ""
    with shared.generating():
        for name in sides:
            loaded, adapter_on = models[name]
            pieces: list[str] = []
            for piece in stream(loaded, prompts[name], generation, adapter=adapter_on, seed=cfg.training.seed):
                pieces.append(piece)
                turns[name][1]["content"] = "".join(pieces)
                yield shown(turns)
            reply = "".join(pieces).strip()
            new[name] = [m for m in prompts[name] if m["role"] != "system"] + [{"role": "assistant", "content": reply}]
            turns.pop(name)
            yield shown(turns)


def build(settings: WebuiSettings, shared) -> None:
    """The tab's components (elem_ids: chat-side, chat-system, chat-max-new-tokens, chat-temperature, chat-top-p,
    chat-repetition-penalty, chat-do-sample, chat-input, chat-send, chat-clear, chat-base, chat-finetuned,
    chat-status) and its events, inside the page's gr.Blocks."""
    import gradio as gr

    start = initial_config(settings)
    generation = start.generation
    state = gr.State(new_state())
    gr.Markdown(t("chat.intro"))
    with gr.Row():
        side = gr.Radio([(t("chat.side_base"), "base"), (t("chat.side_finetuned"), "finetuned"),
                         (t("chat.side_both"), "both")], value="both" if settings.adapter_path else "base",
                        label=t("chat.side"), elem_id="chat-side")
        system = gr.Textbox(start.data.system_prompt or "", label=t("chat.system"),
                            elem_id="chat-system", scale=3)
    with gr.Accordion(t("chat.settings"), open=False):
        with gr.Row():
            max_new_tokens = gr.Number(generation.max_new_tokens, precision=0, minimum=1,
                                       label=t("chat.max_new_tokens"), elem_id="chat-max-new-tokens")
            do_sample = gr.Checkbox(generation.do_sample, label=t("chat.do_sample"), elem_id="chat-do-sample")
            temperature = gr.Number(generation.temperature, label=t("chat.temperature"), elem_id="chat-temperature")
            top_p = gr.Number(generation.top_p, label=t("chat.top_p"), elem_id="chat-top-p")
            repetition_penalty = gr.Number(generation.repetition_penalty, label=t("chat.repetition_penalty"),
                                           elem_id="chat-repetition-penalty")
    with gr.Row():
        base_chat = gr.Chatbot([], label=t("chat.base"), elem_id="chat-base", feedback_options=None)
        finetuned_chat = gr.Chatbot([], label=t("chat.finetuned"), elem_id="chat-finetuned", feedback_options=None)
    status = gr.Markdown("", elem_id="chat-status")
    with gr.Row():
        message = gr.Textbox("", label=t("chat.input"), elem_id="chat-input", scale=4, lines=1)
        send = gr.Button(t("chat.send"), variant="primary", elem_id="chat-send", scale=1)
        clear = gr.Button(t("chat.clear"), elem_id="chat-clear", scale=1)

    @shows_user_errors
    def on_send(model, adapter, config, side, system, max_new_tokens, temperature, top_p, repetition_penalty,
                do_sample, message, state):
        yield from respond(settings, model, adapter, config, side, system, max_new_tokens, temperature, top_p,
                           repetition_penalty, do_sample, message, state)

    inputs = [shared.model, shared.adapter, shared.config, side, system, max_new_tokens, temperature, top_p,
              repetition_penalty, do_sample, message, state]
    outputs = [base_chat, finetuned_chat, state, message, status]
    # Streamed replies: no progress overlay on the windows; the text growing is the progress.
    send.click(on_send, inputs, outputs, show_progress="hidden")
    message.submit(on_send, inputs, outputs, show_progress="hidden")
    clear.click(lambda: ([], [], new_state(), "", ""), None, outputs, show_progress="hidden")
