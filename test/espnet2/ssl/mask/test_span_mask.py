"""espnet2/ssl/mask/span.py: fairseq-style span masking, not in place."""

import pytest
import torch

from espnet2.ssl.mask.span import (
    SpanMasking,
    span_mask_1d,
    span_mask_batch,
    trim_batch_to_same_count,
    trim_to_same_count,
)
from espnet2.ssl.train.host_syncs import HostSyncCounter


def _masker(**kwargs) -> SpanMasking:
    conf = dict(encoder_embed_dim=8, mask_prob=0.65, mask_length=10)
    conf.update(kwargs)
    return SpanMasking(**conf)


def _padding(lengths, max_frames):
    return torch.arange(max_frames)[None, :] >= torch.tensor(lengths)[:, None]


def gen_of(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_masked_share_is_close_to_fairseq_expectation_for_long_utterances():
    gen = torch.Generator().manual_seed(0)
    shares = [len(span_mask_1d(500, 0.65, 10, 2, gen)) / 500 for _ in range(200)]
    # 1 - (1 - 0.065)**10 = 0.49 masked on average (overlapping spans)
    assert 0.45 < sum(shares) / len(shares) < 0.53


@pytest.mark.parametrize("num_frames", [0, 1, 2, 5, 11, 40])
def test_short_utterances_get_valid_indices_only(num_frames):
    gen = torch.Generator().manual_seed(1)
    frames = span_mask_1d(num_frames, 0.65, 10, 2, gen)
    assert frames.numel() <= num_frames
    assert bool((frames >= 0).all() and (frames < max(num_frames, 1)).all())
    assert torch.equal(frames, torch.unique(frames))


def test_padded_frames_are_never_masked_and_mask_u_excludes_padding():
    masker = _masker().train()
    x = torch.randn(3, 60, 8)
    padding = _padding([60, 25, 3], 60)
    _, info = masker(x, padding, generator=torch.Generator().manual_seed(0))
    assert not bool((info["mask_m"] & padding).any())
    assert not bool((info["mask_u"] & padding).any())
    assert torch.equal(info["mask_m"] | info["mask_u"], ~padding)


def test_input_is_not_modified_in_place():
    masker = _masker().train()
    x = torch.randn(2, 40, 8)
    before = x.clone()
    y, info = masker(x, None, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert torch.equal(
        y[info["mask_m"]], masker.mask_embedding.expand_as(y)[info["mask_m"]]
    )
    assert torch.equal(y[info["mask_u"]], x[info["mask_u"]])


def test_training_masks_have_the_same_count_per_utterance_when_required():
    masker = _masker(require_same_masks=True).train()
    _, info = masker(torch.randn(4, 80, 8), _padding([80, 70, 60, 50], 80))
    counts = info["mask_m"].sum(-1)
    assert bool((counts == counts[0]).all()) and int(counts[0]) > 0


def test_seeded_masks_depend_only_on_the_utterance_not_the_batch():
    masker = _masker().eval()
    alone = masker.compute_mask(torch.tensor([37]), 37, seeds=[123])
    batched = masker.compute_mask(torch.tensor([80, 37]), 80, seeds=[9, 123])
    assert torch.equal(batched[1, :37], alone[0])
    assert not bool(batched[1, 37:].any())


def test_an_explicit_mask_is_used_as_given_except_on_padding():
    masker = _masker()
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 2:6] = True
    _, info = masker(torch.randn(2, 10, 8), _padding([10, 4], 10), mask=mask)
    assert info["mask_m"][0].nonzero().flatten().tolist() == [2, 3, 4, 5]
    assert info["mask_m"][1].nonzero().flatten().tolist() == [2, 3]


def test_trim_to_same_count_keeps_subsets():
    gen = torch.Generator().manual_seed(0)
    rows = [torch.arange(10), torch.tensor([1, 5, 7])]
    trimmed = trim_to_same_count(rows, gen)
    assert [len(r) for r in trimmed] == [3, 3]
    assert set(trimmed[0].tolist()) <= set(range(10))


def test_channel_masking_zeroes_whole_channels():
    masker = _masker(mask_prob=0.0, mask_channel_prob=0.5, mask_channel_length=2)
    y, _ = masker(torch.ones(2, 5, 8), None, generator=torch.Generator().manual_seed(3))
    zero_channels = (y == 0).all(dim=1)  # (B, D)
    assert bool(zero_channels.any())
    assert bool(((y == 0) == zero_channels[:, None, :]).all())


def test_unsupported_selection_modes_fail_clearly():
    with pytest.raises(ValueError, match="only 'static'"):
        _masker(mask_selection="poisson")


def _runs(mask: torch.Tensor) -> torch.Tensor:
    """Lengths of the runs of consecutive masked frames of every row of (B, T)."""
    edges = torch.nn.functional.pad(mask.int(), (1, 1))  # (B, T + 2)
    steps = torch.diff(edges, dim=1)  # +1 at a run's start, -1 after its end
    starts = (steps == 1).nonzero()[:, 1]
    ends = (steps == -1).nonzero()[:, 1]
    return (ends - starts).double()


def _per_utterance_masks(n: int, num_frames: int, conf: dict, seed: int):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, num_frames, dtype=torch.bool)
    for row in mask:
        row[span_mask_1d(num_frames, generator=gen, **conf)] = True
    return mask


@pytest.mark.parametrize(
    "num_frames, conf",
    [
        (500, dict(mask_prob=0.65, mask_length=10, min_masks=2)),  # wav2vec 2.0, 10 s
        (120, dict(mask_prob=0.8, mask_length=10, min_masks=2)),  # HuBERT, 2.4 s
        (60, dict(mask_prob=0.15, mask_length=4, min_masks=2)),  # reconstruction
        (7, dict(mask_prob=0.65, mask_length=10, min_masks=2)),  # shorter than a span
    ],
)
def test_batched_masks_match_the_per_utterance_sampler_in_distribution(
    num_frames, conf
):
    """Over 1000 seeded draws each: masked share (mean and spread) and the mean
    length of the masked runs of ``span_mask_batch`` agree with ``span_mask_1d``
    within 5 standard errors measured from the draws themselves."""
    n = 1000
    old = _per_utterance_masks(n, num_frames, conf, seed=0)
    lengths = torch.full((n,), num_frames)
    new = span_mask_batch(lengths, num_frames, generator=gen_of(1), **conf)
    share_old, share_new = old.double().mean(1), new.double().mean(1)
    error = (share_old.var() / n + share_new.var() / n).sqrt()
    assert abs(share_old.mean() - share_new.mean()) <= 5 * error
    spread_error = (share_old.var() / (2 * n) + share_new.var() / (2 * n)).sqrt()
    assert abs(share_old.std() - share_new.std()) <= 5 * spread_error
    runs_old, runs_new = _runs(old), _runs(new)
    error = (runs_old.var() / len(runs_old) + runs_new.var() / len(runs_new)).sqrt()
    assert abs(runs_old.mean() - runs_new.mean()) <= 5 * error + 1e-9


def test_batched_masks_follow_the_span_rules_on_padded_batches():
    lengths = torch.tensor([50, 23, 1, 0, 11])
    mask = span_mask_batch(lengths, 50, 0.65, 10, 2, gen_of(3))
    assert mask.shape == (5, 50)
    assert not bool((mask & _padding(lengths.tolist(), 50)).any())
    spans = torch.floor(0.65 * lengths.double() / 10).clamp(min=2)
    assert bool((mask.sum(1)[lengths > 0] > 0).all())
    # at most n_b + 1 spans of 10 frames each (n_b + 1 with the U[0, 1) jitter)
    assert bool((mask.sum(1) <= 10 * (spans + 1)).all())


def test_batched_trim_keeps_a_subset_of_each_row_with_the_smallest_count():
    mask = span_mask_batch(torch.tensor([80, 70, 60, 50]), 80, 0.65, 10, 2, gen_of(0))
    trimmed = trim_batch_to_same_count(mask, gen_of(1))
    counts = trimmed.sum(1)
    assert bool((counts == mask.sum(1).min()).all())
    assert not bool((trimmed & ~mask).any())


def test_training_masks_are_drawn_without_reading_the_device():
    masker = _masker(mask_channel_prob=0.2, mask_channel_length=2).train()
    x, padding = torch.randn(3, 60, 8), _padding([60, 25, 3], 60)
    with HostSyncCounter() as syncs:
        masker(x, padding, generator=gen_of(0))
    assert syncs.count == 0, syncs.summary()
