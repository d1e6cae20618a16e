"""espnet2/fileio/audio_check.py: truncated, wrong-format and non-finite audio."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet2.fileio.audio_check import (
    decode_problem,
    file_nonfinite_problem,
    format_problem,
    nonfinite_problem,
    wav_truncation,
)


def _write(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1):
    rng = np.random.default_rng(0)
    audio = 0.1 * rng.standard_normal((int(seconds * rate), channels))
    soundfile.write(str(path), audio, rate, subtype="PCM_16")
    return path


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_a_complete_wav_has_no_problem(tmp_path):
    path = _write(tmp_path / "a.wav")
    assert wav_truncation(path) is None
    assert decode_problem(path, soundfile.info(str(path))) is None


def test_a_wav_cut_in_half_is_reported_with_the_byte_counts(tmp_path):
    path = _cut(_write(tmp_path / "a.wav"), 0.5)
    problem = wav_truncation(path)
    assert problem is not None and "header declares 32000 bytes" in problem


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_a_cut_flac_is_reported_by_decoding(tmp_path, fraction):
    path = _cut(_write(tmp_path / "a.flac", seconds=2.0), fraction)
    try:
        info = soundfile.info(str(path))
    except soundfile.SoundFileError:
        pytest.skip("this cut already breaks the header")
    assert decode_problem(path, info) is not None


def test_format_problem_names_rate_channels_and_empty_audio(tmp_path):
    stereo = soundfile.info(str(_write(tmp_path / "s.wav", channels=2)))
    assert "2 channels" in format_problem(stereo, 16000)[0]
    wrong_rate = soundfile.info(str(_write(tmp_path / "r.wav", rate=8000)))
    assert "8000 Hz, expected 16000 Hz" in format_problem(wrong_rate, 16000)[0]
    empty = soundfile.info(str(_write(tmp_path / "e.wav", seconds=0.0)))
    assert "zero length" in format_problem(empty, 16000)[0]
    good = soundfile.info(str(_write(tmp_path / "g.wav")))
    assert format_problem(good, 16000) is None


@pytest.mark.parametrize("shape", [(50,), (50, 2)])
def test_nonfinite_samples_are_counted_with_the_first_bad_sample(shape):
    audio = np.zeros(shape, np.float32)
    assert nonfinite_problem(audio) is None
    audio[17], audio[40] = np.nan, -np.inf  # every channel of samples 17 and 40
    count = 2 * (audio.size // len(audio))
    assert nonfinite_problem(audio) == (
        f"audio has {count} samples that are NaN or infinite, the first at sample 17"
    )
    assert nonfinite_problem(np.zeros((0,), np.float32)) is None


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_a_float_file_is_decoded_whole_for_nan_and_inf(tmp_path, subtype):
    """The first bad sample lies past the first decoding block (65536 frames)."""
    audio = np.zeros(100_000, np.float32)
    path = tmp_path / "f.wav"
    soundfile.write(str(path), audio, 16000, subtype=subtype)
    assert file_nonfinite_problem(path, soundfile.info(str(path))) is None
    audio[70_000], audio[99_999] = np.inf, np.nan
    soundfile.write(str(path), audio, 16000, subtype=subtype)
    problem = file_nonfinite_problem(path, soundfile.info(str(path)))
    assert problem == (
        "audio has 2 samples that are NaN or infinite, the first at sample 70000"
    )


def test_a_pcm_file_is_not_decoded_for_nan(tmp_path, monkeypatch):
    path = _write(tmp_path / "p.wav")
    info = soundfile.info(str(path))
    monkeypatch.setattr(soundfile, "SoundFile", None)  # would fail if opened
    assert file_nonfinite_problem(path, info) is None
