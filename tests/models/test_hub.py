"""The hub is probed once per process: a training run that resolves the model and loads its tokenizer
asks the network once, and offline says so in one sentence, naming the hub it tried (the Hugging Face hub,
the HF_ENDPOINT mirror, or ModelScope under --hub modelscope) and the ways out. All offline."""

import importlib.util
import sys

import pytest

from qwentune.cli import main
from qwentune.data.registry import BUILTIN, load_registry
from qwentune.data.sources import download
from qwentune.errors import UserError
from qwentune.models import hub
from qwentune.models.source import resolve_model_source
from qwentune.models.tokenizer import load_tokenizer


def test_an_offline_hub_is_probed_once_and_named(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub._probe.cache_clear()
    with pytest.raises(UserError, match=r"cannot reach the Hugging Face hub mirror http://127.0.0.1:9 \(HF_ENDPOINT\) to fetch model"):
        resolve_model_source("Qwen/Qwen2-0.5B")
    with pytest.raises(UserError, match="to fetch tokenizer 'Qwen/Qwen2-0.5B'"):
        load_tokenizer("Qwen/Qwen2-0.5B")
    probes = hub._probe.cache_info()
    assert (probes.misses, probes.hits) == (1, 1)  # one connection attempt; the second question got its answer
    hub._probe.cache_clear()


# --- which hub, and what the error says when it cannot be reached (issue 21: ModelScope and mirrors) ---


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network to any hub: both point at a closed local port; caches are empty directories."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub._probe.cache_clear()
    yield
    hub.select_hub("huggingface")  # the process-wide choice goes back to the default for later tests
    hub._probe.cache_clear()


def cli_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and not any("Traceback" in line for line in err)
    return err[-1]


def test_the_hugging_face_hub_offline_names_both_ways_out(offline):
    with pytest.raises(UserError) as caught:
        resolve_model_source("Qwen/Qwen2.5-0.5B-Instruct")
    message = str(caught.value)
    assert message.startswith("cannot reach the Hugging Face hub (https://huggingface.co) to fetch model "
                              "'Qwen/Qwen2.5-0.5B-Instruct'")
    assert "use a mirror (HF_ENDPOINT=https://hf-mirror.com) or ModelScope (--hub modelscope)" in message
    assert "or use local files: pass a local model directory as --model_name_or_path" in message


def test_a_mirror_that_cannot_be_reached_is_named(offline, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(UserError, match=r"^cannot reach the Hugging Face hub mirror http://127.0.0.1:9 \(HF_ENDPOINT\) "
                                        r"to fetch model .*try another mirror \(HF_ENDPOINT\) or ModelScope"):
        resolve_model_source("Qwen/Qwen3-0.6B")


def test_hub_modelscope_without_the_package_is_one_line(offline, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # how Python marks a package as absent
    err = cli_error(capsys, ["train", "--hub", "modelscope", "--model_name_or_path", "Qwen/Qwen2.5-0.5B-Instruct",
                             "--output_dir", str(tmp_path / "out"), "--processed_dir", str(tmp_path / "processed")])
    assert err == ("error: --hub modelscope needs the modelscope package, which is not installed; pip install "
                   "'qwentune[modelscope]' (or pip install modelscope), or use the Hugging Face hub or a mirror "
                   "(--hub huggingface, HF_ENDPOINT=https://hf-mirror.com).")
    assert not (tmp_path / "out").exists() and not (tmp_path / "processed").exists()


def test_hub_modelscope_offline_names_modelscope_and_the_ways_out(offline, tmp_path, capsys):
    if importlib.util.find_spec("modelscope") is None:
        pytest.skip("the modelscope package (the modelscope extra) is not installed")
    err = cli_error(capsys, ["train", "--hub", "modelscope", "--model_name_or_path", "Qwen/Qwen2.5-0.5B-Instruct",
                             "--output_dir", str(tmp_path / "out")])
    assert err.startswith("error: cannot reach ModelScope (http://127.0.0.1:9) to fetch model "
                          "'Qwen/Qwen2.5-0.5B-Instruct': this machine looks offline; use the Hugging Face hub or "
                          "a mirror instead (--hub huggingface, HF_ENDPOINT=https://hf-mirror.com); or use local files")
    assert not (tmp_path / "out").exists()
    # A named dataset is fetched by its ModelScope id there.
    err = cli_error(capsys, ["download", "--hub", "modelscope", "alpaca_gpt4_data", "--cache_dir", str(tmp_path / "c")])
    assert err.startswith("error: cannot reach ModelScope (http://127.0.0.1:9) to fetch dataset "
                          "'AI-ModelScope/alpaca-gpt4-data-en'")
    assert not (tmp_path / "c" / "alpaca_gpt4_data.jsonl").exists()


def test_a_dataset_without_a_modelscope_copy_says_so(offline):
    hub.select_hub("modelscope")
    with pytest.raises(UserError, match=r"^dataset 'chinese_alpaca' has no ModelScope id in the registry .*"
                                        r"--hub huggingface, HF_ENDPOINT=https://hf-mirror.com.*modelscope_id"):
        download(BUILTIN["chinese_alpaca"], "unused")
    # And on the Hugging Face hub, offline, its error does not send the user to ModelScope.
    hub.select_hub("huggingface")
    with pytest.raises(UserError) as caught:
        download(BUILTIN["chinese_alpaca"], "unused")
    assert "use a mirror (HF_ENDPOINT=https://hf-mirror.com); or use local files" in str(caught.value)
    assert "--hub modelscope" not in str(caught.value)


def test_the_registry_names_modelscope_ids(tmp_path):
    assert BUILTIN["alpaca_gpt4_data"].modelscope_id == "AI-ModelScope/alpaca-gpt4-data-en"
    assert BUILTIN["alpaca_gpt4_data_zh"].modelscope_id == "AI-ModelScope/alpaca-gpt4-data-zh"
    assert BUILTIN["yahma/alpaca-cleaned"].modelscope_id == "AI-ModelScope/alpaca-cleaned"
    assert all(BUILTIN[name].modelscope_id is None for name in ("chinese_alpaca", "tatsu-lab/alpaca",
                                                                "OpenAssistant/oasst1"))
    registry = tmp_path / "registry.yaml"
    registry.write_text("mine:\n  hub_id: me/chats\n  modelscope_id: me-ms/chats\n", encoding="utf-8")
    assert load_registry(str(registry))["mine"].modelscope_id == "me-ms/chats"


def test_the_config_key_chooses_the_hub(offline, tmp_path, capsys):
    from qwentune.config import load_config

    assert load_config("config/training_config.yaml").model.hub == "huggingface"
    cli_error(capsys, ["preprocess", "--hub", "modelscope", "--dataset_name", "chinese_alpaca",
                       "--cache_dir", str(tmp_path / "c"), "--output_dir", str(tmp_path / "p")])
    assert hub.selected_hub() == "modelscope"
    err = cli_error(capsys, ["train", "--hub", "huggingface", "--model_name_or_path", "Qwen/Qwen3-0.6B",
                             "--output_dir", str(tmp_path / "out")])
    assert hub.selected_hub() == "huggingface" and "cannot reach the Hugging Face hub" in err


def test_hub_modelscope_takes_the_model_from_modelscope_s_cache_offline(offline, tmp_path, tiny_model_dir):
    """The right hub is chosen: a model that only ModelScope's cache holds (in the layout modelscope itself
    reuses, models/<owner>/<name with '.' as '___'>) resolves offline under --hub modelscope, and not otherwise.
    In a fresh process: modelscope reads MODELSCOPE_CACHE once, when first imported."""
    if importlib.util.find_spec("modelscope") is None:
        pytest.skip("the modelscope package (the modelscope extra) is not installed")
    import shutil
    import subprocess

    cached = tmp_path / "ms" / "models" / "Qwen" / "Qwen2___5-0___5B-Instruct"
    shutil.copytree(tiny_model_dir, cached)
    script = f"""
from qwentune.errors import UserError
from qwentune.models import hub
from qwentune.models.source import resolve_model_source
from qwentune.models.tokenizer import load_tokenizer
hub.select_hub("modelscope")
print(resolve_model_source("Qwen/Qwen2.5-0.5B-Instruct"))
assert load_tokenizer("Qwen/Qwen2.5-0.5B-Instruct").get_vocab() == load_tokenizer({str(tiny_model_dir)!r}).get_vocab()
hub.select_hub("huggingface")
try:
    resolve_model_source("Qwen/Qwen2.5-0.5B-Instruct")
except UserError as exc:
    print(str(exc).split(" to fetch")[0])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(cached), "cannot reach the Hugging Face hub (https://huggingface.co)"]
