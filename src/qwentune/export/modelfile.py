"""An Ollama Modelfile for an exported GGUF: FROM, a TEMPLATE that renders conversations as the model's own
chat template does, PARAMETER stop for the end-of-turn token, and SYSTEM when the run trained with one.

Ollama's TEMPLATE is a Go text/template, not Jinja, so the chat template cannot be copied over. It is
read instead by rendering a few probe conversations and cutting the text between their messages:
what comes before the first message (for a conversation that starts with a system message, and for one
that starts with the user: that is where a default system prompt shows up), what comes between two
messages for each pair of roles that follow each other in a chat, and what comes after the last user
message (the generation prompt). Those pieces, put together again for other conversations, must give
exactly what the chat template gives (checked here in Python, and in the tests by Go's own
text/template); a template whose text depends on more than the roles (Qwen3's thinking blocks, tool
calls) fails that check and gets no TEMPLATE, so Ollama falls back to its own reading of the GGUF.

Ollama passes the messages (system ones included, consecutive messages of one role joined) as
.Messages (template/template.go, Execute and collate); SYSTEM in a Modelfile becomes a leading system
message when a request has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import UserError
from ..models.tokenizer import end_of_turn_token

# Roles that follow each other in a chat Ollama sends (it joins consecutive messages of one role).
TRANSITIONS = (("system", "user"), ("user", "assistant"), ("assistant", "user"))
MARKS = {"system": "QWTSYSTEMQWT", "user": "QWTUSERQWT", "assistant": "QWTASSISTANTQWT", "user again": "QWTASKQWT"}


@dataclass(frozen=True)
class TemplatePieces:
    """The chat template's text around messages (see the module docstring)."""

    start: dict[str, str]  # first message's role ("system" or "user") -> text before it
    between: dict[tuple[str, str], str]  # (role, next role) -> text between the two contents
    generation_prompt: str  # text after the last (user) message, ending where the reply begins


def _render(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _cut(text: str, marks: list[str]) -> list[str] | None:
    """The pieces of `text` before, between and after `marks` (in order, each once); None when they are not."""
    pieces, rest = [], text
    for mark in marks:
        head, found, rest = rest.partition(mark)
        if not found or mark in rest:
            return None
        pieces.append(head)
    return pieces + [rest]


def read_template_pieces(tokenizer) -> TemplatePieces | None:
    """Cut the tokenizer's chat template into TemplatePieces; None when the probe conversations do not put
    each message's content in once, verbatim (a template that rewrites contents)."""
    m = MARKS
    with_system = _cut(_render(tokenizer, [{"role": "system", "content": m["system"]},
                                          {"role": "user", "content": m["user"]}]), [m["system"], m["user"]])
    chat = _cut(_render(tokenizer, [{"role": "user", "content": m["user"]},
                                    {"role": "assistant", "content": m["assistant"]},
                                    {"role": "user", "content": m["user again"]}]),
                [m["user"], m["assistant"], m["user again"]])
    if with_system is None or chat is None:
        return None
    pieces = TemplatePieces(
        start={"system": with_system[0], "user": chat[0]},
        between={("system", "user"): with_system[1], ("user", "assistant"): chat[1], ("assistant", "user"): chat[2]},
        generation_prompt=chat[3])
    return pieces if with_system[2] == pieces.generation_prompt else None


def render_with_pieces(pieces: TemplatePieces, messages: list[dict[str, str]]) -> str | None:
    """A conversation rendered from the pieces, as the Go template renders it; None for an order of roles
    the pieces do not cover (e.g. a conversation that does not end with the user)."""
    if not messages or messages[0]["role"] not in pieces.start or messages[-1]["role"] != "user":
        return None
    out = [pieces.start[messages[0]["role"]], messages[0]["content"]]
    for previous, message in zip(messages, messages[1:]):
        between = pieces.between.get((previous["role"], message["role"]))
        if between is None:
            return None
        out += [between, message["content"]]
    return "".join(out) + pieces.generation_prompt


# Conversations the pieces must reproduce exactly before a TEMPLATE is written from them.
PROBE_CONVERSATIONS = [
    [{"role": "user", "content": "你好，请介绍一下你自己。"}],
    [{"role": "system", "content": "You answer in one line."}, {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "列出三种水果\n每行一种"}],
    [{"role": "system", "content": "多轮对话"}, {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
     {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": " 4 "}, {"role": "user", "content": "  "}],
]


def template_pieces(tokenizer) -> TemplatePieces | None:
    """The pieces when they reproduce the chat template on every probe conversation, else None."""
    pieces = read_template_pieces(tokenizer)
    if pieces is None:
        return None
    for messages in PROBE_CONVERSATIONS:
        if render_with_pieces(pieces, messages) != _render(tokenizer, messages):
            return None
    return pieces


def go_string(text: str) -> str:
    """`text` as a Go interpreted string literal (UTF-8 kept as it is; quotes, backslashes and control
    characters escaped)."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def ollama_template(pieces: TemplatePieces) -> str:
    """The Go text/template Ollama renders .Messages with, the same text as render_with_pieces.

    Every literal is a string in an action ({{ "..." }}), so whitespace trimming ({{- -}}) only ever
    removes the template's own line breaks, never a newline the chat template writes.
    """
    def emit(text: str) -> str:
        return f"{{{{ {go_string(text)} }}}}" if text else ""

    lines = ['{{- $previous := "" }}', "{{- range .Messages }}"]
    lines.append('{{- if eq $previous "" }}'
                 f'{{{{- if eq .Role "system" }}}}{emit(pieces.start["system"])}'
                 f'{{{{- else }}}}{emit(pieces.start["user"])}{{{{- end }}}}')
    for (before, after), text in pieces.between.items():
        lines.append(f'{{{{- else if and (eq $previous "{before}") (eq .Role "{after}") }}}}{emit(text)}')
    lines.append("{{- end }}{{ .Content }}{{ $previous = .Role }}")
    lines.append("{{- end }}" + emit(pieces.generation_prompt))
    return "\n".join(lines)


def modelfile_text(gguf_name: str, tokenizer, system_prompt: str | None = None,
                   adapter_name: str | None = None) -> tuple[str, bool]:
    """The Modelfile for the GGUF file `gguf_name` (relative to the Modelfile's directory), and whether it
    has a TEMPLATE (see template_pieces). `adapter_name`: a GGUF LoRA applied on top (ADAPTER)."""
    lines = ["# ollama create my-model -f Modelfile   (then: ollama run my-model)", f"FROM ./{gguf_name}"]
    if adapter_name:
        lines.append(f"ADAPTER ./{adapter_name}")
    pieces = template_pieces(tokenizer)
    if pieces is not None:
        template = ollama_template(pieces)
        assert '"""' not in template  # every quote in it is escaped inside a Go string
        lines.append(f'TEMPLATE """{template}"""')
    for token in dict.fromkeys(t for t in (end_of_turn_token(tokenizer), tokenizer.eos_token) if t):
        lines.append(f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}")
    if system_prompt:
        if '"""' in system_prompt:
            raise UserError('the system prompt holds """, which ends a Modelfile\'s SYSTEM text; write it without.')
        lines.append(f'SYSTEM """{system_prompt}"""')
    return "\n".join(lines) + "\n", pieces is not None
