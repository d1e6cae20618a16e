"""Tests for espnet2/bin/validate_data_dir.py, in process and as ``python -m``."""

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import soundfile

from espnet2.bin.validate_data_dir import get_parser, main

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_RATE = 16000
# (utterance id, speaker id, seconds), sorted as Kaldi wants.
UTTS = (("spk1-a", "spk1", 0.5), ("spk1-b", "spk1", 1.5), ("spk2-a", "spk2", 1.0))


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_data_dir(root: Path, name: str) -> Path:
    """A valid data dir ``root/name`` of three utterances (3 s, two speakers)."""
    data_dir = root / name
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for utt, _, seconds in UTTS:
        noise = 0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))
        soundfile.write(data_dir / f"{utt}.flac", noise, SAMPLE_RATE, subtype="PCM_16")
    write_lines(data_dir / "wav.scp", [f"{u} {data_dir / u}.flac" for u, _, _ in UTTS])
    write_lines(data_dir / "utt2spk", [f"{u} {s}" for u, s, _ in UTTS])
    write_lines(data_dir / "spk2utt", ["spk1 spk1-a spk1-b", "spk2 spk2-a"])
    write_lines(data_dir / "text", [f"{u} hello" for u, _, _ in UTTS])
    return data_dir


def run_cli(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m espnet2.bin.validate_data_dir`` with the repository first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "espnet2.bin.validate_data_dir", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_a_summary_per_valid_dir_and_exits_0(tmp_path):
    make_data_dir(tmp_path, "data/train")
    make_data_dir(tmp_path, "data/dev")
    result = run_cli(["--sample_rate", "16000", "data/train", "data/dev"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "data/train: 3 utterances, 2 speakers, 0.1 min (0.5-1.5 s)",
        "data/dev: 3 utterances, 2 speakers, 0.1 min (0.5-1.5 s)",
    ]
    assert "'sample_rate': 16000" in result.stderr  # the arguments are logged


def test_cli_prints_the_error_without_traceback_and_exits_1(tmp_path):
    make_data_dir(tmp_path, "data/train")
    bad = make_data_dir(tmp_path, "data/bad")
    (bad / "spk1-b.flac").unlink()
    result = run_cli(["data/train", "data/bad", "data/train"], tmp_path)
    assert result.returncode == 1
    assert "data/bad/wav.scp:2: utterance 'spk1-b':" in result.stderr
    assert "does not exist" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr
    # The first dir is summarised; nothing is checked after the failing one.
    assert result.stdout.splitlines() == [
        "data/train: 3 utterances, 2 speakers, 0.1 min (0.5-1.5 s)"
    ]


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False)])
def test_boolean_options_take_true_and_false(value, expected):
    args = get_parser().parse_args(
        ["--check_audio", value, "--require_text", value, "d"]
    )
    assert args.check_audio == ("full" if expected else "none")
    assert args.require_text is expected
    assert args.sample_rate == 16000 and args.data_dirs == ["d"] and args.nj == 1


@pytest.mark.parametrize("value", ["full", "header", "none", "HEADER"])
def test_check_audio_takes_the_three_depths(value):
    args = get_parser().parse_args(["--check_audio", value, "d"])
    assert args.check_audio == value.lower()


def test_check_audio_refuses_an_unknown_depth(capsys):
    with pytest.raises(SystemExit):
        get_parser().parse_args(["--check_audio", "partial", "d"])
    assert "--check_audio" in capsys.readouterr().err


def test_main_skips_audio_and_text_when_told(tmp_path, capsys):
    data_dir = make_data_dir(tmp_path, "train")
    (data_dir / "text").unlink()
    (data_dir / "spk1-a.flac").unlink()
    main(["--check_audio", "false", "--require_text", "false", str(data_dir)])
    assert "3 utterances, 2 speakers, duration unknown" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([str(data_dir)])
    assert exit_info.value.code == 1
    assert "text: required file is missing. Fix:" in capsys.readouterr().err


def _rewrite(path: Path, rate: int = SAMPLE_RATE, channels: int = 1, **kw) -> None:
    """Replace the FLAC at ``path`` by a WAV with the same name (the scp is kept)."""
    audio, _ = soundfile.read(path, dtype="float32")
    audio = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    soundfile.write(path, audio, rate, format="WAV", **kw)


def _nan(path: Path) -> None:
    audio, _ = soundfile.read(path, dtype="float32")
    audio[100] = np.nan
    soundfile.write(path, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")


def _cut(path: Path) -> None:
    _rewrite(path, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:8000])


def _empty(path: Path) -> None:
    soundfile.write(path, np.zeros(0), SAMPLE_RATE, format="WAV", subtype="PCM_16")


# (name, damage, problem words, fix words)
AUDIO_FAULTS = [
    ("truncated", _cut, "file is truncated", "re-create the file"),
    ("zero length", _empty, "zero length", "re-create the file"),
    ("8 kHz", lambda p: _rewrite(p, rate=8000, subtype="PCM_16"),
     "sample rate is 8000 Hz", "resample"),
    ("stereo", lambda p: _rewrite(p, channels=2, subtype="PCM_16"), "2 channels",
     "downmix to mono"),
    ("NaN", _nan, "NaN or infinite, the first at sample 100", "from its source"),
]  # fmt: skip


@pytest.mark.parametrize(
    "damage, problem, fix",
    [case[1:] for case in AUDIO_FAULTS],
    ids=[case[0] for case in AUDIO_FAULTS],
)
def test_main_rejects_bad_audio_naming_the_utterance_and_the_fix(
    tmp_path, capsys, damage, problem, fix
):
    data_dir = make_data_dir(tmp_path, "train")
    damage(data_dir / "spk1-b.flac")
    with pytest.raises(SystemExit) as exit_info:
        main([str(data_dir)])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "wav.scp:2: utterance 'spk1-b': " in error and problem in error
    assert "Fix: " in error and fix in error.split("Fix: ", 1)[1]
