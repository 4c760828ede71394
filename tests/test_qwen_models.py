"""Qwen2.5 and Qwen3 as first-class models: tiny random models in their real configurations (Qwen2.5: the Qwen2
architecture with q/k/v bias; Qwen3: q/k RMSNorm, no q/k/v bias, its own head_dim) with their real chat
templates (tests/templates), through the whole chain: label masks, packing, the lean head and the fused CPU
kernels, generation stopping at <|im_end|> (Qwen3 with thinking off and on), merge, resume and GGUF export."""

from __future__ import annotations

import json
import signal
from dataclasses import replace

import pytest
import torch

from qwentune.config import GenerationConfig
from qwentune.data.tokenize import IGNORE_INDEX
from qwentune.thinking import split_thinking
from qwentune.training.train import train
from tests.helpers import (
    FP32,
    QA,
    QWEN3_TEMPLATE,
    QWEN25_TEMPLATE,
    build_tiny_qwen2,
    build_tiny_qwen3,
    build_tiny_tokenizer,
    signal_self_at,
    silent,
    tiny_config,
)

GREEDY = GenerationConfig(max_new_tokens=40, do_sample=False, repetition_penalty=1.0)
# Each question's reasoning in the Qwen3 data: the same questions are also asked without reasoning.
REASONING = {q: r for (q, _), r in zip(QA, ["首都。", "Recall the capital.", "健康。", "Add."])}
# Every speed-up a CPU run can take, insisted on (true), so a model they do not fit fails here.
FAST = dict(packing="true", lean_head="true", cpu_kernels="true", lora_dropout=0.0, num_train_epochs=6,
            learning_rate=0.01, save_steps=1000, eval_steps=1000)


def data_file(tmp_path, thinking: bool, repeats: int = 8):
    """OpenAI-format conversations: the QA pairs, and for a thinking model the same questions answered with
    a reasoning_content field too."""
    rows = []
    for _ in range(repeats):
        for question, answer in QA:
            rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
            if thinking:
                rows.append({"messages": [{"role": "user", "content": question},
                                          {"role": "assistant", "content": answer,
                                           "reasoning_content": REASONING[question]}]})
    path = tmp_path / "conversations.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


FLAVORS = {"qwen2.5": (QWEN25_TEMPLATE, build_tiny_qwen2), "qwen3": (QWEN3_TEMPLATE, build_tiny_qwen3)}


@pytest.fixture(scope="module", params=sorted(FLAVORS))
def flavor(request, tmp_path_factory):
    """(name, tokenizer, model directory) of a tiny Qwen2.5 or Qwen3."""
    template, build = FLAVORS[request.param]
    tokenizer = build_tiny_tokenizer(template=template)
    return request.param, tokenizer, build(tmp_path_factory.mktemp(request.param), tokenizer)


def settings_of(flavor_name: str, tmp_path, model_dir, **overrides):
    return tiny_config(tmp_path, model_dir, dataset_name=str(data_file(tmp_path, flavor_name == "qwen3")),
                       **FAST | overrides)


@pytest.fixture(scope="module")
def trained(flavor, tmp_path_factory):
    """(flavor, run directory, summary) of a LoRA trained to memorize the data with every CPU speed-up."""
    name, _, model_dir = flavor
    tmp = tmp_path_factory.mktemp(f"trained_{name}")
    return flavor, tmp, train(settings_of(name, tmp, model_dir), log=silent).summary


def questions():
    return [[{"role": "user", "content": q}] for q, _ in QA]


def test_tiny_models_have_their_real_configuration(tmp_path):
    from transformers import AutoModelForCausalLM

    tokenizer = build_tiny_tokenizer(template=QWEN3_TEMPLATE)
    qwen3 = AutoModelForCausalLM.from_pretrained(build_tiny_qwen3(tmp_path / "q3", tokenizer))
    attention = qwen3.model.layers[0].self_attn
    assert type(qwen3).__name__ == "Qwen3ForCausalLM"
    assert attention.q_proj.bias is None and attention.k_proj.bias is None and attention.v_proj.bias is None
    assert type(attention.q_norm).__name__ == type(attention.k_norm).__name__ == "Qwen3RMSNorm"
    assert attention.head_dim == 32 != qwen3.config.hidden_size // qwen3.config.num_attention_heads
    assert attention.q_proj.out_features == 4 * 32 and attention.q_norm.weight.shape == (32,)
    qwen25 = AutoModelForCausalLM.from_pretrained(build_tiny_qwen2(tmp_path / "q25", build_tiny_tokenizer(
        template=QWEN25_TEMPLATE)))
    attention = qwen25.model.layers[0].self_attn
    assert attention.q_proj.bias is not None and attention.o_proj.bias is None  # Qwen2 / Qwen2.5: q/k/v bias


def test_fused_rms_norm_takes_qwen3s_q_and_k_norms_and_changes_nothing(tmp_path):
    from transformers import AutoModelForCausalLM

    from qwentune.training.speedups.fused_norm import use_fused_rms_norm

    directory = build_tiny_qwen3(tmp_path, build_tiny_tokenizer(template=QWEN3_TEMPLATE))
    plain, fused = (AutoModelForCausalLM.from_pretrained(directory) for _ in range(2))
    # Per layer: input, post-attention, q and k norms; and the final norm.
    assert use_fused_rms_norm(fused) == 2 * 4 + 1
    ids = torch.tensor([[1, 5, 9, 20, 33, 2, 40, 41]])
    results = []
    for model in (plain, fused):
        loss = model(ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), model.model.layers[0].self_attn.q_norm.weight.grad.clone()))
    torch.testing.assert_close(results[1], results[0], atol=1e-5, rtol=1e-5)


def test_training_takes_every_cpu_speed_up_and_labels_only_replies(trained):
    (name, tokenizer, model_dir), tmp, summary = trained
    speedups = summary["speedups"]
    assert speedups["packing"] and speedups["lean_head"] and speedups["attn_implementation"] == "qwentune_packed"
    assert {"fused_lora", "fused_rms_norm"} <= set(speedups["cpu_kernels"]), speedups
    assert summary["final_train_loss"] < 0.2 * summary["first_train_loss"]
    from qwentune.data.preprocess import load_or_preprocess

    cfg = settings_of(name, tmp, model_dir)
    splits, _ = load_or_preprocess(cfg.data, str(model_dir), tokenizer, cfg.training.seed, silent)
    replies = {tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) for labels in splits["train"]["labels"]}
    expected = {a + "<|im_end|>" for _, a in QA}
    if name == "qwen3":
        expected |= {f"<think>\n{REASONING[q]}\n</think>\n\n{a}<|im_end|>" for q, a in QA}
    assert replies == expected


def test_answers_and_stops_at_im_end(trained):
    from qwentune.inference.generate import generate_batch
    from qwentune.models.load import load_for_inference

    (name, _, model_dir), tmp, _ = trained
    loaded = load_for_inference(str(model_dir), str(tmp / "out"), FP32, log=silent)
    # Qwen3 thinking off: the prompt ends with the empty think block, as the replies without reasoning were
    # trained; Qwen2.5's template has no thinking and ignores the switch.
    answers = generate_batch(loaded, questions(), replace(GREEDY, enable_thinking=False))
    assert [a.text for a in answers] == [a for _, a in QA]
    assert all(a.stopped and a.new_tokens < 40 for a in answers)
    if name == "qwen3":  # thinking on: the trained reasoning, then the answer, then <|im_end|>
        answers = generate_batch(loaded, questions(), replace(GREEDY, enable_thinking=True))
        assert [split_thinking(a.text) for a in answers] == [(REASONING[q], a) for q, a in QA]
        assert all(a.stopped for a in answers)


def test_merged_model_equals_base_plus_adapter(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    from qwentune.export.merge import merge_adapter
    from qwentune.models.load import load_for_inference

    (_, _, model_dir), tmp, _ = trained
    loaded = load_for_inference(str(model_dir), str(tmp / "out"), FP32, log=silent)
    ids = torch.tensor([[1, 5, 9, 20, 33, 2, 40]])
    with torch.no_grad():
        adapted = loaded.model(ids).logits
    merge_adapter(loaded, tmp_path / "merged", dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted, atol=1e-5, rtol=1e-5)


def test_interrupted_run_resumes_to_the_same_adapter(trained, tmp_path):
    from safetensors.torch import load_file

    (name, _, model_dir), tmp, _ = trained
    first = train(settings_of(name, tmp_path, model_dir), log=silent, callbacks=(signal_self_at(3),))
    assert first.interrupted_by == signal.SIGTERM
    train(settings_of(name, tmp_path, model_dir), log=silent)
    reference = load_file(tmp / "out" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert resumed.keys() == reference.keys()
    for key, tensor in reference.items():
        assert (resumed[key] - tensor).abs().max().item() <= 1e-6, key


def test_gguf_export_is_verified(trained, tmp_path, capsys):
    from qwentune import cli

    (_, _, model_dir), tmp, _ = trained
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(q for q, _ in QA) + "\n", encoding="utf-8")
    out = tmp_path / "export"
    code = cli.main(["export", "--model_name_or_path", str(model_dir), "--adapter_path", str(tmp / "out"),
                     "--prompts_file", str(prompts), "--max_new_tokens", "12", "--output_dir", str(out),
                     "--gguf_type", "f16"])
    captured = capsys.readouterr()
    assert code in (0, None), captured.err[-2000:]
    record = json.loads((out / "qwentune_export.json").read_text(encoding="utf-8"))
    sides = {side["name"]: side for side in record["verification"]["sides"]}
    assert sides["merged"]["agreed"] == sides["merged"]["total"] == len(QA)
    assert "every side that must agree does." in captured.out


# Thinking is Qwen3's: these tests take the Qwen3 flavor of the module's fixtures only.
qwen3_only = pytest.mark.parametrize("flavor", ["qwen3"], indirect=True)


@qwen3_only
def test_comparison_shows_thinking_apart_and_scores_the_answer_only(trained, tmp_path):
    from qwentune.apps.compare import compare_batch, load_pair
    from qwentune.apps.report import write_comparison
    from qwentune.inference.prompts import Question

    (_, _, model_dir), tmp, _ = trained
    pair = load_pair(str(model_dir), str(tmp / "out"), FP32, log=silent)
    questions = [Question(question=q, reference=a) for q, a in QA]
    report = compare_batch(pair, questions, replace(GREEDY, enable_thinking=True))
    assert report["generation"]["enable_thinking"] is True
    for row, (question, answer) in zip(report["results"], QA):
        assert row["finetuned"]["answer"] == answer and row["finetuned"]["thinking"] == REASONING[question]
        assert all(score == 100 for score in row["finetuned"]["scores"].values()), row["finetuned"]["scores"]
    html_path, markdown_path = write_comparison(report, tmp_path / "comparison.json")[1:]
    page = html_path.read_text(encoding="utf-8")
    assert page.count('<details class="thinking">') >= len(QA) and "Recall the capital." in page
    assert "*Fine-tuned thinking (not scored):* Recall the capital." in markdown_path.read_text(encoding="utf-8")


@qwen3_only
def test_evaluation_scores_answers_against_answers(trained):
    from qwentune.evaluation.evaluate import evaluate_side
    from qwentune.evaluation.metrics import text_metrics
    from qwentune.models.load import load_for_inference
    from qwentune.thinking import with_reasoning

    (name, _, model_dir), tmp, _ = trained
    cfg = settings_of(name, tmp, model_dir, max_new_tokens=40, repetition_penalty=1.0, enable_thinking=True,
                      metrics=["bleu", "rouge"])
    loaded = load_for_inference(str(model_dir), str(tmp / "out"), FP32, log=silent)
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": with_reasoning(a, REASONING[q])}]
                     for q, a in QA]
    metrics, rows = evaluate_side(loaded, conversations, cfg)
    assert [(r["prediction"], r["thinking"], r["reference"]) for r in rows] == [(a, REASONING[q], a) for q, a in QA]
    perfect = text_metrics([a for _, a in QA], [a for _, a in QA])
    assert {k: metrics[k] for k in perfect} == perfect


@qwen3_only
def test_a_served_chat_request_may_switch_thinking(trained):
    from qwentune.apps.serve_requests import ApiError, Served, parse_chat

    (_, tokenizer, _), _, _ = trained
    served = Served({"m": True}, tokenizer, replace(GREEDY, enable_thinking=False), 512)
    body = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}]}
    empty_think = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tokenizer.decode(parse_chat(body, served).prompt_ids).endswith(empty_think)  # the server's setting
    on = parse_chat(body | {"chat_template_kwargs": {"enable_thinking": True}}, served)
    assert tokenizer.decode(on.prompt_ids).endswith("<|im_start|>assistant\n")
    with pytest.raises(ApiError, match="enable_thinking"):
        parse_chat(body | {"chat_template_kwargs": {"enable_thinking": "yes"}}, served)
