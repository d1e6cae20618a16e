"""espnet2/fileio/audio_check.py: truncated and wrong-format audio files."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet2.fileio.audio_check import decode_problem, format_problem, wav_truncation


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
