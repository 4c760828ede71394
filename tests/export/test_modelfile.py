"""The Ollama Modelfile: its TEMPLATE, executed by Go's text/template (the engine Ollama runs), renders
conversations exactly as the model's chat template does."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from qwentune.export.modelfile import PROBE_CONVERSATIONS, modelfile_text, ollama_template, template_pieces
from qwentune.models.tokenizer import CHATML_TEMPLATE

# Ollama executes TEMPLATE with .Messages (Role, Content) and .System (template/template.go, Execute).
GO_RENDERER = """package main

import (
\t"encoding/json"
\t"os"
\t"strings"
\t"text/template"
)

type Message struct {
\tRole    string
\tContent string
}

type Request struct {
\tTemplate      string      `json:"template"`
\tConversations [][]Message `json:"conversations"`
}

func main() {
\tvar request Request
\tif err := json.NewDecoder(os.Stdin).Decode(&request); err != nil {
\t\tpanic(err)
\t}
\ttmpl := template.Must(template.New("").Parse(request.Template))
\tvar rendered []string
\tfor _, messages := range request.Conversations {
\t\tvar system []string
\t\tfor _, m := range messages {
\t\t\tif m.Role == "system" {
\t\t\t\tsystem = append(system, m.Content)
\t\t\t}
\t\t}
\t\tvar out strings.Builder
\t\tif err := tmpl.Execute(&out, map[string]any{"Messages": messages, "System": strings.Join(system, "\\n\\n")}); err != nil {
\t\t\tpanic(err)
\t\t}
\t\trendered = append(rendered, out.String())
\t}
\tjson.NewEncoder(os.Stdout).Encode(rendered)
}
"""

# Beyond the probes the pieces were checked on: quotes, backslashes, braces, a tab, a lone newline.
MORE_CONVERSATIONS = [
    [{"role": "user", "content": 'She said "hi" \\ {{ .Role }} \t end'}],
    [{"role": "system", "content": "\n"}, {"role": "user", "content": "请用中文回答：什么是机器学习？"},
     {"role": "assistant", "content": "机器学习是……"}, {"role": "user", "content": "再举个例子。"}],
]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install golang-go): it checks Ollama templates")
    folder = tmp_path_factory.mktemp("go_renderer")
    (folder / "main.go").write_text(GO_RENDERER, encoding="utf-8")
    subprocess.run([go, "build", "-o", "render", "main.go"], cwd=folder, check=True, capture_output=True,
                   env={"GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "gopath"), "HOME": str(folder),
                        "PATH": "/usr/bin:/bin", "GO111MODULE": "off"})

    def render(template: str, conversations: list) -> list[str]:
        done = subprocess.run([str(folder / "render")], input=json.dumps({"template": template,
                              "conversations": conversations}), capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    return render


def _tokenizers(tiny_tokenizer):
    from tests.helpers import SHARED_REAL

    yield "tiny (qwentune's ChatML)", tiny_tokenizer
    if (SHARED_REAL / "qwen2_tokenizer").is_dir():
        from qwentune.models.tokenizer import load_tokenizer

        yield "Qwen2", load_tokenizer(str(SHARED_REAL / "qwen2_tokenizer"))


def test_go_renders_the_template_as_the_chat_template_does(go_render, tiny_tokenizer):
    conversations = PROBE_CONVERSATIONS + MORE_CONVERSATIONS
    for name, tokenizer in _tokenizers(tiny_tokenizer):
        pieces = template_pieces(tokenizer)
        assert pieces is not None, name
        expected = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                    for c in conversations]
        assert go_render(ollama_template(pieces), conversations) == expected, name


def test_the_default_system_prompt_appears_only_without_a_system_message(go_render, tiny_tokenizer):
    pieces = template_pieces(tiny_tokenizer)
    without, with_system = go_render(ollama_template(pieces), [
        [{"role": "user", "content": "Q"}], [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]])
    assert "You are a helpful assistant." in without and "You are a helpful assistant." not in with_system


def test_modelfile_names_the_files_stops_at_end_of_turn_and_keeps_the_system_prompt(tiny_tokenizer):
    text, has_template = modelfile_text("model-q8_0.gguf", tiny_tokenizer, system_prompt="你是一个助手。",
                                        adapter_name="adapter-f16.gguf")
    lines = text.splitlines()
    assert has_template
    assert "FROM ./model-q8_0.gguf" in lines and "ADAPTER ./adapter-f16.gguf" in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert 'SYSTEM """你是一个助手。"""' in lines


def test_a_base_model_whose_eos_is_endoftext_still_stops_at_im_end():
    from tests.helpers import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(eos_token="<|endoftext|>")
    text, _ = modelfile_text("m.gguf", tokenizer)
    assert 'PARAMETER stop "<|im_end|>"' in text.splitlines() and 'PARAMETER stop "<|endoftext|>"' in text.splitlines()


def test_a_template_that_rewrites_contents_gets_no_template(tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = CHATML_TEMPLATE.replace("message['content']", "message['content'] | trim")
    assert template_pieces(tokenizer) is None
    text, has_template = modelfile_text("m.gguf", tokenizer)
    assert not has_template and "TEMPLATE" not in text


def test_a_system_prompt_that_would_end_the_modelfile_text_is_refused(tiny_tokenizer):
    from qwentune.errors import UserError

    with pytest.raises(UserError, match='"""'):
        modelfile_text("m.gguf", tiny_tokenizer, system_prompt='say """hi"""')
