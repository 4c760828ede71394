"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json
import subprocess
import sys

import pytest

from qwentune.errors import UserError
from tests.helpers import QA, REPO


def test_inference_commands_prompt_file_and_chat(trained, tiny_model_dir, tmp_path):
    base = [sys.executable, "scripts/inference.py", "--model_name_or_path", str(tiny_model_dir), "--adapter_path",
            str(trained / "out"), "--repetition_penalty", "1.0", "--max_new_tokens", "24"]
    one = subprocess.run(base + ["--prompt", QA[0][0]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0 and one.stdout.strip() == QA[0][1], one.stderr[-1500:]

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(q for q, _ in QA) + "\n", encoding="utf-8")
    batch = subprocess.run(base + ["--prompts_file", str(prompts), "--output", str(tmp_path / "answers.jsonl")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert batch.returncode == 0, batch.stderr[-1500:]
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [a["answer"] for a in answers] == [a for _, a in QA]

    session = f"{QA[1][0]}\n/system 你是助手\n/nonsense\n{QA[0][0]}\n/clear\n/exit\n"
    chat = subprocess.run(base, input=session, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert chat.returncode == 0, chat.stderr[-1500:]
    assert f"model> {QA[1][1]}" in chat.stdout and "system prompt set" in chat.stdout
    assert "unknown command /nonsense" in chat.stdout and "conversation cleared" in chat.stdout


def test_inference_and_evaluation_bad_input(trained, tiny_model_dir, tmp_path, capsys):
    from qwentune.cli import main

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    common = ["--model_name_or_path", str(tiny_model_dir), "--adapter_path", str(trained / "out")]
    cases = [
        (["infer", *common, "--prompts_file", str(empty)], "the prompts file is empty"),
        (["evaluate", "--config", "config/eval_config.yaml", *common, "--metrics", "bleu,meteor",
          "--eval_dataset", str(trained / "qa.jsonl")], "eval.metrics: unknown metric 'meteor'; choose from perplexity"),
        (["infer", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", str(tmp_path)], "holds no adapter"),
    ]
    broken = tmp_path / "prompts.json"
    broken.write_text('["one",\n "two" "three"]', encoding="utf-8")
    cases.append((["infer", *common, "--prompts_file", str(broken)], "prompts.json:2: not valid JSON"))
    only_prompts = tmp_path / "questions.jsonl"
    only_prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n", encoding="utf-8")
    cases.append((["evaluate", "--config", "config/eval_config.yaml", *common, "--eval_dataset", str(only_prompts)],
                  "has no reference replies"))
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, last


def test_prompts_file_with_a_bom_loses_the_bom(tmp_path):
    from qwentune.inference.prompts import read_questions

    path = tmp_path / "prompts.txt"
    path.write_bytes("你好\nWhat is 2+2?\n".encode("utf-8-sig"))  # Notepad's "UTF-8 with BOM"
    assert [q.question for q in read_questions(path)] == ["你好", "What is 2+2?"]


@pytest.mark.parametrize("name, text", [
    ("prompts.txt", "Say hi\n你好\n"),
    ("prompts.json", '["Say hi",\n "你好"]'),
    ("prompts.jsonl", '{"prompt": "Say hi"}\n{"prompt": "你好"}\n'),
])
def test_prompts_file_in_another_encoding_names_the_file_and_line(tmp_path, name, text):
    from qwentune.inference.prompts import read_questions

    path = tmp_path / name
    path.write_bytes(text.encode("gbk"))
    with pytest.raises(UserError) as caught:
        read_questions(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (line 2); save it as UTF-8."


def test_prompts_json_item_that_is_not_a_prompt_is_named(tmp_path):
    from qwentune.inference.prompts import read_questions

    path = tmp_path / "prompts.json"
    path.write_text('["one", 2]', encoding="utf-8")
    with pytest.raises(UserError, match="item 2 is neither a string nor an object"):
        read_questions(path)


def test_an_items_system_prompt_is_honoured_by_infer_as_by_compare(tiny_model_dir, tmp_path, capsys):
    """Case 11 of issue 17: the same file through `infer --prompts_file` and `compare --questions-file` gives
    each item its own system prompt; greedy answers are equal on both paths."""
    from qwentune.cli import main

    system = "You are a helpful assistant. 你好，我是一个乐于助人的助手。"
    items = [{"question": QA[1][0], "system": system}, {"question": QA[1][0]}]
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    options = ["--max_new_tokens", "12", "--repetition_penalty", "1.0", "--bf16", "false"]
    assert main(["infer", "--model_name_or_path", str(tiny_model_dir), "--adapter_path", "null", "--prompts_file",
                 str(path), "--output", str(tmp_path / "answers.jsonl"), "--eval_batch_size", "1", *options]) == 0
    inferred = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert main(["compare", "--base-model", str(tiny_model_dir), "--finetuned-model", str(tiny_model_dir),
                 "--questions-file", str(path), "--output", str(tmp_path / "comparison.json"), "--batch-size", "1",
                 *options]) == 0, capsys.readouterr().err[-1500:]
    compared = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))["results"]
    assert inferred[0]["answer"] != inferred[1]["answer"]  # the system prompt changes this model's answer
    assert [r["answer"] for r in inferred] == [r["base"]["answer"] for r in compared]
    assert [r["system"] for r in inferred] == [r["system"] for r in compared] == [system, None]


def test_text_that_is_not_utf8_is_one_line_and_the_chat_goes_on(trained, tiny_model_dir):
    """GBK bytes typed into the chat, and given as --prompt: one line, never the tokenizer's TypeError."""
    base = [sys.executable, "scripts/inference.py", "--model_name_or_path", str(tiny_model_dir), "--adapter_path",
            str(trained / "out"), "--repetition_penalty", "1.0", "--max_new_tokens", "24"]
    session = "你好".encode("gbk") + b"\n" + QA[0][0].encode("utf-8") + b"\n/exit\n"
    chat = subprocess.run(base, input=session, cwd=REPO, capture_output=True, timeout=120)
    out, err = chat.stdout.decode("utf-8"), chat.stderr.decode("utf-8", "replace")
    assert chat.returncode == 0 and "Traceback" not in err, err[-1500:]
    assert "(that line is not UTF-8 text; set the terminal to UTF-8)" in out and f"model> {QA[0][1]}" in out, out

    one = subprocess.run([*base, "--prompt", "你好".encode("gbk")], cwd=REPO, capture_output=True, timeout=120)
    err = one.stderr.decode("utf-8", "replace").strip().splitlines()
    assert one.returncode == 2 and err[-1] == ("error: --prompt is not UTF-8 text; set the terminal (or the shell's "
                                               "locale) to UTF-8."), err
