"""Tests for espnet2/ssl/loss/hubert_weighted.py (HuBERT weighted by masked frames)."""

import pytest
import torch

from espnet2.ssl.espnet_model import utterance_seeds


def hubert_batch(lengths=(8000, 5600, 4000)):
    """Random audio (B, S) and random frame labels (B, T) padded with -1."""
    gen = torch.Generator().manual_seed(0)
    speech = torch.zeros(len(lengths), max(lengths))
    frames = [(n - 400) // 320 + 1 for n in lengths]
    text = torch.full((len(lengths), max(frames)), -1, dtype=torch.long)
    for b, (n, t) in enumerate(zip(lengths, frames)):
        speech[b, :n] = 0.1 * torch.randn(n, generator=gen)
        text[b, :t] = torch.randint(10, (t,), generator=gen)
    return speech, torch.tensor(lengths), text, torch.tensor(frames)


def shard(speech, lengths, text, text_lengths, rows):
    """The rows of a batch, trimmed to their own longest utterance."""
    rows = torch.tensor(rows)
    num_samples, num_frames = int(lengths[rows].max()), int(text_lengths[rows].max())
    return (
        speech[rows, :num_samples],
        lengths[rows],
        text[rows, :num_frames],
        text_lengths[rows],
    )


def test_sample_size_is_the_number_of_labelled_masked_frames(
    build_ssl_model, ssl_configs
):
    model, _ = build_ssl_model(ssl_configs["hubert"])
    model.eval()
    speech, lengths, text, text_lengths = hubert_batch()
    data = model.encode(speech, lengths, seeds=utterance_seeds(speech, lengths))
    masked = int(data["mask_info"]["mask_m"].sum())
    loss, stats, weight = model(speech, lengths, text, text_lengths)
    assert masked > 0
    assert float(weight) == stats["sample_size"] == stats["num_masked_frames"] == masked


def test_ranks_weighted_by_sample_size_give_the_loss_of_the_combined_batch(
    build_ssl_model, ssl_configs
):
    """ESPnet's DDP loss is sum_r w_r * loss_r / sum_r w_r. Eval-mode masks depend
    only on the utterance (and the layer-norm CNN not on padding), so the shards
    see the combined batch's frames and masks. With w_r = utterances (ESPnet's
    weight for HuBERT) a frame would count more on the shard with fewer masked
    frames per utterance."""
    model, _ = build_ssl_model(ssl_configs["hubert"])
    model.eval()
    batch = hubert_batch()
    combined, _, _ = model(*batch)
    total, weights = 0.0, 0.0
    for rows in ([0, 2], [1]):
        loss, _, weight = model(*shard(*batch, rows))
        total, weights = total + float(loss) * float(weight), weights + float(weight)
    assert total / weights == pytest.approx(float(combined), rel=1e-5)
