"""ReconstructionLoss and the freq_mask util: loss positions, padding, frequency
masking, every encoder through SSLTask, bad options, rank weighting."""

import copy
import logging
from typing import Dict, Optional, Sequence

import pytest
import torch
from tiny_configs import tiny_config

from espnet2.ssl.loss.reconstruction import ReconstructionLoss
from espnet2.ssl.mask.frequency import FrequencyMasking
from espnet2.tasks import ssl as task_module

SIZE = 6  # D = F, so that an Identity head predicts the encoder output itself
LENGTHS = (9, 6, 4)
MASKED = ((1, 2, 3, 7), (0, 4), (2,))  # time-masked frames of each utterance
N_MELS = 16
STATS_KEYS = {"loss_reconstruction", "masked_share", "num_masked_frames"}
STATS_KEYS |= {"sample_size"}

# The recipe's tiny reconstruction config at test sizes (test/helpers/tiny_configs.py)
RECONSTRUCTION = tiny_config(
    "reconstruction",
    frontend_conf=dict(n_mels=N_MELS),
    encoder_conf=dict(dropout_rate=0.0, attention_dropout_rate=0.0),
    model_conf=dict(input_dropout=0.0),
    loss=[dict(name="reconstruction", conf=dict(frame_size=N_MELS))],
    util=[
        dict(name="mask", conf=dict(mask_prob=0.3, mask_length=3)),
        dict(name="freq_mask", conf=dict(num_masks=1, max_width=4)),
    ],
)
SMALL_ENCODERS = {
    "conformer": dict(
        output_size=32,
        attention_heads=4,
        linear_units=48,
        num_blocks=2,
        input_layer=None,
        cnn_module_kernel=3,
        pos_enc_layer_type="abs_pos",
        selfattention_layer_type="selfattn",
    ),
    "e_branchformer": dict(
        output_size=32,
        attention_heads=4,
        linear_units=48,
        cgmlp_linear_units=48,
        num_blocks=2,
        input_layer=None,
        cgmlp_conv_kernel=3,
        pos_enc_layer_type="abs_pos",
        attention_layer_type="selfattn",
    ),
    "summary_mixing": dict(
        output_size=32,
        attention_heads=4,
        linear_units=48,
        num_blocks=2,
        input_layer=None,
        cnn_module_kernel=3,
        local_units=[32],
        summary_units=[32],
    ),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the tiny models run 10-100x faster on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _time_mask(lengths=LENGTHS, masked=MASKED) -> torch.Tensor:
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for b, frames in enumerate(masked):
        mask[b, list(frames)] = True
    return mask


def _inputs(
    lengths: Sequence[int] = LENGTHS,
    seed: int = 0,
    padding: float = float("nan"),
    frequency_mask: Optional[torch.Tensor] = None,
    masked=MASKED,
) -> Dict:
    """Loss inputs; padded frames of the predictions and targets hold ``padding``."""
    generator = torch.Generator().manual_seed(seed)
    batch, frames = len(lengths), max(lengths)
    hidden = torch.randn(batch, frames, SIZE, generator=generator)
    targets = torch.randn(batch, frames, SIZE, generator=generator)
    padded = torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]
    hidden[padded], targets[padded] = padding, padding
    return dict(
        encoder_output=[hidden.clone(), hidden.requires_grad_()],
        encoder_output_lengths=torch.tensor(lengths),
        mask_info={"mask_m": _time_mask(lengths, masked)},
        frames=targets,
        frames_lengths=torch.tensor(lengths),
        frequency_mask=frequency_mask,
    )


def _identity_loss(**conf) -> ReconstructionLoss:
    loss = ReconstructionLoss(SIZE, frame_size=SIZE, **conf)
    loss.head = torch.nn.Identity()
    return loss


def _build(overrides: Optional[Dict] = None, encoder: Optional[str] = None):
    from espnet2.tasks.ssl import SSLTask

    config = copy.deepcopy(RECONSTRUCTION)
    config.update(overrides or {})
    if encoder is not None and encoder != "transformer":
        config["encoder"], config["encoder_conf"] = encoder, SMALL_ENCODERS[encoder]
    args = SSLTask.get_parser().parse_args(["--token_list", "none"])
    for key, value in config.items():
        setattr(args, key, value)
    args.token_list = ["<unk>"]
    torch.manual_seed(0)
    return SSLTask.build_model(args)


def _audio(lengths=(8000, 5600), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    speech = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        speech[b, :n] = 0.1 * torch.randn(n, generator=generator)
    return speech, torch.tensor(lengths)


# ---- (a) loss positions


def test_the_loss_is_the_mean_absolute_error_over_the_masked_frames():
    loss_func = ReconstructionLoss(SIZE, frame_size=SIZE, hidden_size=5)
    inputs = _inputs()
    loss, stats = loss_func(**inputs)
    hidden, targets = inputs["encoder_output"][-1], inputs["frames"]
    errors = [
        (loss_func.head(hidden[b, t]) - targets[b, t]).abs()
        for b, frames in enumerate(MASKED)
        for t in frames
    ]
    expected = torch.cat(errors).mean()
    assert torch.allclose(loss, expected)
    assert set(stats) == STATS_KEYS
    num_masked = sum(len(frames) for frames in MASKED)
    assert stats["num_masked_frames"] == num_masked
    assert stats["sample_size"] == num_masked * SIZE
    assert stats["masked_share"] == pytest.approx(num_masked / sum(LENGTHS))
    assert stats["loss_reconstruction"] == pytest.approx(loss.item())


def test_unmasked_positions_change_neither_the_loss_nor_the_gradients():
    loss_func = _identity_loss()
    results = []
    for seed in (0, 1):
        inputs = _inputs(seed=0)
        other = _inputs(seed=seed)
        unmasked = ~inputs["mask_info"]["mask_m"]
        with torch.no_grad():  # new values on the unmasked frames only
            inputs["encoder_output"][-1][unmasked] = other["encoder_output"][-1][
                unmasked
            ]
        inputs["frames"][unmasked] = other["frames"][unmasked]
        loss, _ = loss_func(**inputs)
        loss.backward()
        results.append((loss, inputs["encoder_output"][-1].grad, unmasked))
    (loss_0, grad_0, unmasked), (loss_1, grad_1, _) = results
    assert torch.equal(loss_0, loss_1) and torch.equal(grad_0, grad_1)
    assert bool((grad_0[unmasked] == 0).all())
    assert bool((grad_0[~unmasked] != 0).all())


def test_with_all_positions_every_valid_frame_counts():
    loss_func = _identity_loss(loss_positions="all")
    inputs = _inputs()
    loss, stats = loss_func(**inputs)
    assert stats["sample_size"] == sum(LENGTHS) * SIZE
    inputs["frames"][0, 0] += 1.0  # frame 0 of utterance 0 is not time-masked
    changed, _ = loss_func(**inputs)
    assert changed > loss


# ---- (b) perfect prediction, empty batch


def test_a_perfect_prediction_gives_exactly_zero_loss():
    inputs = _inputs()
    inputs["frames"] = inputs["encoder_output"][-1].detach().clone()
    loss, stats = _identity_loss()(**inputs)
    assert loss.item() == 0.0 and stats["sample_size"] > 0


def test_a_batch_without_masked_elements_gives_zero_with_a_gradient_path():
    loss_func = ReconstructionLoss(SIZE, frame_size=SIZE)
    inputs = _inputs(masked=((), (), ()))
    loss, stats = loss_func(**inputs)
    loss.backward()
    assert loss.item() == 0.0 and stats["sample_size"] == 0.0
    assert stats["masked_share"] == 0.0
    assert all(p.grad is not None for p in loss_func.parameters())


# ---- (c) padding


@pytest.mark.parametrize("padding", [float("nan"), 1e30, -1e30])
def test_padded_frames_never_enter_the_loss_or_its_gradients(padding):
    loss_func = ReconstructionLoss(SIZE, frame_size=SIZE)
    padded = _inputs(padding=padding)
    clean = _inputs(padding=0.0)
    loss, stats = loss_func(**padded)
    loss.backward()
    expected, expected_stats = loss_func(**clean)
    assert torch.equal(loss, expected) and stats == expected_stats
    assert torch.isfinite(padded["encoder_output"][-1].grad).all()
    assert all(torch.isfinite(p.grad).all() for p in loss_func.parameters())


# ---- (d) frequency masking


def test_frequency_masked_channels_of_valid_frames_are_loss_positions():
    loss_func = _identity_loss()
    channels = torch.zeros(len(LENGTHS), SIZE, dtype=torch.bool)
    channels[1, [0, 5]] = True  # utterance 1: channels 0 and 5 on every frame
    inputs = _inputs(frequency_mask=channels)
    loss, stats = loss_func(**inputs)
    loss.backward()
    time_masked = _time_mask()
    valid = torch.arange(max(LENGTHS))[None, :] < torch.tensor(LENGTHS)[:, None]
    expected = (time_masked[:, :, None] | channels[:, None, :]) & valid[:, :, None]
    assert stats["sample_size"] == int(expected.sum())
    assert torch.equal(inputs["encoder_output"][-1].grad != 0, expected)
    assert stats["num_masked_frames"] == int(time_masked.sum())  # time mask only


def test_frequency_masking_sets_blocks_of_channels_and_returns_their_mask():
    masker = FrequencyMasking(num_masks=2, max_width=3, mask_value=-7.0)
    feats = torch.randn(4, 10, 12)
    generator = torch.Generator().manual_seed(0)
    masked, mask = masker(feats, torch.tensor([10, 8, 5, 1]), generator=generator)
    assert mask.shape == (4, 12) and mask.dtype == torch.bool and bool(mask.any())
    assert bool((masked[mask[:, None, :].expand_as(feats)] == -7.0).all())
    keep = ~mask[:, None, :].expand_as(feats)
    assert torch.equal(masked[keep], feats[keep])
    assert int(mask.sum(dim=1).max()) <= 2 * 3
    blocks = torch.diff(mask.int(), dim=1, prepend=torch.zeros(4, 1, dtype=torch.int))
    assert int((blocks == 1).sum(dim=1).max()) <= 2  # at most num_masks runs


def test_frequency_masking_is_deterministic_under_a_seed():
    masker = FrequencyMasking(num_masks=1, max_width=5)
    masks = [
        masker.compute_mask(8, 20, torch.Generator().manual_seed(seed))
        for seed in (3, 3, 4)
    ]
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_zero_masks_is_a_no_op():
    feats = torch.randn(2, 5, 8)
    masked, mask = FrequencyMasking()(feats, torch.tensor([5, 3]))
    assert masked is feats and not bool(mask.any())


def test_bad_frequency_masking_options_are_refused():
    with pytest.raises(ValueError, match="num_masks"):
        FrequencyMasking(num_masks=-1)
    with pytest.raises(ValueError, match="util.freq_mask.conf.max_width"):
        FrequencyMasking(num_masks=1, max_width=9).compute_mask(2, 8)


def test_the_model_masks_frequencies_in_training_and_validation_not_in_inference():
    model = _build()
    speech, lengths = _audio()
    masker = model.util_modules["freq_mask"]
    for training in (True, False):
        model.train(training)
        torch.manual_seed(1)
        data = model.encode(speech, lengths, seeds=None if training else [1, 2])
        assert bool(data["frequency_mask"].any()), training
        assert data["frames"].shape[-1] == N_MELS
    model.eval()
    with torch.no_grad():
        with_masking = model.inference_encode(speech, lengths)
        masker.num_masks = 0
        without = model.inference_encode(speech, lengths)
    for a, b in zip([with_masking[0], *with_masking[1]], [without[0], *without[1]]):
        assert torch.equal(a, b)


def test_frames_are_the_unmasked_encoder_input_before_the_preencoder():
    model = _build()
    model.eval()
    speech, lengths = _audio()
    data = model.encode(speech, lengths, seeds=[1, 2])
    feats, feats_lengths = model.frontend(speech, lengths)
    normed, _ = model.normalize(feats, feats_lengths)
    assert torch.equal(data["frames"], normed)
    assert torch.equal(data["frames_lengths"], feats_lengths)


def test_the_validation_loss_repeats():
    model = _build()
    model.eval()
    speech, lengths = _audio()
    with torch.no_grad():
        first, second = model(speech, lengths)[0], model(speech, lengths)[0]
    assert torch.equal(first, second)


# ---- (e) every encoder


@pytest.mark.parametrize(
    "encoder", ["transformer", "conformer", "e_branchformer", "summary_mixing"]
)
def test_every_encoder_trains_with_the_reconstruction_loss(encoder):
    model = _build(encoder=encoder)
    model.train()
    speech, lengths = _audio()
    loss, stats, weight = model(speech, lengths)
    loss.backward()
    assert torch.isfinite(loss).all() and float(weight) == stats["sample_size"] > 0
    for part in (model.encoder, model.losses[0].head):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(bool(g.abs().sum() > 0) for g in grads)


# ---- (f) bad options


def test_loss_positions_must_be_masked_or_all():
    with pytest.raises(ValueError, match="loss.conf.loss_positions"):
        ReconstructionLoss(SIZE, frame_size=SIZE, loss_positions="unmasked")


def test_a_frame_size_that_does_not_fit_the_frames_names_the_key_and_the_size():
    model = _build({"loss": [dict(name="reconstruction", conf=dict(frame_size=20))]})
    with pytest.raises(ValueError, match=rf"loss.conf.frame_size.*{N_MELS}"):
        model(*_audio())


def test_a_trainable_cnn_frontend_gets_a_collapse_warning(caplog):
    from espnet2.ssl.espnet_model import ESPnetSSLModel

    cnn = dict(
        frontend="wav2vec_cnn",
        frontend_conf=dict(
            norm_mode="layer_norm",
            conv_mode="standard",
            bias=False,
            shapes=[[16, 10, 5], [16, 8, 4]],
            normalize_output=False,
        ),
        normalize=None,
        model_conf=dict(feature_grad_mult=0.1),
        loss=[dict(name="reconstruction", conf=dict(frame_size=16))],
    )
    logger = logging.getLogger(ESPnetSSLModel.__module__)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        _build(cnn)
        assert "feature_grad_mult: 0" in caplog.text
        caplog.clear()
        _build(dict(cnn, model_conf=dict(feature_grad_mult=0.0)))
        _build()  # log-mel
        assert "collapsing" not in caplog.text


# ---- (g) rank weighting


def test_shards_weighted_by_sample_size_give_the_loss_of_the_whole_batch():
    loss_func = ReconstructionLoss(SIZE, frame_size=SIZE)
    channels = torch.zeros(len(LENGTHS), SIZE, dtype=torch.bool)
    channels[2, 1:3] = True
    whole = _inputs(frequency_mask=channels)
    loss, stats = loss_func(**whole)
    total, weights = 0.0, 0.0
    for rows in (slice(0, 1), slice(1, 3)):
        lengths = LENGTHS[rows]
        shard = {
            "encoder_output": [whole["encoder_output"][-1][rows, : max(lengths)]],
            "encoder_output_lengths": whole["encoder_output_lengths"][rows],
            "mask_info": {"mask_m": whole["mask_info"]["mask_m"][rows, : max(lengths)]},
            "frames": whole["frames"][rows, : max(lengths)],
            "frames_lengths": whole["frames_lengths"][rows],
            "frequency_mask": channels[rows],
        }
        shard_loss, shard_stats = loss_func(**shard)
        total = total + shard_stats["sample_size"] * shard_loss
        weights += shard_stats["sample_size"]
    assert weights == stats["sample_size"]
    assert torch.allclose(total / weights, loss)


def test_reconstruction_and_freq_mask_are_registered():
    assert task_module.loss_choices.get_class("reconstruction") is ReconstructionLoss
    assert task_module.util_choices.get_class("freq_mask") is FrequencyMasking
    loss = ReconstructionLoss(8, frame_size=4)
    assert {"mask", "freq_mask"} <= set(loss.util_attributes)
    assert {"frames", "frames_lengths", "frequency_mask"} <= set(loss.required_inputs)
