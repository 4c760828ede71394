"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwentune.config import GenerationConfig, load_config
from qwentune.errors import UserError
from qwentune.generate import (find_adapter, generate_batch, load_for_inference, merge_adapter, prompt_length,
                               reply_text, stream)
from qwentune.train import train

from .conftest import build_tiny_qwen2, build_tiny_tokenizer
from .test_train import QA, silent, tiny_config, tiny_options

REPO = Path(__file__).resolve().parents[1]
GREEDY = GenerationConfig(max_new_tokens=40, do_sample=False, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter that has memorized the QA pairs (and to end each reply with <|im_end|>)."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(tmp, tiny_model_dir, num_train_epochs=6, learning_rate=0.01, lora_dropout=0.0, save_steps=1000,
                      eval_steps=1000)
    train(cfg, log=silent)
    return tmp


def questions():
    return [[{"role": "user", "content": q}] for q, _ in QA]


def test_finetuned_model_answers_and_stops_by_itself(trained, tiny_model_dir):
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), dtype=torch.float32, log=silent)
    answers = generate_batch(loaded, questions(), GREEDY)
    assert [a.text for a in answers] == [a for _, a in QA]
    assert all(a.stopped and a.new_tokens < 40 for a in answers)  # ended at <|im_end|>, not at max_new_tokens


def test_answer_all_batches_prompts_of_similar_length_and_keeps_their_order(trained, tiny_model_dir, monkeypatch):
    import qwentune.generate
    from qwentune.evaluate import answer_all

    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), dtype=torch.float32, log=silent)
    prompts = questions() + [[{"role": "user", "content": "A much longer question, " * 6 + "isn't it?"}]]
    batches = []
    real = qwentune.generate.generate_batch

    def recording(loaded_, conversations, *args):
        batches.append([prompt_length(loaded_.tokenizer, c) for c in conversations])
        return real(loaded_, conversations, *args)

    monkeypatch.setattr(qwentune.generate, "generate_batch", recording)
    answers = answer_all(loaded, prompts, GREEDY, batch_size=2)
    lengths = [length for batch in batches for length in batch]
    assert lengths == sorted(lengths, reverse=True) and len(batches) == (len(prompts) + 1) // 2
    assert [a.text for a in answers[:-1]] == [a for _, a in QA]  # back in the caller's order


def test_a_reply_cut_inside_a_character_drops_the_half_character(tiny_tokenizer):
    ids = tiny_tokenizer("答案是好", add_special_tokens=False)["input_ids"]
    cut = next(n for n in range(len(ids), 0, -1) if tiny_tokenizer.decode(ids[:n]).endswith("\ufffd"))
    assert reply_text(tiny_tokenizer, ids[:cut], stopped=False) == tiny_tokenizer.decode(ids[:cut]).rstrip("\ufffd")
    assert "\ufffd" not in reply_text(tiny_tokenizer, ids[:cut], stopped=False)
    assert reply_text(tiny_tokenizer, ids, stopped=True) == "答案是好"


def test_adapter_off_is_the_base_model_alone(trained, tiny_model_dir):
    paired = load_for_inference(str(tiny_model_dir), str(trained / "out"), dtype=torch.float32, log=silent)
    alone = load_for_inference(str(tiny_model_dir), None, dtype=torch.float32, log=silent)
    settings = GenerationConfig(max_new_tokens=12, do_sample=False, repetition_penalty=1.0)
    assert [a.text for a in generate_batch(paired, questions(), settings, adapter=False)] == [
        a.text for a in generate_batch(alone, questions(), settings)]


def test_streaming_equals_batched_greedy(trained, tiny_model_dir):
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), dtype=torch.float32, log=silent)
    settings = GenerationConfig(max_new_tokens=16, do_sample=False, repetition_penalty=1.0)
    for conversation in questions():
        streamed = "".join(stream(loaded, conversation, settings)).strip()
        assert streamed == generate_batch(loaded, [conversation], settings)[0].text
        with_base = "".join(stream(loaded, conversation, settings, adapter=False)).strip()
        assert with_base == generate_batch(loaded, [conversation], settings, adapter=False)[0].text


def test_seeded_sampling_repeats(trained, tiny_model_dir):
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), dtype=torch.float32, log=silent)
    sampling = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=1.0, repetition_penalty=1.0)
    first = [a.text for a in generate_batch(loaded, questions(), sampling, adapter=False, seed=3)]
    assert first == [a.text for a in generate_batch(loaded, questions(), sampling, adapter=False, seed=3)]


def test_merged_model_equals_base_plus_adapter(trained, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), dtype=torch.float32, log=silent)
    ids = torch.tensor([[1, 5, 9, 20, 33, 2, 40]])
    with torch.no_grad():
        adapted = loaded.model(ids).logits
    merge_adapter(loaded, tmp_path / "merged", dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()  # plain transformers
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted, atol=1e-5, rtol=1e-5)
    assert find_adapter(tmp_path / "merged")[0] == "merged"
    as_merged = load_for_inference(str(tiny_model_dir), str(tmp_path / "merged"), dtype=torch.float32, log=silent)
    assert [a.text for a in generate_batch(as_merged, questions(), GREEDY)] == [a for _, a in QA]


def test_find_adapter_picks_final_then_best_then_newest(trained, tmp_path):
    assert find_adapter(trained / "out") == ("adapter", trained / "out", "the adapter in this directory")
    run = tmp_path / "run"
    for step in (2, 10):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    assert find_adapter(run)[1] == run / "checkpoint-10"
    (run / "run_summary.json").write_text(json.dumps({"best_checkpoint": str(run / "checkpoint-2")}))
    assert find_adapter(run)[1:] == (run / "checkpoint-2", "the best checkpoint by eval loss")
    with pytest.raises(UserError, match="holds no adapter"):
        find_adapter(tmp_path)


def test_adapter_on_a_different_base_is_refused(trained, tmp_path):
    other = build_tiny_tokenizer()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(other), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "other")
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(UserError, match="does not fit base model"):
        load_for_inference(str(tmp_path / "other"), str(trained / "out"), log=silent)


def test_seed_evaluate_command_writes_results_and_finetuning_helps(trained, tiny_model_dir, tmp_path):
    options = tiny_options(trained, tiny_model_dir)
    common = ["--config", "config/eval_config.yaml", "--model_name_or_path", options["model_name_or_path"],
              "--processed_dir", str(trained / "cache" / "processed" / next(
                  p.name for p in (trained / "cache" / "processed").iterdir())),
              "--max_new_tokens", "24", "--repetition_penalty", "1.0", "--eval_output_dir", str(tmp_path / "eval")]
    results = {}
    for name, adapter in (("tuned", str(trained / "out")), ("base", "null")):
        run = subprocess.run([sys.executable, "scripts/evaluate.py", *common, "--adapter_path", adapter], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        out = Path(run.stdout.strip().splitlines()[-1].removeprefix("results in "))
        results[name] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert (out / "summary.md").read_text(encoding="utf-8").startswith("# Evaluation")
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == results[name]["metrics"]["examples"] == 4
    tuned, base = results["tuned"]["metrics"], results["base"]["metrics"]
    assert tuned["perplexity"] < base["perplexity"] / 10
    # Corpus BLEU-4 is 0 for both: 1-3 token replies hold no 4-grams; the smoothed sentence mean still ranks them.
    assert tuned["rouge_l"] > base["rouge_l"] and tuned["bleu_4_sentence_mean"] > base["bleu_4_sentence_mean"]
    assert tuned["stopped_by_itself"] == 1.0
    assert results["tuned"]["generation"]["max_new_tokens"] == 24 and "versions" in results["tuned"]


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
