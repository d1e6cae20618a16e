"""Tests of mini_synth's noise generator (espnet2/ssl/synth/noise.py)."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet2.fileio.kaldi_data_dir import validate_data_dir
from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus
from espnet2.ssl.synth.noise import (
    NOISE_FILES,
    NoiseConfig,
    build_noise_dir,
    coloured_noise,
    mains_hum,
)

SMALL = dict(
    babble_clips=2, babble_pool=3, babble_seconds=2.0, coloured_seconds=2.0,
    hum_seconds=1.0,
)  # fmt: skip


def _build(root: Path, seed: int = 0, **sizes) -> Path:
    build_noise_dir(NoiseConfig(seed=seed, **sizes), root / "noise", root / "audio")
    return root / "noise"


def _audio(data_dir: Path):
    lines = (data_dir / "wav.scp").read_text().splitlines()
    return {u: soundfile.read(p, dtype="int16") for u, p in (x.split() for x in lines)}


def _digest(folder: Path):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_default_noise_is_two_to_three_minutes_of_valid_16k_mono_audio(tmp_path):
    noise = _build(tmp_path)
    summary = validate_data_dir(noise, sample_rate=16000, require_text=False)
    assert 120 <= summary.total_seconds <= 180
    kinds = {line.split()[1] for line in (noise / "utt2spk").read_text().splitlines()}
    assert kinds == {"babble", "white", "pink", "brown", "hum"}
    assert summary.num_utterances == 11
    for uid, (samples, rate) in _audio(noise).items():
        info = soundfile.info(str(tmp_path / "audio" / f"{uid}.flac"))
        assert rate == 16000 and samples.ndim == 1 and info.format == "FLAC"
        assert 0 < np.abs(samples).max() < 32767  # not silent, not clipped flat


def test_durations_follow_the_config_and_utt2dur(tmp_path):
    noise = _build(tmp_path, **SMALL)
    expected = {"babble-00": 2.0, "babble-01": 2.0, "white-00": 2.0, "pink-00": 2.0}
    expected.update({"brown-00": 2.0, "hum-00": 1.0, "hum-01": 1.0})
    utt2dur = dict(
        line.split() for line in (noise / "utt2dur").read_text().splitlines()
    )
    assert {u: float(d) for u, d in utt2dur.items()} == expected
    for uid, (samples, _) in _audio(noise).items():
        assert len(samples) == expected[uid] * 16000


def test_the_same_seed_gives_identical_files_and_another_seed_other_babble(tmp_path):
    first, again = _build(tmp_path / "a", **SMALL), _build(tmp_path / "b", **SMALL)
    other = _build(tmp_path / "c", seed=1, **SMALL)
    for name in ("utt2spk", "spk2utt", "utt2dur"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
    audio, audio_again, audio_other = _audio(first), _audio(again), _audio(other)
    for uid in audio:
        assert np.array_equal(audio[uid][0], audio_again[uid][0]), uid
    assert not np.array_equal(audio["babble-00"][0], audio_other["babble-00"][0])
    assert not np.array_equal(audio["pink-00"][0], audio_other["pink-00"][0])


def test_a_rerun_returns_at_once_and_a_new_config_rebuilds_without_stale_files(
    tmp_path,
):
    noise = _build(tmp_path, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "audio").iterdir()}
    _build(tmp_path, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "audio").iterdir()} == before
    _build(tmp_path, **dict(SMALL, babble_clips=1))
    assert not (tmp_path / "audio" / "babble-01.flac").exists()
    assert "babble-01" not in (noise / "wav.scp").read_text()
    assert all((noise / name).is_file() for name in NOISE_FILES)


def test_the_colours_and_the_hum_have_their_spectra():
    rng = np.random.default_rng(0)

    def low_share(audio):  # share of the power below 200 Hz
        power = np.abs(np.fft.rfft(audio)) ** 2
        return power[: 200 * len(audio) // 16000].sum() / power.sum()

    white, pink, brown = (coloured_noise(32000, e, rng) for e in (0.0, 1.0, 2.0))
    assert low_share(white) < 0.05 < low_share(pink) < low_share(brown)
    for audio in (white, pink, brown):
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) == pytest.approx(0.05)
    hum = mains_hum(16000, 60.0, 16000, rng)
    assert np.argmax(np.abs(np.fft.rfft(hum))) == 60  # 1 Hz bins


def test_the_corpus_stays_complete_and_unchanged_beside_its_noise(tmp_path):
    config = SynthCorpusConfig(
        seed=2, train_minutes=0.1, labeled_minutes=0.05, dev_minutes=0.05,
        test_minutes=0.05,
    )  # fmt: skip
    build_corpus(config, tmp_path / "data", tmp_path / "audio", show_progress=False)
    before = _digest(tmp_path)
    build_noise_dir(
        NoiseConfig(seed=2, **SMALL),
        tmp_path / "data" / "noise",
        tmp_path / "audio" / "noise",
    )
    build_corpus(config, tmp_path / "data", tmp_path / "audio", show_progress=False)
    after = _digest(tmp_path)
    assert {k: v for k, v in after.items() if "noise" not in k} == before


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(hum_seconds=0), "hum_seconds must be positive"),
        (dict(min_talkers=4, max_talkers=3), "min_talkers"),
        (dict(babble_pool=0), "babble_pool"),
    ],
)
def test_bad_configs_are_errors_naming_the_field(options, match):
    with pytest.raises(ValueError, match=match):
        NoiseConfig(**options)
