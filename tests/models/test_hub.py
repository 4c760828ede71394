"""The hub is probed once per process: a training run that resolves the model and loads its tokenizer
asks the network once, and offline says so in one sentence."""

import pytest

from qwentune.errors import UserError
from qwentune.models import hub
from qwentune.models.source import resolve_model_source
from qwentune.models.tokenizer import load_tokenizer


def test_an_offline_hub_is_probed_once_and_named(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub._probe.cache_clear()
    with pytest.raises(UserError, match=r"cannot reach the Hugging Face hub \(http://127.0.0.1:9\) to fetch model"):
        resolve_model_source("Qwen/Qwen2-0.5B")
    with pytest.raises(UserError, match="to fetch tokenizer 'Qwen/Qwen2-0.5B'"):
        load_tokenizer("Qwen/Qwen2-0.5B")
    probes = hub._probe.cache_info()
    assert (probes.misses, probes.hits) == (1, 1)  # one connection attempt; the second question got its answer
    hub._probe.cache_clear()
