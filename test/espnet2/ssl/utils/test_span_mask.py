"""espnet2/ssl/utils/span_mask.py: fairseq-style span masking, not in place."""

import pytest
import torch

from espnet2.ssl.utils.span_mask import SpanMasking, span_mask_1d, trim_to_same_count


def _masker(**kwargs) -> SpanMasking:
    conf = dict(encoder_embed_dim=8, mask_prob=0.65, mask_length=10)
    conf.update(kwargs)
    return SpanMasking(**conf)


def _padding(lengths, max_frames):
    return torch.arange(max_frames)[None, :] >= torch.tensor(lengths)[:, None]


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
