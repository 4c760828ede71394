"""Windows: a console with a legacy code page (GBK / cp936) and Windows paths.

The console case runs for real here: PYTHONIOENCODING=gbk gives Python the same strict GBK stdout and stderr
that a Chinese Windows console gives it; characters GBK lacks (an emoji, a CJK Extension B character) must
come out as '?' rather than end the command with UnicodeEncodeError."""

import os
import subprocess
import sys

import pytest

from qwentune.data.sources import looks_like_path, resolve
from qwentune.errors import UserError
from qwentune.models.hub import is_local_reference
from qwentune.models.source import resolve_model_source
from tests.helpers import REPO

NOT_IN_GBK = "😀𠀀"  # U+1F600 and U+20000


def run_on_gbk_console(args, cwd, timeout=300):
    env = {**os.environ, "PYTHONIOENCODING": "gbk", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, timeout=timeout)
    return result.returncode, result.stdout.decode("gbk"), result.stderr.decode("gbk")


def test_the_gbk_console_itself_cannot_encode_these_characters():
    with pytest.raises(UnicodeEncodeError):
        NOT_IN_GBK.encode("gbk")


def test_answers_with_emoji_print_on_a_gbk_console(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"用一句话介绍 LoRA {NOT_IN_GBK}\n", encoding="utf-8")
    code, out, err = run_on_gbk_console(
        [str(REPO / "scripts" / "inference.py"), "--model_name_or_path", str(tiny_model_dir), "--prompts_file",
         str(prompts), "--adapter_path", "null", "--max_new_tokens", "8", "--bf16", "false"], cwd=tmp_path)
    assert code == 0, err
    assert "### 用一句话介绍 LoRA ??" in out  # Chinese as is; what GBK lacks as '?'
    assert "UnicodeEncodeError" not in err


def test_messages_and_listings_with_emoji_on_a_gbk_console(tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"我的数据:\n  file: chats.jsonl\n  description: 客服对话 {NOT_IN_GBK}\n", encoding="utf-8")
    code, out, err = run_on_gbk_console(["-m", "qwentune.cli", "datasets", "--dataset_registry", str(registry)],
                                        cwd=tmp_path)
    assert code == 0, err
    assert "我的数据" in out and "客服对话 ??" in out
    code, out, err = run_on_gbk_console(
        ["-m", "qwentune.cli", "datasets", "--dataset_registry", f"缺失{NOT_IN_GBK}.yaml"], cwd=tmp_path)
    # Python's stderr already escapes what it cannot encode (errors='backslashreplace'): left as it is.
    assert code == 2 and err.startswith("error: 缺失\\U0001f600\\U00020000.yaml: dataset registry file not found")
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["C:\\models\\Qwen2.5-0.5B", "D:/models/qwen", ".\\models\\qwen", "models\\qwen"])
def test_windows_paths_are_paths_not_hub_ids(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert is_local_reference(name) and looks_like_path(name)
    with pytest.raises(UserError, match="model directory not found; check --model_name_or_path"):
        resolve_model_source(name)
    with pytest.raises(UserError, match="file not found"):
        resolve(name)


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-0.5B-Instruct", "chinese_alpaca", "OpenAssistant/oasst1"])
def test_hub_ids_and_names_stay_what_they_are(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert not is_local_reference(name) and not looks_like_path(name)
