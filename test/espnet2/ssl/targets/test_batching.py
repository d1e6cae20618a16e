"""Tests for espnet2/ssl/targets/batching.py: batches by length, reads ahead."""

import random
import threading

import pytest

from espnet2.ssl.targets.batching import length_sorted_batches, read_ahead


def lengths_of(seed: int, count: int = 200):
    """Utterance lengths in samples, with repeats (as resampled corpora have)."""
    rng = random.Random(seed)
    return [
        rng.choice([8000, 16000, 24000]) + rng.randrange(0, 3) for _ in range(count)
    ]


@pytest.mark.parametrize("equal_lengths", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_utterance_is_in_exactly_one_batch(seed, equal_lengths):
    lengths = lengths_of(seed)
    batches = length_sorted_batches(lengths, 100_000, equal_lengths)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))


@pytest.mark.parametrize("equal_lengths", [True, False])
def test_padded_size_stays_within_the_budget(equal_lengths):
    lengths = lengths_of(2)
    for batch in length_sorted_batches(lengths, 100_000, equal_lengths):
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 100_000


def test_equal_length_batches_hold_one_length_only():
    lengths = lengths_of(3)
    batches = length_sorted_batches(lengths, 100_000, equal_lengths=True)
    assert all(len({lengths[i] for i in batch}) == 1 for batch in batches)
    assert max(len(batch) for batch in batches) > 1  # repeats are batched


def test_batches_run_longest_first_with_ties_in_file_order():
    lengths = [5, 9, 7, 9, 5, 7]
    batches = length_sorted_batches(lengths, 18, equal_lengths=False)
    assert batches == [[1, 3], [2, 5], [0, 4]]
    assert length_sorted_batches(lengths, 18, equal_lengths=True) == batches


def test_padded_batches_mix_lengths_that_equal_length_batches_keep_apart():
    lengths = [10, 9, 8, 7]
    assert length_sorted_batches(lengths, 40, equal_lengths=False) == [[0, 1, 2, 3]]
    assert length_sorted_batches(lengths, 40, equal_lengths=True) == [
        [0],
        [1],
        [2],
        [3],
    ]


def test_an_utterance_longer_than_the_budget_is_a_batch_of_its_own():
    assert length_sorted_batches([50, 3, 3], 10, equal_lengths=False) == [[0], [1, 2]]


def test_a_budget_below_one_sample_is_an_error():
    with pytest.raises(ValueError, match="max_samples must be >= 1"):
        length_sorted_batches([1, 2], 0, equal_lengths=False)


def test_read_ahead_yields_in_order_and_loads_in_another_thread():
    threads = set()

    def load(item):
        threads.add(threading.get_ident())
        return item * 2

    assert list(read_ahead(load, range(10), depth=3)) == [2 * i for i in range(10)]
    assert threads and threading.get_ident() not in threads


def test_read_ahead_raises_a_load_error_at_its_item():
    def load(item):
        if item == 4:
            raise KeyError("bad item 4")
        return item

    results = []
    with pytest.raises(KeyError, match="bad item 4"):
        for result in read_ahead(load, range(10)):
            results.append(result)
    assert results == [0, 1, 2, 3]
