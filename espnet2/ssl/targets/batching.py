"""Batches of a feature dump: utterances grouped by length, audio read ahead.

A shard's utterances are sorted by length (longest first, so an out-of-memory
error shows at the first batch, not hours later) and cut into batches whose padded
size ``B * longest`` stays within a budget in samples, as lhotse's
``DynamicBucketingSampler`` counts ``max_duration``. A dumper that is not
padding-invariant (``FeatureDumper.padding_invariant``: a GroupNorm over time in the
CNN, an STFT with reflection padding) only gets batches of exactly equal lengths,
so batching never changes a feature; a padding-invariant one gets padded batches of
similar lengths, which waste little compute on padding.

The audio of the next batches is decoded in a background thread while the current
one is computed (libsndfile runs without the GIL), so a GPU does not wait for reads.
"""

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Deque, Iterator, List, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def _equal_length_batches(
    order: Sequence[int], lengths: Sequence[int], max_samples: int
) -> List[List[int]]:
    """Runs of equal length in ``order``, each cut into pieces within the budget."""
    batches: List[List[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        fits = batch is not None and (len(batch) + 1) * lengths[index] <= max_samples
        if fits and lengths[batch[0]] == lengths[index]:
            batch.append(index)
        else:
            batches.append([index])
    return batches


def _padded_batches(
    order: Sequence[int], lengths: Sequence[int], max_samples: int
) -> List[List[int]]:
    """Consecutive items of ``order`` (longest first) while ``B * longest`` fits."""
    batches: List[List[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        if batch is not None and (len(batch) + 1) * lengths[batch[0]] <= max_samples:
            batch.append(index)
        else:
            batches.append([index])
    return batches


def length_sorted_batches(
    lengths: Sequence[int], max_samples: int, equal_lengths: bool
) -> List[List[int]]:
    """Group utterances into batches by length, longest batch first.

    Args:
        lengths: Samples per utterance (N values), in file order.
        max_samples: Budget of a batch in padded samples (``B * longest``); an
            utterance longer than the budget is a batch of its own.
        equal_lengths: Only put utterances of exactly the same length together
            (dumpers that are not padding-invariant).

    Returns:
        Batches of indices into ``lengths``; every index once. Within a batch and
        across batches the order is by decreasing length, ties in file order.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable
    if equal_lengths:
        return _equal_length_batches(order, lengths, max_samples)
    return _padded_batches(order, lengths, max_samples)


def read_ahead(
    load: Callable[[Item], Result], items: Sequence[Item], depth: int = 2
) -> Iterator[Result]:
    """``load(item)`` for each item in order, up to ``depth`` items ahead in a thread.

    Args:
        load: Reads one item (e.g. the audio of one batch); an exception it raises
            is raised here when its item's turn comes, in order.
        items: What to load, in the order the results are wanted.
        depth: Items loaded ahead of the one being consumed (>= 1).

    Returns:
        An iterator over the results, in the order of ``items``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read_ahead") as pool:
        pending: Deque = deque()
        for item in items:
            pending.append(pool.submit(load, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
