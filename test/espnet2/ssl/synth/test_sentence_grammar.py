"""Tests of the sentence grammar (espnet2/ssl/synth/grammar.py)."""

import random
import re
from collections import Counter

import pytest

from espnet2.ssl.synth.grammar import (
    MAX_NUMBER,
    draw_sentences,
    generate_sentence,
    number_to_words,
    sentence_stream,
    speech_prompt,
    templates,
    vocabulary,
)

_UNITS = (
    "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN "
    "FOURTEEN FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN"
).split()
_TENS = "TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()


def _words_to_number(words: str) -> int:
    """Independent reader of spelled numbers, to check number_to_words."""
    total, current = 0, 0
    for word in words.split():
        if word in _UNITS:
            current += _UNITS.index(word)
        elif word in _TENS:
            current += 10 * (_TENS.index(word) + 2)
        elif word == "HUNDRED":
            current *= 100
        elif word == "THOUSAND":
            total, current = current * 1000, 0
        elif word != "AND":
            raise ValueError(word)
    return total + current


@pytest.fixture(scope="module")
def many_sentences():
    return [generate_sentence(random.Random(seed)) for seed in range(3000)]


def test_same_seed_gives_the_same_sentences():
    assert draw_sentences(50, random.Random(7)) == draw_sentences(50, random.Random(7))


def test_different_seeds_give_different_sentences():
    first = draw_sentences(50, random.Random(0))
    second = draw_sentences(50, random.Random(1))
    assert len(set(first) & set(second)) < 5


def test_vocabulary_has_at_least_300_words_of_letters_and_apostrophes():
    words = vocabulary()
    assert len(words) >= 300
    assert all(re.fullmatch(r"[A-Z']+", word) for word in words)


def test_sentences_use_only_the_vocabulary(many_sentences):
    used = {word for sentence in many_sentences for word in sentence.split()}
    assert used <= vocabulary()
    assert len(used) >= 300  # the vocabulary is actually reachable


def test_sentences_are_upper_case_words_with_single_spaces(many_sentences):
    transcript = re.compile(r"[A-Z']+( [A-Z']+)*")  # A-Z/' words, single spaces
    assert all(transcript.fullmatch(sentence) for sentence in many_sentences)
    assert not any(re.search(r"[0-9.,?!-]|  |^ | $", s) for s in many_sentences)


def test_sentences_have_4_to_15_words_mostly_6_to_12(many_sentences):
    lengths = Counter(len(sentence.split()) for sentence in many_sentences)
    assert min(lengths) >= 4 and max(lengths) <= 15
    assert sum(lengths[n] for n in range(6, 13)) > 0.8 * len(many_sentences)


def test_grammar_has_statements_questions_and_commands_with_numbers_and_times():
    kinds = Counter(kind for kind, _ in templates())
    assert min(kinds["statement"], kinds["question"], kinds["command"]) >= 5
    slots = " ".join(template for _, template in templates())
    for slot in ("{number}", "{count}", "{time}", "{place}", "{colour}", "{person}"):
        assert slot in slots


def test_numbers_appear_spelled_out(many_sentences):
    with_numbers = [s for s in many_sentences if re.search(r"HUNDRED|THOUSAND", s)]
    assert len(with_numbers) > 20
    assert not any(re.search(r"\d", s) for s in many_sentences)


@pytest.mark.parametrize(
    "number, words",
    [
        (0, "ZERO"),
        (7, "SEVEN"),
        (15, "FIFTEEN"),
        (40, "FORTY"),
        (41, "FORTY ONE"),
        (100, "ONE HUNDRED"),
        (101, "ONE HUNDRED AND ONE"),
        (999, "NINE HUNDRED AND NINETY NINE"),
        (1000, "ONE THOUSAND"),
        (2041, "TWO THOUSAND AND FORTY ONE"),
        (2300, "TWO THOUSAND THREE HUNDRED"),
        (9999, "NINE THOUSAND NINE HUNDRED AND NINETY NINE"),
    ],
)
def test_number_to_words_spells_examples(number, words):
    assert number_to_words(number) == words


def test_every_number_up_to_9999_spells_uniquely_and_reads_back():
    spelled = [number_to_words(n) for n in range(MAX_NUMBER + 1)]
    assert len(set(spelled)) == MAX_NUMBER + 1
    assert all(_words_to_number(words) == n for n, words in enumerate(spelled))
    assert {w for words in spelled for w in words.split()} <= vocabulary()


@pytest.mark.parametrize("number", [-1, 10000, 3.0, True])
def test_number_to_words_rejects_numbers_outside_0_to_9999(number):
    with pytest.raises(ValueError):
        number_to_words(number)


def test_draw_sentences_gives_distinct_sentences_outside_the_excluded_ones():
    excluded = set(draw_sentences(300, random.Random(3)))
    drawn = draw_sentences(1000, random.Random(3), exclude=excluded)
    assert len(set(drawn)) == 1000
    assert not set(drawn) & excluded


def test_sentence_stream_gives_up_when_the_grammar_is_exhausted():
    stream = sentence_stream(random.Random(0), max_tries_per_sentence=1)
    with pytest.raises(RuntimeError, match="no new sentence"):
        for _ in range(100000):
            next(stream)


def test_speech_prompt_is_lower_case_with_a_question_mark_only_for_questions():
    assert speech_prompt("WHERE DID ANNA LEAVE THE OLD KEY") == (
        "where did anna leave the old key?"
    )
    assert speech_prompt("MEET ME AT THE PARK AT TEN O'CLOCK") == (
        "meet me at the park at ten o'clock."
    )
    for kind, template in templates():
        prompt = speech_prompt(template.replace("{person}", "ANNA"))
        assert prompt.endswith("?") == (kind == "question")
