"""verify's comparison: agreement counted per prompt, the first difference named, the exit rule."""

from __future__ import annotations

from qwentune.export.verify import Replies, agreement, format_table


def test_agreement_counts_identical_replies_and_names_the_first_difference(tiny_tokenizer):
    ids = lambda text: tuple(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    reference = Replies("adapter on base", ["Paris", "Eat well"], [ids("Paris"), ids("Eat well")], 1.0)
    same = Replies("merged", ["Paris", "Eat well"], [ids("Paris"), ids("Eat well")], 1.0)
    other = Replies("GGUF q8_0 (llama.cpp)", ["Paris", "Eat less"], [ids("Paris"), ids("Eat less")], None)
    assert agreement(reference, same, tiny_tokenizer).agreed == 2
    result = agreement(reference, other, tiny_tokenizer)
    assert (result.agreed, result.total, result.failed) == (1, 2, False)
    position = next(i for i, (a, b) in enumerate(zip(ids("Eat well"), ids("Eat less"))) if a != b)
    first = lambda text: f"{tiny_tokenizer.decode([ids(text)[position]])!r} ({ids(text)[position]})"  # noqa: E731
    assert result.first_difference == f"prompt 2, token {position + 1}: {first('Eat well')} vs {first('Eat less')}"


def test_a_side_that_must_agree_and_does_not_fails_the_check(tiny_tokenizer):
    reference = Replies("adapter on base", ["a", "b"], None, 1.0)
    server = Replies("server", ["a", "c"], None, 1.0)
    result = agreement(reference, server, tiny_tokenizer)
    assert result.failed and result.first_difference == "prompt 2, character 1: 'b' vs 'c'"
    table = format_table(reference, [result])
    assert "1/2" in table and "FAILED: server answered differently." in table.splitlines()


def test_a_reply_that_stops_early_differs_at_its_end(tiny_tokenizer):
    reference = Replies("model", ["x"], [(5, 6, 7)], 1.0)
    shorter = Replies("merged", ["x"], [(5, 6)], 1.0)
    assert agreement(reference, shorter, tiny_tokenizer).first_difference.endswith("vs (end)")


def test_same_start_is_the_share_of_reference_tokens_before_each_first_difference(tiny_tokenizer):
    reference = Replies("model", ["", ""], [(1, 2, 3, 4), (5, 6)], 1.0)
    other = Replies("GGUF q8_0 (llama.cpp)", ["", ""], [(1, 2, 9, 9), (5, 6)], None)
    assert agreement(reference, other, tiny_tokenizer).same_start == 4 / 6


def test_an_f16_file_may_part_late_but_not_early(tiny_tokenizer):
    reference = Replies("adapter on base", ["", ""], [tuple(range(20)), tuple(range(20))], 1.0)
    late = Replies("GGUF f16 (llama.cpp)", ["", ""], [tuple(range(19)) + (99,), tuple(range(20))], 0.9)
    early = Replies("GGUF f16 (llama.cpp)", ["", ""], [(99,) * 20, tuple(range(20))], 0.9)
    assert not agreement(reference, late, tiny_tokenizer).failed
    assert agreement(reference, early, tiny_tokenizer).failed
