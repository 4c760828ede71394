"""verify's comparison: agreement counted per prompt, the first difference named, the exit rule."""

from __future__ import annotations

from qwentune.export.verify import Replies, agreement, format_table


def test_agreement_counts_identical_replies_and_names_the_first_difference(tiny_tokenizer):
    ids = lambda text: tuple(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    reference = Replies("adapter on base", ["Paris", "Eat well"], [ids("Paris"), ids("Eat well")], True)
    same = Replies("merged", ["Paris", "Eat well"], [ids("Paris"), ids("Eat well")], True)
    other = Replies("GGUF q8_0 (llama.cpp)", ["Paris", "Eat less"], [ids("Paris"), ids("Eat less")], False)
    assert agreement(reference, same, tiny_tokenizer).agreed == 2
    result = agreement(reference, other, tiny_tokenizer)
    assert (result.agreed, result.total, result.failed) == (1, 2, False)
    position = next(i for i, (a, b) in enumerate(zip(ids("Eat well"), ids("Eat less"))) if a != b)
    first = lambda text: f"{tiny_tokenizer.decode([ids(text)[position]])!r} ({ids(text)[position]})"  # noqa: E731
    assert result.first_difference == f"prompt 2, token {position + 1}: {first('Eat well')} vs {first('Eat less')}"


def test_a_side_that_must_agree_and_does_not_fails_the_check(tiny_tokenizer):
    reference = Replies("adapter on base", ["a", "b"], None, True)
    server = Replies("server", ["a", "c"], None, True)
    result = agreement(reference, server, tiny_tokenizer)
    assert result.failed and result.first_difference == "prompt 2, character 1: 'b' vs 'c'"
    table = format_table(reference, [result])
    assert "1/2" in table and "FAILED: server answered differently." in table.splitlines()


def test_a_reply_that_stops_early_differs_at_its_end(tiny_tokenizer):
    reference = Replies("model", ["x"], [(5, 6, 7)], True)
    shorter = Replies("merged", ["x"], [(5, 6)], True)
    assert agreement(reference, shorter, tiny_tokenizer).first_difference.endswith("vs (end)")


def test_same_start_is_the_share_of_reference_tokens_before_each_first_difference(tiny_tokenizer):
    reference = Replies("model", ["", ""], [(1, 2, 3, 4), (5, 6)], True)
    other = Replies("GGUF q8_0 (llama.cpp)", ["", ""], [(1, 2, 9, 9), (5, 6)], False)
    assert agreement(reference, other, tiny_tokenizer).same_start == 4 / 6
