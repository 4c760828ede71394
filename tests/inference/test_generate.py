"""Generation, streaming, merging, evaluation and the inference commands, on a tiny model trained to answer."""


from qwentune.config import GenerationConfig
from qwentune.inference.generate import generate_batch, prompt_length, reply_text, stream
from qwentune.models.load import load_for_inference
from tests.helpers import FP32, QA, silent

GREEDY = GenerationConfig(max_new_tokens=40, do_sample=False, repetition_penalty=1.0)


def questions():
    return [[{"role": "user", "content": q}] for q, _ in QA]


def test_finetuned_model_answers_and_stops_by_itself(trained, tiny_model_dir):
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    answers = generate_batch(loaded, questions(), GREEDY)
    assert [a.text for a in answers] == [a for _, a in QA]
    assert all(a.stopped and a.new_tokens < 40 for a in answers)  # ended at <|im_end|>, not at max_new_tokens


def test_answer_all_batches_prompts_of_similar_length_and_keeps_their_order(trained, tiny_model_dir, monkeypatch):
    import qwentune.inference.generate
    from qwentune.inference.generate import answer_all

    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    prompts = questions() + [[{"role": "user", "content": "A much longer question, " * 6 + "isn't it?"}]]
    batches = []
    real = qwentune.inference.generate.generate_batch

    def recording(loaded_, conversations, *args):
        batches.append([prompt_length(loaded_.tokenizer, c) for c in conversations])
        return real(loaded_, conversations, *args)

    monkeypatch.setattr(qwentune.inference.generate, "generate_batch", recording)
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
    paired = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    alone = load_for_inference(str(tiny_model_dir), None, FP32, log=silent)
    settings = GenerationConfig(max_new_tokens=12, do_sample=False, repetition_penalty=1.0)
    assert [a.text for a in generate_batch(paired, questions(), settings, adapter=False)] == [
        a.text for a in generate_batch(alone, questions(), settings)]


def test_streaming_equals_batched_greedy(trained, tiny_model_dir):
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    settings = GenerationConfig(max_new_tokens=16, do_sample=False, repetition_penalty=1.0)
    for conversation in questions():
        streamed = "".join(stream(loaded, conversation, settings)).strip()
        assert streamed == generate_batch(loaded, [conversation], settings)[0].text
        with_base = "".join(stream(loaded, conversation, settings, adapter=False)).strip()
        assert with_base == generate_batch(loaded, [conversation], settings, adapter=False)[0].text


def test_seeded_sampling_repeats(trained, tiny_model_dir):
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    sampling = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=1.0, repetition_penalty=1.0)
    first = [a.text for a in generate_batch(loaded, questions(), sampling, adapter=False, seed=3)]
    assert first == [a.text for a in generate_batch(loaded, questions(), sampling, adapter=False, seed=3)]




def test_generate_batch_leaves_the_tokenizers_padding_side_alone(trained, tiny_model_dir):
    """Generation pads left for itself only: the shared tokenizer pads right for training and perplexity."""
    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    loaded.tokenizer.padding_side = "right"
    answers = generate_batch(loaded, questions(), GREEDY)
    assert loaded.tokenizer.padding_side == "right"
    assert [a.text for a in answers] == [a for _, a in QA]  # left padding was used: the answers are right


def test_a_stream_closed_early_stops_generating_at_once(trained, tiny_model_dir):
    """A reader that stops (a web page whose visitor left) stops the generation thread: when close() returns it
    has ended, so whoever serializes use of the model can hand it on with nothing still running on it."""
    import threading

    loaded = load_for_inference(str(tiny_model_dir), str(trained / "out"), FP32, log=silent)
    long_reply = GenerationConfig(max_new_tokens=400, do_sample=False, repetition_penalty=1.0)
    before = set(threading.enumerate())
    pieces = stream(loaded, questions()[0], long_reply, adapter=False)  # the random base rambles to the limit
    assert next(pieces)
    pieces.close()
    assert set(threading.enumerate()) <= before  # the generation thread has ended
    whole = "".join(stream(loaded, questions()[0], long_reply, adapter=False))  # and a full stream still runs
    assert len(whole) > 20
