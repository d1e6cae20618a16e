"""espnet2/utils/error_rate.py: alignments, tokens, aggregate counts, text files."""

import math
from pathlib import Path

import editdistance
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from espnet2.utils.error_rate import (
    Alignment,
    ErrorCounts,
    ScoringInputError,
    align,
    char_tokens,
    check_same_utterances,
    format_alignment,
    read_transcripts,
    score_text_files,
    word_tokens,
)


def counts(alignment: Alignment):
    """(correct, substitutions, deletions, insertions)."""
    a = alignment
    return a.correct, a.substitutions, a.deletions, a.insertions


# ---------------------------------------------------------------- alignment
def test_a_substitution_and_a_deletion_are_found_by_hand():
    alignment = align("A B C D".split(), "A X C".split())
    assert counts(alignment) == (2, 1, 1, 0)
    assert alignment.pairs == (("A", "A"), ("B", "X"), ("C", "C"), ("D", None))
    assert alignment.errors == 2


def test_an_inserted_word_is_one_insertion():
    alignment = align("the cat".split(), "the black cat".split())
    assert counts(alignment) == (2, 0, 0, 1)
    assert alignment.pairs == (("the", "the"), (None, "black"), ("cat", "cat"))


def test_a_hypothesis_against_an_empty_reference_is_all_insertions():
    alignment = align([], ["a", "b"])
    assert counts(alignment) == (0, 0, 0, 2)
    assert alignment.pairs == ((None, "a"), (None, "b"))


def test_an_empty_hypothesis_deletes_every_reference_token():
    alignment = align(["a", "b", "c"], [])
    assert counts(alignment) == (0, 0, 3, 0)
    assert alignment.pairs == (("a", None), ("b", None), ("c", None))


def test_two_empty_sequences_align_without_errors():
    alignment = align([], [])
    assert counts(alignment) == (0, 0, 0, 0) and alignment.pairs == ()


def test_a_substitution_is_preferred_to_a_deletion_and_an_insertion():
    # "a b" -> "b a": two substitutions or D + I + ... all cost 2; pick diagonals.
    assert align(["a", "b"], ["b", "a"]).pairs == (("a", "b"), ("b", "a"))
    assert counts(align(["a"], ["b", "c"])) == (0, 1, 0, 1)


def test_a_deletion_is_preferred_to_an_insertion_reading_from_the_start():
    # Deleting the first "a" or inserting the first "b" both lead to distance 2.
    alignment = align(list("aba"), list("bab"))
    expected = (("a", None), ("b", "b"), ("a", "a"), (None, "b"))
    assert alignment.pairs == expected


def test_extra_words_at_the_end_are_insertions_at_the_end():
    alignment = align(list("GOOD"), list("GOOD DAY"))
    assert alignment.pairs[:4] == tuple(zip("GOOD", "GOOD"))
    assert alignment.pairs[4:] == tuple((None, c) for c in " DAY")


tokens = st.lists(st.sampled_from("abc"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(ref=tokens, hyp=tokens)
def test_errors_equal_the_edit_distance_and_counts_add_up(ref, hyp):
    alignment = align(ref, hyp)
    c, s, d, i = counts(alignment)
    assert s + d + i == editdistance.eval(ref, hyp)
    assert c + s + d == len(ref)
    assert c + s + i == len(hyp)
    assert [r for r, _ in alignment.pairs if r is not None] == ref
    assert [h for _, h in alignment.pairs if h is not None] == hyp
    assert sum(r == h for r, h in alignment.pairs) == c


# ---------------------------------------------------------------- tokens
def test_words_are_split_at_any_whitespace():
    assert word_tokens("  HELLO \t big  WORLD\n") == ["HELLO", "big", "WORLD"]
    assert word_tokens("   ") == []


def test_each_run_of_whitespace_is_one_space_token_and_the_ends_are_dropped():
    assert char_tokens(" ab  c\td ") == ["a", "b", "<space>", "c", "<space>", "d"]
    assert char_tokens("") == []


def test_cer_counts_a_missing_space_as_a_deletion():
    alignment = align(char_tokens("a b"), char_tokens("ab"))
    assert counts(alignment) == (2, 0, 1, 0)
    assert alignment.pairs[1] == ("<space>", None)


# ---------------------------------------------------------------- aggregates
def test_counts_of_utterances_add_up_to_the_set():
    first = ErrorCounts.from_alignment(align("A B C D".split(), "A X C".split()))
    second = ErrorCounts.from_alignment(align("E F".split(), "E F".split()))
    total = first + second
    assert total == ErrorCounts(2, 6, 4, 1, 1, 0, 1)
    assert total.errors == 2
    assert total.error_rate == pytest.approx(100 * 2 / 6)
    assert total.sentence_error_rate == 50.0


def test_the_error_rate_can_exceed_100_percent():
    result = ErrorCounts.from_alignment(align(["a"], ["b", "c", "d"]))
    assert result.error_rate == 300.0


def test_an_empty_reference_has_rate_0_without_errors_and_inf_with_insertions():
    assert ErrorCounts.from_alignment(align([], [])).error_rate == 0.0
    inserted = ErrorCounts.from_alignment(align([], ["a"]))
    assert inserted.num_ref_tokens == 0 and math.isinf(inserted.error_rate)
    assert inserted.to_dict()["error_rate"] is None
    assert ErrorCounts().sentence_error_rate == 0.0


def test_counts_survive_a_round_trip_through_a_dict():
    total = ErrorCounts(3, 10, 7, 2, 1, 4, 2)
    values = total.to_dict()
    assert values["error_rate"] == 70.0
    assert values["sentence_error_rate"] == pytest.approx(200 / 3)
    assert ErrorCounts.from_dict(values) == total


# ---------------------------------------------------------------- text files
def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_transcripts_may_be_empty_and_keep_the_file_order(tmp_path):
    path = write(tmp_path / "text", "b2 HELLO  WORLD \nA1\na3 \n")
    assert read_transcripts(path) == {"b2": "HELLO  WORLD", "A1": "", "a3": ""}
    assert list(read_transcripts(path)) == ["b2", "A1", "a3"]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "u1 a\nu2 b\nu1 c\n",
            "text:3: utterance 'u1' appears again (first on line 1)",
        ),
        ("u1 a\n\nu2 b\n", "text:2: blank line"),
        (b"u1 a\nu2 \xff\n", "text:2: the line is not valid UTF-8"),
    ],
)
def test_a_malformed_text_file_is_named_with_its_line(tmp_path, content, message):
    path = tmp_path / "text"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ScoringInputError, match="Fix: ") as err:
        read_transcripts(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_missing_file_is_a_scoring_input_error(tmp_path):
    with pytest.raises(ScoringInputError, match="cannot read the file") as err:
        read_transcripts(tmp_path / "absent")
    assert isinstance(err.value, ValueError)
    assert str(tmp_path / "absent") in str(err.value)


def test_missing_hypotheses_are_listed_with_their_number():
    ref = {f"u{i}": "x" for i in range(8)}
    hyp = {"u0": "x", "u7": "x"}
    with pytest.raises(ScoringInputError) as err:
        check_same_utterances(ref, hyp, "ref.txt", "hyp.txt")
    message = str(err.value)
    assert message.startswith("hyp.txt: no hypothesis for utterance 'u1', 'u2'")
    assert "'u5', ... (6 in all) of ref.txt" in message and "'u6'" not in message


def test_a_hypothesis_of_another_set_is_an_error():
    with pytest.raises(ScoringInputError) as err:
        check_same_utterances({"u1": "a"}, {"u1": "a", "zz": ""}, "r", "h")
    assert str(err.value).startswith("h: utterance 'zz' (1 in all) not in the ")


def test_score_text_files_sums_the_utterances_in_reference_order(tmp_path):
    ref = write(tmp_path / "ref", "u2 A B C D\nu1 E F\nu3 G\n")
    hyp = write(tmp_path / "hyp", "u1 E F\nu3\nu2 A X C\n")
    scored = score_text_files(ref, hyp, "word")
    assert [utt for utt, _ in scored.utterances] == ["u2", "u1", "u3"]
    assert scored.totals == ErrorCounts(3, 7, 4, 1, 2, 0, 2)
    chars = score_text_files(ref, hyp, "char").totals
    assert chars.num_ref_tokens == 7 + 3 + 1 and chars.deletions == 3


def test_the_alignment_print_marks_every_error_under_its_column():
    alignment = align("A BIG CAT SAT".split(), "A CAT SAT DOWN".split())
    assert format_alignment("utt1", alignment) == (
        "id: utt1\n"
        "Scores: (#C #S #D #I) 3 0 1 1\n"
        "REF:  A BIG CAT SAT ***\n"
        "HYP:  A *** CAT SAT DOWN\n"
        "Eval:   D           I\n"
    )
