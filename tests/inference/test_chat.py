"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json
import subprocess
import sys

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
          "--eval_dataset", str(trained / "qa.jsonl")], "unknown metric meteor"),
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
