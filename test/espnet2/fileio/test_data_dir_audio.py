"""Tests for espnet2/fileio/data_dir_audio.py: step 5 of validate_data_dir in
processes (``nj``) and header-only (``check_audio="header"``)."""

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import soundfile

from espnet2.fileio.data_dir_audio import audio_check_mode
from espnet2.fileio.kaldi_data_dir import DataDirError, validate_data_dir

SAMPLE_RATE = 16000
NUM_UTTS = 12


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """12 utterances of two speakers, FLAC of 0.3-1.4 s, with utt2dur."""
    root = tmp_path / "train"
    root.mkdir()
    rng = np.random.default_rng(0)
    utts = [(f"spk{i % 2}-u{i:02d}", f"spk{i % 2}") for i in range(NUM_UTTS)]
    utts.sort()
    durations = []
    for index, (utt, _) in enumerate(utts):
        samples = int((0.3 + 0.1 * index) * SAMPLE_RATE)
        noise = 0.1 * rng.standard_normal(samples)
        soundfile.write(root / f"{utt}.flac", noise, SAMPLE_RATE, subtype="PCM_16")
        durations.append(f"{utt} {samples / SAMPLE_RATE:.4f}")
    write_lines(root / "wav.scp", [f"{u} {root / u}.flac" for u, _ in utts])
    write_lines(root / "utt2spk", [f"{u} {s}" for u, s in utts])
    speakers = sorted({s for _, s in utts})
    spk2utt = [f"{s} {' '.join(u for u, x in utts if x == s)}" for s in speakers]
    write_lines(root / "spk2utt", spk2utt)
    write_lines(root / "utt2dur", durations)
    return root


def utt_ids(data_dir: Path):
    return [
        line.split()[0] for line in (data_dir / "wav.scp").read_text().split("\n")[:-1]
    ]


def cut_flac(path: Path) -> None:
    """Keep the header and a third of the payload: decoding fails midway."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def to_wav(path: Path, rate: int = SAMPLE_RATE, channels: int = 1, **kw) -> None:
    audio, _ = soundfile.read(path, dtype="float32")
    audio = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    soundfile.write(path, audio, rate, format="WAV", **kw)


def put_nan(path: Path) -> None:
    audio, _ = soundfile.read(path, dtype="float32")
    audio[10] = np.nan
    soundfile.write(path, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")


@pytest.mark.parametrize("mode", ["full", "header"])
def test_processes_give_the_summary_of_one_process(data_dir, mode):
    serial = validate_data_dir(data_dir, check_audio=mode, require_text=False)
    parallel = validate_data_dir(data_dir, check_audio=mode, require_text=False, nj=2)
    assert parallel == serial
    assert serial.num_utterances == NUM_UTTS


@pytest.mark.parametrize("mode", ["full", "header"])
def test_processes_report_the_first_problem_in_file_order_as_one_does(data_dir, mode):
    utts = utt_ids(data_dir)
    (data_dir / f"{utts[9]}.flac").unlink()  # a later chunk
    to_wav(data_dir / f"{utts[4]}.flac", rate=8000, subtype="PCM_16")  # earlier
    messages = []
    for nj in (1, 2):
        with pytest.raises(DataDirError) as err:
            validate_data_dir(data_dir, check_audio=mode, require_text=False, nj=nj)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert f"wav.scp:5: utterance '{utts[4]}': sample rate is 8000 Hz" in messages[0]


def test_header_check_misses_a_cut_flac_that_the_full_check_finds(data_dir):
    utts = utt_ids(data_dir)
    cut_flac(data_dir / f"{utts[7]}.flac")
    summary = validate_data_dir(data_dir, check_audio="header", require_text=False)
    assert summary.num_utterances == NUM_UTTS
    with pytest.raises(DataDirError, match=f"utterance .{utts[7]}.: cannot decode"):
        validate_data_dir(data_dir, check_audio="full", require_text=False, nj=2)


def test_header_check_misses_nan_samples_that_the_full_check_finds(data_dir):
    utts = utt_ids(data_dir)
    put_nan(data_dir / f"{utts[2]}.flac")
    validate_data_dir(data_dir, check_audio="header", require_text=False)
    with pytest.raises(DataDirError, match="NaN or infinite"):
        validate_data_dir(data_dir, check_audio="full", require_text=False)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: p.unlink(), "does not exist"),
        (lambda p: to_wav(p, channels=2, subtype="PCM_16"), "2 channels"),
        (lambda p: p.write_bytes(b"not audio" * 50), "cannot read audio file"),
        (
            lambda p: (to_wav(p, subtype="PCM_16"), cut_flac(p)),
            "file is truncated: its header declares",
        ),
    ],
    ids=["missing", "stereo", "garbage", "cut wav"],
)
def test_header_check_finds_what_the_headers_show(data_dir, damage, problem):
    utts = utt_ids(data_dir)
    damage(data_dir / f"{utts[3]}.flac")
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir, check_audio="header", require_text=False, nj=2)
    assert f"wav.scp:4: utterance '{utts[3]}': " in str(err.value)
    assert problem in str(err.value) and "Fix: " in str(err.value)


def test_header_check_compares_utt2dur_with_the_header(data_dir):
    lines = (data_dir / "utt2dur").read_text().splitlines()
    utt = lines[6].split()[0]
    lines[6] = f"{utt} 9.0"
    write_lines(data_dir / "utt2dur", lines)
    with pytest.raises(DataDirError, match=f"utt2dur:7: utterance '{utt}': durat"):
        validate_data_dir(data_dir, check_audio="header", require_text=False, nj=2)


@pytest.mark.parametrize(
    "value, mode",
    [(True, "full"), (False, "none"), ("header", "header"), ("FALSE", "none")],
)
def test_check_audio_mode_reads_booleans_and_names(value, mode):
    assert audio_check_mode(value) == mode


def test_check_audio_mode_refuses_other_values():
    with pytest.raises(ValueError, match="one of full, header, none"):
        audio_check_mode("partial")
