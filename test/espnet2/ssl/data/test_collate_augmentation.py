"""Augmentation through the collate, SSLTask's options and the model's stats
(espnet2/ssl/data/collate.py, espnet2/tasks/ssl.py, ESPnetSSLModel.forward)."""

import argparse
import math

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet2.ssl.data.augment import (
    AUG_NOISE,
    AUG_SPEED,
    AUG_VOLUME,
    WaveformAugmentation,
)
from espnet2.ssl.data.collate import SSLCollateFn
from espnet2.ssl.data.crop import frame_count
from espnet2.tasks.ssl import SSLTask

FS, FIELD, STRIDE = 16000, 400, 320
ALL_ON = dict(speed_prob=1.0, volume_prob=1.0, speed_factors=[1.1])


def utterance(uid: str, num_samples: int, label_rate: int = 1, seed: int = 0):
    """Random audio and labels whose entry i is the frame index i (at label_rate x
    the frame rate: entry k = k // label_rate)."""
    rng = np.random.default_rng(seed)
    frames = frame_count(num_samples, FIELD, STRIDE) * label_rate
    labels = np.arange(frames, dtype=np.int64) // label_rate
    audio = (0.1 * rng.standard_normal(num_samples)).astype(np.float32)
    return uid, dict(speech=audio, text=labels)


def batch_of(lengths, label_rate: int = 1):
    return [utterance(f"u{i}", n, label_rate, seed=i) for i, n in enumerate(lengths)]


def collate(seed: int = 0, **options) -> SSLCollateFn:
    return SSLCollateFn(generator=torch.Generator().manual_seed(seed), **options)


def noise_scp(tmp_path) -> str:
    path = tmp_path / "n.flac"
    soundfile.write(path, np.random.default_rng(0).standard_normal(8000) * 0.1, FS)
    (tmp_path / "wav.scp").write_text(f"n {path}\n")
    return str(tmp_path / "wav.scp")


@pytest.mark.parametrize("crop_seconds", [None, 0.5])
def test_probability_zero_leaves_the_batch_bitwise_unchanged(tmp_path, crop_seconds):
    data = batch_of([9000, 16000, 12345], label_rate=2)
    options = dict(crop_seconds=crop_seconds, label_downsampling=2, int_pad_value=-1)
    torch.manual_seed(0)  # ESPnet's crop to the shortest draws from it
    plain_ids, plain = collate(**options)(data)
    zero = dict(noise_scp=noise_scp(tmp_path), noise_prob=0.0, speed_prob=0.0)
    torch.manual_seed(0)
    ids, batch = collate(augmentation=zero, **options)(data)
    assert ids == plain_ids
    assert batch.pop("augmented").tolist() == [0, 0, 0]
    assert batch.keys() == plain.keys()
    for key in plain:
        assert torch.equal(batch[key], plain[key]), key


def test_validation_collate_never_augments_and_has_no_flags_key():
    data = batch_of([9000, 16000])
    plain = SSLCollateFn(train=False, crop_seconds=0.5)(data)[1]
    valid = SSLCollateFn(train=False, crop_seconds=0.5, augmentation=ALL_ON)
    assert valid.augmentation is None
    batch = valid(data)[1]
    assert "augmented" not in batch
    for key in plain:
        assert torch.equal(batch[key], plain[key]), key


def test_training_batches_carry_one_flag_per_utterance_in_batch_order(tmp_path):
    aug = dict(noise_scp=noise_scp(tmp_path), noise_prob=0.5, volume_prob=0.5)
    ids, batch = collate(seed=1, augmentation=aug)(batch_of([8000] * 16))
    flags = batch["augmented"]
    assert flags.dtype == torch.int64 and flags.shape == (16,)
    assert set(flags.tolist()) <= {0, AUG_NOISE, AUG_VOLUME, AUG_NOISE | AUG_VOLUME}
    assert "augmented_lengths" not in batch and len(ids) == 16


def test_crops_are_cut_from_the_speed_perturbed_audio_with_labels_in_step():
    data = batch_of([9000, 16000, 24000])
    ids, batch = collate(crop_seconds=0.5, augmentation=ALL_ON)(data)
    assert batch["augmented"].tolist() == [AUG_SPEED | AUG_VOLUME] * 3
    # 9000 samples at 1.1x: 8182 >= the 8000-sample crop, so all three are cropped
    assert batch["speech_lengths"].tolist() == [8000] * 3
    for b in range(3):
        count = int(batch["text_lengths"][b])
        assert count == frame_count(8000, FIELD, STRIDE)
        labels = batch["text"][b, :count].numpy()
        # consecutive frames of the crop step ~1.1 old frames at a time
        assert np.all(np.abs(np.diff(labels) - 1.1) <= 1.0)


@pytest.mark.parametrize("crop_seconds", [None, 0.5])
def test_labels_are_downsampled_then_stretched_one_per_frame(crop_seconds):
    data = batch_of([12000, 20000, 30000], label_rate=2)
    augmentation = dict(speed_prob=1.0, speed_factors=[0.9])
    ids, batch = collate(
        crop_seconds=crop_seconds, label_downsampling=2, augmentation=augmentation
    )(data)
    for b in range(3):
        length = int(batch["speech_lengths"][b])
        assert int(batch["text_lengths"][b]) == frame_count(length, FIELD, STRIDE)
    if crop_seconds is None:  # ESPnet's crop to the shortest perturbed utterance
        assert batch["speech_lengths"].tolist() == [math.ceil(12000 / 0.9)] * 3


def test_flags_stay_with_their_utterances_when_short_ones_are_dropped():
    data = batch_of([4000, 20000, 3000, 16000])
    aug = dict(volume_prob=0.5)
    ids, batch = collate(
        seed=2, crop_seconds=0.5, short_utterances="drop", augmentation=aug
    )(data)
    assert ids == ["u1", "u3"] and batch["augmented"].shape == (2,)
    expected = []
    augment = WaveformAugmentation(
        generator=torch.Generator().manual_seed(2), **aug, frame_field=FIELD
    )
    for uid, sample in data:
        expected.append((uid, augment(sample["speech"], sample["text"])[2]))
    assert batch["augmented"].tolist() == [f for uid, f in expected if uid in ids]


def test_options_the_collate_sets_and_unknown_keys_are_rejected_in_augmentation():
    with pytest.raises(ValueError, match=r"must not set \['sample_rate'\]"):
        SSLCollateFn(augmentation=dict(sample_rate=8000, volume_prob=1.0))
    unknown = r"unknown keys \['noise_probability'\].*'noise_prob'"
    with pytest.raises(ValueError, match=unknown):
        SSLCollateFn(augmentation=dict(noise_probability=0.5))


def _task_args(**collate_fn_conf) -> argparse.Namespace:
    return argparse.Namespace(
        collate_fn_conf=collate_fn_conf,
        frontend_conf={},
        encoder_conf={},
        collect_stats=False,
    )


def test_the_task_passes_augmentation_to_training_only_and_not_to_collect_stats():
    args = _task_args(augmentation=dict(volume_prob=0.5), crop_seconds=1.0)
    train = SSLTask.build_collate_fn(args, train=True)
    assert isinstance(train.augmentation, WaveformAugmentation)
    assert train.augmentation.volume_prob == 0.5
    assert train.augmentation.frame_stride == STRIDE
    assert SSLTask.build_collate_fn(args, train=False).augmentation is None
    args.collect_stats = True
    assert SSLTask.build_collate_fn(args, train=True).augmentation is None
    assert args.collate_fn_conf["augmentation"] == dict(volume_prob=0.5)  # untouched


def test_cli_keys_override_and_extend_the_yaml_augmentation(tmp_path):
    config = tmp_path / "config.yaml"
    augmentation = dict(noise_scp="data/noise/wav.scp", noise_prob=0.5, speed_prob=0.2)
    config.write_text(
        yaml.safe_dump(dict(collate_fn_conf=dict(augmentation=augmentation)))
    )
    args = SSLTask.get_parser().parse_args(
        ["--token_list", "none", "--token_type", "word", "--config", str(config)]
        + ["--collate_fn_conf", "augmentation.noise_prob=0.3"]
        + ["--collate_fn_conf", "augmentation.noise_snr_db=[0,10]"]
    )
    assert args.collate_fn_conf["augmentation"] == dict(
        noise_scp="data/noise/wav.scp",
        noise_prob=0.3,
        speed_prob=0.2,
        noise_snr_db=[0, 10],
    )


def test_the_model_reports_the_shares_of_the_flags_and_nothing_without_them(
    build_ssl_model, ssl_configs, audio_batch
):
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    speech, lengths = audio_batch(lengths=(8000, 5600, 7000, 6400))
    flags = torch.tensor([0, AUG_NOISE | AUG_SPEED, AUG_VOLUME, AUG_NOISE])
    torch.manual_seed(0)
    _, stats, _ = model(speech, lengths, augmented=flags, utt_id=["a", "b", "c", "d"])
    assert float(stats["aug_share"]) == pytest.approx(0.75)
    assert float(stats["aug_noise_share"]) == pytest.approx(0.5)
    assert float(stats["aug_speed_share"]) == pytest.approx(0.25)
    assert float(stats["aug_volume_share"]) == pytest.approx(0.25)
    torch.manual_seed(0)
    _, plain, _ = model(speech, lengths)
    assert not any(key.startswith("aug_") for key in plain)
    assert float(plain["loss"]) == pytest.approx(float(stats["loss"]))
