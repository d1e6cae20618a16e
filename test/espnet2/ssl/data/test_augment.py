"""Tests for espnet2/ssl/data/augment.py (noise, speed and volume perturbation)."""

import numpy as np
import pytest
import soundfile
import torch

from espnet2.ssl.data.augment import (
    AUG_NOISE,
    AUG_SPEED,
    AUG_VOLUME,
    WaveformAugmentation,
    augmentation_stats,
    stretch_labels,
)
from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count

FS, FIELD, STRIDE = 16000, 400, 320


def speech(num_samples: int = 16000, seed: int = 0) -> np.ndarray:
    """A 220 Hz tone with a slow envelope plus a little noise, float32 (S,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / FS
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1.2 + np.sin(2 * np.pi * 1.5 * t))
    return (tone + 0.01 * rng.standard_normal(num_samples)).astype(np.float32)


def write_noise_dir(tmp_path, lengths=(12000, 3000), rate=FS, channels=1):
    """Noise recordings (seeded Gaussian) and their wav.scp; returns the scp path."""
    rng = np.random.default_rng(1)
    lines = []
    for index, length in enumerate(lengths):
        path = tmp_path / f"n{index}.flac"
        audio = 0.1 * rng.standard_normal((length, channels))
        soundfile.write(path, audio, rate, subtype="PCM_16")
        lines.append(f"n{index} {path}\n")
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(lines))
    return scp


def seeded(seed: int = 0, **options) -> WaveformAugmentation:
    return WaveformAugmentation(
        generator=torch.Generator().manual_seed(seed), **options
    )


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean**2) / np.mean(noise**2))


@pytest.mark.parametrize("snr_range", [(5.0, 5.0), (-3.0, -3.0), (0.0, 20.0)])
def test_noise_is_added_at_the_drawn_snr_within_half_a_db(tmp_path, snr_range):
    augment = seeded(
        noise_scp=str(write_noise_dir(tmp_path)),
        noise_prob=1.0,
        noise_snr_db=list(snr_range),
    )
    for seed in range(10):
        clean = speech(seed=seed)
        noisy, labels, flags = augment(clean)
        assert flags == AUG_NOISE and labels is None
        assert noisy.dtype == np.float32 and noisy.shape == clean.shape
        achieved = snr_db(clean, noisy)
        assert snr_range[0] - 0.5 <= achieved <= snr_range[1] + 0.5, achieved


def test_a_noise_shorter_than_the_utterance_is_tiled(tmp_path):
    scp = write_noise_dir(tmp_path, lengths=(1000,))
    augment = seeded(noise_scp=str(scp), noise_prob=1.0, noise_snr_db=[0, 0])
    clean = speech(5000)
    added = augment(clean)[0].astype(np.float64) - clean
    noise = soundfile.read(tmp_path / "n0.flac")[0]
    offset = int(
        np.argmax([np.dot(np.roll(noise, -k), added[:1000]) for k in range(1000)])
    )
    expected = noise[(offset + np.arange(5000)) % 1000]
    scale = np.dot(added, expected) / np.dot(expected, expected)
    np.testing.assert_allclose(added, scale * expected, atol=1e-6)


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.95])
def test_speed_changes_duration_by_one_over_the_factor_and_the_pitch_by_it(factor):
    augment = seeded(speed_prob=1.0, speed_factors=[factor])
    t = np.arange(32000) / FS
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    fast, _, flags = augment(tone)
    assert flags == AUG_SPEED and fast.dtype == np.float32
    assert abs(len(fast) - 32000 / factor) <= 1
    spectrum = np.abs(np.fft.rfft(fast * np.hanning(len(fast))))
    peak_hz = np.argmax(spectrum) * FS / len(fast)
    assert abs(peak_hz - 1000 * factor) < 2


@pytest.mark.parametrize("factor", [0.9, 1.1])
@pytest.mark.parametrize("num_samples", [400, 719, 8000, 16000, 16001, 33333])
def test_speed_keeps_one_label_per_cnn_frame_of_the_new_length(factor, num_samples):
    augment = seeded(speed_prob=1.0, speed_factors=[factor])
    old_frames = cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
    labels = np.arange(old_frames, dtype=np.int64)  # label i = frame index i
    audio, new_labels, _ = augment(speech(num_samples), labels)
    assert len(new_labels) == cnn_frame_count(len(audio), WAV2VEC2_CNN_SHAPES)
    assert new_labels.dtype == np.int64
    # new frame j is old frame ~ j * factor: the labels follow the stretch
    expected = np.arange(len(new_labels)) * factor
    assert np.all(np.abs(new_labels - expected) <= 1.0)
    assert np.all(np.diff(new_labels) >= 0) and np.all(new_labels < old_frames)


def test_stretched_labels_take_the_old_frame_nearest_in_time():
    labels = np.array([10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    # factor 2: new frame j's centre (320 j + 200) is old time 640 j + 400,
    # i.e. old frame (640 j + 200) / 320 = 2 j + 0.625 -> 2 j + 1
    out = stretch_labels(labels, 2.0, 5, FIELD, STRIDE)
    assert out.tolist() == [11, 13, 15, 17, 19]
    slow = stretch_labels(labels, 0.5, 4, FIELD, STRIDE)  # 0.5 j - 0.3125 -> 0, 0, 1, 1
    assert slow.tolist() == [10, 10, 11, 11]
    assert stretch_labels(labels[:0], 1.1, 3, FIELD, STRIDE).shape == (0,)


def test_volume_gain_is_exact_in_db():
    clean = speech()
    louder, _, flags = seeded(volume_prob=1.0, volume_db=[3.0, 3.0])(clean)
    assert flags == AUG_VOLUME
    np.testing.assert_allclose(louder, clean * 10 ** (3.0 / 20), rtol=1e-6)
    augment = seeded(volume_prob=1.0, volume_db=[-6.0, 6.0])
    for _ in range(20):
        out = augment(clean)[0]
        ratio = np.dot(out, clean) / np.dot(clean, clean)
        gain_db = 20 * np.log10(ratio)
        assert -6.0 - 1e-4 <= gain_db <= 6.0 + 1e-4
        np.testing.assert_allclose(out, clean * ratio, rtol=1e-5, atol=1e-7)


def test_probability_zero_is_the_identity_and_draws_nothing(tmp_path):
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    augment = WaveformAugmentation(
        noise_scp=str(write_noise_dir(tmp_path)), generator=generator
    )
    clean, labels = speech(), np.arange(49)
    out, out_labels, flags = augment(clean, labels)
    assert out is clean and out_labels is labels and flags == 0
    assert torch.equal(generator.get_state(), before)


def test_probability_one_always_applies_all_three(tmp_path):
    augment = seeded(
        noise_scp=str(write_noise_dir(tmp_path)),
        noise_prob=1.0,
        speed_prob=1.0,
        volume_prob=1.0,
    )
    for seed in range(20):
        assert augment(speech(8000, seed))[2] == AUG_NOISE | AUG_SPEED | AUG_VOLUME


def test_each_augmentation_is_applied_independently_with_its_probability(tmp_path):
    augment = seeded(
        noise_scp=str(write_noise_dir(tmp_path)),
        noise_prob=0.5,
        speed_prob=0.2,
        volume_prob=0.8,
    )
    clean = speech(2000)
    flags = torch.tensor([augment(clean)[2] for _ in range(600)])
    stats = augmentation_stats(flags)
    assert stats["aug_noise_share"] == pytest.approx(0.5, abs=0.07)
    assert stats["aug_speed_share"] == pytest.approx(0.2, abs=0.07)
    assert stats["aug_volume_share"] == pytest.approx(0.8, abs=0.07)
    assert stats["aug_share"] == pytest.approx(1 - 0.5 * 0.8 * 0.2, abs=0.07)


def test_the_same_seed_repeats_the_augmentation_and_another_seed_differs(tmp_path):
    options = dict(
        noise_scp=str(write_noise_dir(tmp_path)),
        noise_prob=0.5,
        speed_prob=0.5,
        volume_prob=0.5,
    )

    def run(seed):
        augment = seeded(seed, **options)
        return [augment(speech(8000, i), np.arange(24)) for i in range(8)]

    first, again, other = run(3), run(3), run(4)
    for (a, la, fa), (b, lb, fb) in zip(first, again):
        assert fa == fb and np.array_equal(a, b) and np.array_equal(la, lb)
    assert [f for _, _, f in first] != [f for _, _, f in other] or any(
        not np.array_equal(a, b) for (a, _, _), (b, _, _) in zip(first, other)
    )


def test_the_global_generator_is_used_without_an_injected_one():
    augment = WaveformAugmentation(volume_prob=0.5)
    torch.manual_seed(5)
    first = [augment(speech(800))[2] for _ in range(16)]
    torch.manual_seed(5)
    assert [augment(speech(800))[2] for _ in range(16)] == first


def test_augmentation_stats_are_the_shares_of_the_flags():
    flags = torch.tensor([0, AUG_NOISE, AUG_SPEED | AUG_VOLUME, 7, 0, AUG_VOLUME])
    stats = augmentation_stats(flags)
    assert all(value.dim() == 0 for value in stats.values())  # tensors: no host read
    assert {key: float(value) for key, value in stats.items()} == pytest.approx(
        {
            "aug_share": 4 / 6,
            "aug_noise_share": 2 / 6,
            "aug_speed_share": 2 / 6,
            "aug_volume_share": 3 / 6,
        }
    )


def _bad_noise_dirs(tmp_path):
    """(name, noise_scp, words the error must contain) per kind of bad input."""
    cases = [("missing list", tmp_path / "nope" / "wav.scp", ["nope/wav.scp"])]
    (tmp_path / "empty.scp").write_text("\n")
    cases.append(("empty list", tmp_path / "empty.scp", ["empty.scp", "no record"]))
    (tmp_path / "bad.txt").write_text("not audio")
    (tmp_path / "unreadable.scp").write_text(f"junk {tmp_path / 'bad.txt'}\n")
    cases.append(("unreadable", tmp_path / "unreadable.scp", ["'junk'", "bad.txt"]))
    (tmp_path / "nopath.scp").write_text("lonely\n")
    cases.append(("no path", tmp_path / "nopath.scp", ["'lonely'", "line 1"]))
    for name, kwargs, words in (
        ("8k", dict(rate=8000), ["'n0'", "8000 Hz", "resample"]),
        ("stereo", dict(channels=2), ["'n0'", "2 channels"]),
    ):
        folder = tmp_path / name
        folder.mkdir()
        cases.append((name, write_noise_dir(folder, (800,), **kwargs), words))
    return cases


def test_every_bad_noise_input_is_an_error_naming_the_file_and_the_fix(tmp_path):
    for name, scp, words in _bad_noise_dirs(tmp_path):
        with pytest.raises(ValueError) as error:
            WaveformAugmentation(noise_scp=str(scp), noise_prob=0.5)
        message = str(error.value)
        for word in words:
            assert word in message, (name, message)
        assert "data/noise/wav.scp" in message and "noise_prob: 0" in message, name


def test_noise_without_a_noise_scp_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"noise_prob > 0 needs a noise_scp"):
        WaveformAugmentation(noise_prob=0.1)
    WaveformAugmentation(noise_scp="does/not/matter", noise_prob=0.0)  # not opened


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(speed_prob=1.5), "speed_prob must be in"),
        (dict(volume_prob=-0.1), "volume_prob must be in"),
        (dict(noise_snr_db=[20, 5]), "noise_snr_db must be"),
        (dict(volume_db=[1.0]), "volume_db must be"),
        (dict(speed_factors=[]), "speed_factors must not be empty"),
        (dict(speed_factors=[0.9, -1.0]), "speed_factors must be positive"),
    ],
)
def test_bad_options_are_errors_naming_the_key(options, match):
    with pytest.raises(ValueError, match=match):
        WaveformAugmentation(**options)
