"""The page's shared rules: which paths a page may touch, UserError as a toast, the port check, the translations."""

from __future__ import annotations

import socket

import pytest

gr = pytest.importorskip("gradio")

from qwentune.apps.webui.common import (  # noqa: E402
    WebuiSettings,
    model_reference,
    page_path,
    shows_user_errors,
    translations,
)
from qwentune.errors import UserError  # noqa: E402


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    work = tmp_path / "work"
    work.mkdir()
    return WebuiSettings(model_name_or_path="Qwen/Qwen2-0.5B", workdir=work)


def test_paths_inside_the_working_directory_and_caches_are_allowed(settings, tmp_path):
    (settings.workdir / "data.jsonl").write_text("{}\n")
    assert page_path("data.jsonl", settings, "dataset") == settings.workdir / "data.jsonl"
    assert page_path(str(tmp_path / "cache" / "models" / "x"), settings, "model") == tmp_path / "cache" / "models" / "x"
    assert page_path("results/new", settings, "output") == settings.workdir / "results" / "new"  # need not exist


@pytest.mark.parametrize("text", ["../secret.txt", "/etc/passwd", "~/.ssh/id_rsa", "data/../../secret.txt"])
def test_paths_outside_are_refused_with_one_sentence(settings, text):
    with pytest.raises(UserError, match=r"^dataset: .* is outside the folders this page may use") as caught:
        page_path(text, settings, "dataset")
    assert "\n" not in str(caught.value)


def test_a_symlink_out_of_the_working_directory_is_followed_and_refused(settings, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    (settings.workdir / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(UserError, match="outside the folders"):
        page_path("link.txt", settings, "dataset")


def test_empty_path_is_a_user_error(settings):
    with pytest.raises(UserError, match="no path given"):
        page_path("  ", settings, "dataset")


def test_model_reference_keeps_hub_ids_and_checks_local_paths(settings):
    assert model_reference("Qwen/Qwen2-0.5B", settings, "model") == "Qwen/Qwen2-0.5B"
    assert model_reference("embedded:SmolLM2-135M-Instruct", settings, "model") == "embedded:SmolLM2-135M-Instruct"
    (settings.workdir / "models" / "tiny").mkdir(parents=True)
    assert model_reference("models/tiny", settings, "model") == str(settings.workdir / "models" / "tiny")
    with pytest.raises(UserError, match="outside"):
        model_reference("/etc", settings, "model")


def test_user_errors_become_gradio_errors_and_bugs_keep_their_type():
    @shows_user_errors
    def handler(kind):
        if kind == "user":
            raise UserError("dataset: no such file data.jsonl; check the path.")
        raise KeyError("bug")

    with pytest.raises(gr.Error, match="no such file data.jsonl"):
        handler("user")
    with pytest.raises(KeyError):
        handler("bug")

    @shows_user_errors
    def streamed():
        yield "first"
        raise UserError("chat: temperature must be > 0.")

    stream = streamed()
    assert next(stream) == "first"
    with pytest.raises(gr.Error, match="temperature"):
        next(stream)


def test_translations_have_both_languages_and_refuse_a_key_twice():
    i18n = translations({"a.x": ("Hello", "你好")}, {"b.y": ("Bye", "再见")})
    assert i18n.translations_dict == {"en": {"a.x": "Hello", "b.y": "Bye"}, "zh": {"a.x": "你好", "b.y": "再见"}}
    with pytest.raises(AssertionError, match="defined twice"):
        translations({"a.x": ("Hello", "你好")}, {"a.x": ("Hi", "嗨")})


def test_every_tab_has_text_in_both_languages():
    from qwentune.apps.webui import app

    for table in (app.TEXT, *(tab.TEXT for tab in app.TABS)):
        for key, (english, chinese) in table.items():
            assert english.strip() and chinese.strip(), key
    assert all(tab.TITLE_KEY in tab.TEXT for tab in app.TABS)


def test_webui_port_in_use_is_one_line_and_exit_2(capsys):
    from qwentune.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["webui", "--port", str(port), "--model_name_or_path", "Qwen/Qwen2-0.5B"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: webui: cannot listen on 127.0.0.1:{port}: the port is in use") and err.count("\n") == 1


def test_webui_empty_password_and_unknown_option_are_refused(capsys):
    from qwentune.cli import main

    assert main(["webui", "--password", "", "--port", "0"]) == 2
    assert "--password is empty" in capsys.readouterr().err
    assert main(["webui", "--learning_rate", "1e-4"]) == 2
    assert "webui: unknown option --learning_rate" in capsys.readouterr().err


def test_hugging_face_tokens_are_outside_the_page_but_its_caches_are_not(settings, tmp_path):
    # break-it: HF_HOME itself was a root, so Gradio's file route served HF_HOME/token to anyone who could open the
    # page (GET /gradio_api/file=<HF_HOME>/token); only the model and dataset caches are the page's.
    for secret in ("token", "stored_tokens"):
        with pytest.raises(UserError, match="is outside the folders this page may use"):
            page_path(str(tmp_path / "hf" / secret), settings, "dataset")
    roots = settings.roots()
    assert (tmp_path / "hf").resolve() not in roots
    assert page_path(str(tmp_path / "hf" / "hub" / "models--Qwen--Qwen2-0.5B"), settings, "model").is_relative_to(
        tmp_path / "hf" / "hub")
    assert page_path(str(tmp_path / "hf" / "datasets" / "x"), settings, "dataset").is_relative_to(tmp_path / "hf")


def test_the_model_config_and_folders_of_the_command_line_are_the_page_s_even_outside_it(tmp_path, monkeypatch):
    # break-it: `qwentune webui --model_name_or_path ../model --config ../run.yaml` started a page that refused its
    # own pre-filled model and config ("outside the folders this page may use") in every tab.
    from qwentune.apps.webui.common import command_line_roots
    from qwentune.config import load_config

    monkeypatch.setenv("QWENTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    (elsewhere / "model").mkdir(parents=True)
    (elsewhere / "run.yaml").write_text("output_dir: ../elsewhere/out\nprocessed_dir: ../elsewhere/processed\n")
    (elsewhere / "other.txt").write_text("not the page's")
    monkeypatch.chdir(work)  # as the CLI runs: relative paths are the current directory's
    cfg = load_config("../elsewhere/run.yaml", [("model_name_or_path", "../elsewhere/model"),
                                                ("adapter_path", "Qwen/not-local")])
    settings = WebuiSettings(model_name_or_path="../elsewhere/model", config_path="../elsewhere/run.yaml",
                             workdir=work, extra_roots=command_line_roots(cfg, "../elsewhere/run.yaml"))
    assert page_path("../elsewhere/run.yaml", settings, "Config file") == elsewhere / "run.yaml"
    assert model_reference("../elsewhere/model", settings, "Base model") == str(elsewhere / "model")
    assert page_path("../elsewhere/out/checkpoint-2", settings, "adapter") == elsewhere / "out" / "checkpoint-2"
    assert page_path("../elsewhere/processed", settings, "data.processed_dir") == elsewhere / "processed"
    with pytest.raises(UserError, match="is outside the folders this page may use"):  # only what was named
        page_path("../elsewhere/other.txt", settings, "dataset")


def test_hidden_files_are_refused_and_blocked_from_gradios_file_route(settings):
    from qwentune.apps.webui.common import hidden_entries

    (settings.workdir / ".env").write_text("TOKEN=secret")
    (settings.workdir / ".git").mkdir()
    (settings.workdir / "data.jsonl").write_text("{}\n")
    for text in (".env", ".git/config", "sub/.secret/x.json"):
        with pytest.raises(UserError, match="is a hidden file or lies in a hidden folder"):
            page_path(text, settings, "dataset")
    assert set(hidden_entries(settings.roots())) >= {settings.workdir / ".env", settings.workdir / ".git"}
    assert settings.workdir / "data.jsonl" not in hidden_entries(settings.roots())


def test_remote_code_only_when_the_command_line_allowed_it(settings):
    from dataclasses import replace

    from qwentune.apps.webui.common import page_config

    (settings.workdir / "remote.yaml").write_text("model:\n  trust_remote_code: true\n")
    with pytest.raises(UserError, match="allows it only when started with `qwentune webui --trust_remote_code true`"):
        page_config("remote.yaml", "", settings)
    assert page_config("remote.yaml", "", replace(settings, trust_remote_code=True)).model.trust_remote_code


def test_the_command_lines_options_apply_to_every_config_the_page_loads(settings):
    """`qwentune webui --use_4bit true --trust_remote_code true` was accepted and then lost: the page reloaded the
    config file without them (and allowed remote code while loading the model without it)."""
    from dataclasses import replace

    from qwentune.apps.webui.common import initial_config, page_config

    (settings.workdir / "run.yaml").write_text("training:\n  learning_rate: 0.001\n")
    told = replace(settings, config_path=str(settings.workdir / "run.yaml"), trust_remote_code=True,
                   overrides=(("use_4bit", "true"), ("trust_remote_code", "true")))
    for cfg in (initial_config(told), page_config("run.yaml", "", told), page_config("", "Qwen/Qwen2.5-0.5B", told)):
        assert cfg.model.use_4bit and cfg.model.trust_remote_code
    assert initial_config(told).training.learning_rate == 0.001
    assert page_config("", "Qwen/Qwen2.5-0.5B", told).model.model_name_or_path == "Qwen/Qwen2.5-0.5B"  # the row wins
