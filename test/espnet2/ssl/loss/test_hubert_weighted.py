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


def test_loss_gradients_and_masked_accuracy_equal_espnets_hubert_loss():
    """Our fixed-size forward against ESPnet's gathering one, on the same weights:
    two loss layers, padding, and unlabelled (-1) masked frames."""
    from espnet2.ssl.loss.hubert import HuBERTLoss
    from espnet2.ssl.loss.hubert_weighted import WeightedHuBERTLoss

    torch.manual_seed(0)
    options = dict(layers=[-1, 0], loss_weights=[1.0, 0.5])
    ours = WeightedHuBERTLoss(16, 10, 8, **options)
    theirs = HuBERTLoss(16, 10, 8, **options)
    theirs.load_state_dict(ours.state_dict())
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([12, 9, 5])
    valid = torch.arange(12)[None, :] < lengths[:, None]  # (B, T)
    mask_m = valid & (torch.rand(3, 12, generator=gen) < 0.5)
    text = torch.randint(10, (3, 12), generator=gen).masked_fill(~valid, -1)
    text[0, mask_m[0].nonzero()[0, 0]] = -1  # a masked frame without a label
    mask_info = {"mask_m": mask_m, "mask_u": valid & ~mask_m}
    results = []
    for module in (ours, theirs):
        layers = [torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(s))
                  for s in (2, 3)]  # fmt: skip
        for layer in layers:
            layer.requires_grad_(True)
        loss, stats = module(layers, lengths, text, lengths, mask_info)
        loss.backward()
        results.append((loss, stats, [layer.grad for layer in layers]))
    (loss, stats, grads), (loss_t, stats_t, grads_t) = results
    assert float(loss) == pytest.approx(float(loss_t), rel=1e-6)
    for key in ("hubert_loss_m_1", "hubert_loss_m_0", "hubert_acc_m_1"):
        assert float(stats[key]) == pytest.approx(stats_t[key], rel=1e-6), key
    for grad, grad_t in zip(grads, grads_t):
        assert torch.allclose(grad, grad_t, rtol=1e-5, atol=1e-7)
    labelled = int((mask_m & (text != -1)).sum())
    assert float(stats["sample_size"]) == float(stats["num_masked_frames"]) == labelled
