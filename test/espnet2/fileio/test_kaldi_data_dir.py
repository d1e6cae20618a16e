"""Tests for espnet2/fileio/kaldi_data_dir.py.

A fixture builds a valid data dir with real audio; each test breaks one thing in it.
"""

import pickle
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from espnet2.fileio.kaldi_data_dir import (
    DataDirError,
    DataDirSummary,
    KaldiLine,
    parse_two_column_text,
    read_two_column_file,
    validate_data_dir,
)
from espnet2.fileio.read_text import read_2columns_text


@dataclass(frozen=True)
class Utt:
    """One utterance of a generated data dir."""

    utt_id: str
    spk: str
    seconds: float
    fmt: str = "wav"
    text: str = "hello world"
    sample_rate: int = 16000
    channels: int = 1


# Sorted as Kaldi wants: line N of every utterance-level file is GOOD_UTTS[N - 1].
GOOD_UTTS = (
    Utt("spk01-0001", "spk01", 0.5, "wav"),
    Utt("spk01-0002", "spk01", 1.0, "flac"),
    Utt("spk01-0003", "spk01", 1.5, "wav"),
    Utt("spk02-0001", "spk02", 0.75, "flac"),
    Utt("spk02-0002", "spk02", 1.25, "wav"),
    Utt("spk02-0003", "spk02", 0.6, "flac", text="a longer transcript here"),
)
GOOD_TOTAL_SECONDS = 5.6


def write_audio(path: Path, utt: Utt, seed: int) -> None:
    """Write a sine plus noise of ``utt.seconds`` seconds as 16-bit WAV or FLAC."""
    rng = np.random.default_rng(seed)
    num_samples = int(round(utt.seconds * utt.sample_rate))
    time = np.arange(num_samples) / utt.sample_rate
    wave = 0.3 * np.sin(2 * np.pi * 220.0 * time) + 0.05 * rng.standard_normal(
        num_samples
    )
    if utt.channels > 1:
        wave = np.stack([wave] * utt.channels, axis=1)  # (S,) -> (S, C)
    soundfile.write(
        path, wave, utt.sample_rate, subtype="PCM_16", format=utt.fmt.upper()
    )


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_lines(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def build_data_dir(root: Path, utts: Sequence[Utt], with_utt2dur: bool = True) -> Path:
    """Write audio under ``root/audio`` and a data dir ``root/data/train``."""
    data_dir, audio_dir = root / "data" / "train", root / "audio"
    data_dir.mkdir(parents=True)
    audio_dir.mkdir()
    utts = sorted(utts, key=lambda utt: utt.utt_id.encode("utf-8"))
    for seed, utt in enumerate(utts):
        write_audio(audio_dir / f"{utt.utt_id}.{utt.fmt}", utt, seed)
    wavs = [f"{u.utt_id} {audio_dir / u.utt_id}.{u.fmt}" for u in utts]
    write_lines(data_dir / "wav.scp", wavs)
    write_lines(data_dir / "utt2spk", [f"{u.utt_id} {u.spk}" for u in utts])
    write_lines(data_dir / "text", [f"{u.utt_id} {u.text}" for u in utts])
    speakers = sorted({u.spk for u in utts}, key=lambda spk: spk.encode("utf-8"))
    spk2utt = [" ".join([s] + [u.utt_id for u in utts if u.spk == s]) for s in speakers]
    write_lines(data_dir / "spk2utt", spk2utt)
    if with_utt2dur:
        write_lines(data_dir / "utt2dur", [f"{u.utt_id} {u.seconds:.4f}" for u in utts])
    return data_dir


def audio_path(data_dir: Path, line: int) -> Path:
    """The audio file of wav.scp line ``line`` (1-based)."""
    return Path(read_lines(data_dir / "wav.scp")[line - 1].split(" ", 1)[1])


def edit_line(path: Path, line: int, new: Optional[str]) -> None:
    """Replace line ``line`` (1-based) of ``path``; delete it when ``new`` is None."""
    lines = read_lines(path)
    lines[line - 1 : line] = [] if new is None else [new]
    write_lines(path, lines)


def assert_error(
    err: pytest.ExceptionInfo, file_name: str, line: Optional[int], utt: Optional[str]
) -> str:
    """Check that the message names the file, line, id and a fix; return it."""
    message = str(err.value)
    assert Path(err.value.path).name == file_name and file_name in message
    assert err.value.line == line and err.value.utt == utt
    if line is not None:
        assert f"{file_name}:{line}:" in message
    if utt is not None:
        assert f"'{utt}'" in message
    assert "Fix:" in message and err.value.fix in message
    assert "\n" not in message
    return message


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return build_data_dir(tmp_path, GOOD_UTTS)


def test_valid_dir_passes_and_summary_counts_utterances_speakers_seconds(data_dir):
    summary = validate_data_dir(data_dir)
    assert summary.num_utterances == 6 and summary.num_speakers == 2
    assert summary.total_seconds == pytest.approx(GOOD_TOTAL_SECONDS, abs=1e-3)
    assert summary.min_seconds == pytest.approx(0.5)
    assert summary.max_seconds == pytest.approx(1.5)


def test_summary_describes_itself_in_one_line():
    summary = DataDirSummary(412, 9, 1218.0, 1.2, 6.1)
    expected = "data/train: 412 utterances, 9 speakers, 20.3 min (1.2-6.1 s)"
    assert summary.describe("data/train") == expected
    assert "duration unknown" in DataDirSummary(3, 1).describe("d")


def test_relative_audio_paths_are_read_from_the_current_directory(
    data_dir, tmp_path, monkeypatch
):
    lines = read_lines(data_dir / "wav.scp")
    write_lines(
        data_dir / "wav.scp", [line.replace(f"{tmp_path}/", "") for line in lines]
    )
    (data_dir / "utt2dur").unlink()
    monkeypatch.chdir(tmp_path)
    assert validate_data_dir("data/train").num_utterances == 6
    monkeypatch.chdir(data_dir)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(".")
    assert "current directory" in assert_error(err, "wav.scp", 1, "spk01-0001")


def test_without_audio_check_durations_come_from_utt2dur_or_are_unknown(data_dir):
    audio_path(data_dir, 2).unlink()  # not looked at
    summary = validate_data_dir(data_dir, check_audio=False)
    assert summary.total_seconds == pytest.approx(GOOD_TOTAL_SECONDS)
    (data_dir / "utt2dur").unlink()
    summary = validate_data_dir(data_dir, check_audio=False)
    assert summary.num_utterances == 6 and summary.total_seconds is None


def test_text_is_optional_for_audio_only_data(data_dir):
    (data_dir / "text").unlink()
    assert validate_data_dir(data_dir, require_text=False).num_utterances == 6


@pytest.mark.parametrize("name", ["wav.scp", "utt2spk", "spk2utt", "text"])
def test_missing_required_file_is_reported(data_dir, name):
    (data_dir / name).unlink()
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    message = assert_error(err, name, None, None)
    if name == "spk2utt":
        assert "utt2spk_to_spk2utt.pl" in message


def test_empty_wav_scp_is_reported(data_dir):
    for name in ("wav.scp", "utt2spk", "spk2utt", "text", "utt2dur"):
        write_lines(data_dir / name, [])
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    assert "no utterances" in assert_error(err, "wav.scp", None, None)


def test_missing_dir_is_reported(tmp_path):
    with pytest.raises(DataDirError, match="does not exist.*Fix:"):
        validate_data_dir(tmp_path / "nowhere")


def _swap_lines(path: Path, first: int) -> None:
    """Swap lines ``first`` and ``first + 1`` (1-based)."""
    lines = read_lines(path)
    lines[first - 1], lines[first] = lines[first], lines[first - 1]
    write_lines(path, lines)


def _duplicate_line(path: Path, line: int) -> None:
    """Write line ``line`` (1-based) twice."""
    lines = read_lines(path)
    write_lines(path, lines[:line] + [lines[line - 1]] + lines[line:])


def _insert_empty_line(path: Path, line: int) -> None:
    """Make line ``line`` (1-based) empty, moving the rest down."""
    lines = read_lines(path)
    write_lines(path, lines[: line - 1] + [""] + lines[line - 1 :])


def _windows_line_endings(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))


# (file, how to break it, line reported, id reported, words in the message)
FORMAT_CASES = [
    ("utt2spk", lambda p: _swap_lines(p, 2), 3, "spk01-0002", "'spk01-0003' (line 2)"),
    ("spk2utt", lambda p: _swap_lines(p, 1), 2, "spk01", "not sorted"),
    ("wav.scp", lambda p: _duplicate_line(p, 2), 3, "spk01-0002", "first on line 2"),
    ("text", lambda p: _insert_empty_line(p, 3), 3, None, "empty line"),
    ("text", _windows_line_endings, 1, "spk01-0001", "\\r"),
    ("utt2dur", lambda p: edit_line(p, 4, "spk02-0001"), 4, "spk02-0001", "no value"),
    ("utt2dur", lambda p: edit_line(p, 2, "spk01-0002 1,5"), 2, "spk01-0002", "number"),
    ("utt2spk", lambda p: edit_line(p, 1, " spk01-0001 spk01"), 1, None, "whitespace"),
]
FORMAT_IDS = [
    "unsorted",
    "unsorted-spk2utt",
    "duplicate",
    "empty-line",
    "crlf",
    "no-value",
    "not-a-number",
    "leading-space",
]


@pytest.mark.parametrize("name, damage, line, utt, words", FORMAT_CASES, ids=FORMAT_IDS)
def test_malformed_line_is_reported_with_its_number(
    data_dir, name, damage, line, utt, words
):
    damage(data_dir / name)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    assert words in assert_error(err, name, line, utt)
    if "sorted" in words or "first on line" in words:
        assert "LC_ALL=C sort -k1,1 -u" in err.value.fix


def test_id_missing_from_text_names_both_files(data_dir):
    edit_line(data_dir / "text", 2, None)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    message = assert_error(err, "wav.scp", 2, "spk01-0002")
    assert "missing from text" in message and str(data_dir / "text") in message


def test_id_only_in_utt2spk_names_both_files(data_dir):
    lines = read_lines(data_dir / "utt2spk")
    write_lines(data_dir / "utt2spk", lines + ["spk02-0009 spk02"])
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    assert "missing from wav.scp" in assert_error(err, "utt2spk", 7, "spk02-0009")


SPK2UTT_CASES = [
    # An utterance listed under the wrong speaker.
    (
        [
            "spk01 spk01-0001 spk01-0002",
            "spk02 spk01-0003 spk02-0001 spk02-0002 spk02-0003",
        ],
        ("spk2utt", 2, "spk02"),
    ),
    # An utterance listed twice.
    (
        [
            "spk01 spk01-0001 spk01-0002 spk01-0003 spk01-0001",
            "spk02 spk02-0001 spk02-0002 spk02-0003",
        ],
        ("spk2utt", 1, "spk01"),
    ),
    # An utterance of utt2spk not listed at all.
    (
        ["spk01 spk01-0001 spk01-0003", "spk02 spk02-0001 spk02-0002 spk02-0003"],
        ("utt2spk", 2, "spk01-0002"),
    ),
]


@pytest.mark.parametrize("spk2utt, expected", SPK2UTT_CASES)
def test_spk2utt_must_be_the_inverse_of_utt2spk(data_dir, spk2utt, expected):
    write_lines(data_dir / "spk2utt", spk2utt)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    assert "utt2spk_to_spk2utt.pl" in assert_error(err, *expected)


def test_utterance_id_without_speaker_prefix_is_reported(tmp_path):
    utts = [replace(GOOD_UTTS[0], utt_id="aaa-0001")] + list(GOOD_UTTS[1:])
    with pytest.raises(DataDirError) as err:
        validate_data_dir(build_data_dir(tmp_path, utts))
    assert "prefix the speaker id" in assert_error(err, "utt2spk", 1, "aaa-0001")


def test_empty_transcript_is_reported(tmp_path):
    utts = list(GOOD_UTTS)
    utts[1] = replace(utts[1], text=" \t ")
    with pytest.raises(DataDirError) as err:
        validate_data_dir(build_data_dir(tmp_path, utts))
    assert "transcript is empty" in assert_error(err, "text", 2, "spk01-0002")


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


AUDIO_FILE_CASES = [
    ("missing", lambda path: path.unlink(), 2, "does not exist"),
    (
        "corrupt",
        lambda path: path.write_bytes(np.random.default_rng(0).bytes(4000)),
        2,
        "cannot read",
    ),
    ("truncated wav", _cut_in_half, 3, "truncated"),
    ("truncated flac", _cut_in_half, 2, "cannot decode"),
    ("empty file", lambda path: path.write_bytes(b""), 1, "cannot read"),
]


@pytest.mark.parametrize(
    "damage, line, words",
    [case[1:] for case in AUDIO_FILE_CASES],
    ids=[case[0] for case in AUDIO_FILE_CASES],
)
def test_damaged_audio_file_is_reported(data_dir, damage, line, words):
    damage(audio_path(data_dir, line))
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    assert words in assert_error(err, "wav.scp", line, GOOD_UTTS[line - 1].utt_id)


AUDIO_FORMAT_CASES = [
    ("wav", {"sample_rate": 22050}, "sample rate is 22050 Hz, expected 16000 Hz"),
    ("flac", {"sample_rate": 8000}, "sample rate is 8000 Hz, expected 16000 Hz"),
    ("wav", {"channels": 2}, "audio has 2 channels, expected 1"),
    ("flac", {"channels": 2}, "audio has 2 channels, expected 1"),
    # libsndfile cannot write an empty FLAC (it leaves a 0-byte file), so WAV only.
    ("wav", {"seconds": 0.0}, "audio file has no samples (zero length)"),
]


@pytest.mark.parametrize("fmt, change, problem", AUDIO_FORMAT_CASES)
def test_audio_in_the_wrong_format_is_reported(tmp_path, fmt, change, problem):
    utts = list(GOOD_UTTS)
    utts[3] = replace(utts[3], fmt=fmt, **change)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(build_data_dir(tmp_path, utts))
    assert problem in assert_error(err, "wav.scp", 4, "spk02-0001")
    if "sample_rate" in change:
        assert f"pass --sample_rate {change['sample_rate']}." in err.value.fix
    if "channels" in change:
        assert "mono" in err.value.fix


def test_nan_samples_in_a_float_wav_are_reported(data_dir):
    """Only float WAVs can hold NaN; a clean float WAV passes."""
    path = audio_path(data_dir, 3)
    audio, rate = soundfile.read(str(path), dtype="float32")
    soundfile.write(str(path), audio, rate, subtype="FLOAT")
    validate_data_dir(data_dir)
    audio[1000] = np.nan
    soundfile.write(str(path), audio, rate, subtype="FLOAT")
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    message = assert_error(err, "wav.scp", 3, GOOD_UTTS[2].utt_id)
    assert "1 samples that are NaN or infinite, the first at sample 1000" in message
    assert "re-create the file from its source" in err.value.fix


def test_other_sample_rate_is_accepted_when_asked_for(tmp_path):
    utts = [replace(utt, sample_rate=8000) for utt in GOOD_UTTS]
    summary = validate_data_dir(build_data_dir(tmp_path, utts), sample_rate=8000)
    assert summary.total_seconds == pytest.approx(GOOD_TOTAL_SECONDS, abs=1e-3)


def test_utt2dur_that_disagrees_with_the_audio_is_reported(data_dir):
    edit_line(data_dir / "utt2dur", 5, "spk02-0002 1.3")
    validate_data_dir(data_dir, duration_tolerance=0.1)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    assert "get_utt2dur.sh" in assert_error(err, "utt2dur", 5, "spk02-0002")


@pytest.mark.parametrize(
    "entry", ["sox /a/x.wav -t wav - |", "ark:/data/wav.ark:123", "/data/wav.ark:456"]
)
def test_pipe_and_archive_entries_are_rejected(data_dir, entry):
    edit_line(data_dir / "wav.scp", 2, f"spk01-0002 {entry}")
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    assert "convert the entries to audio files" in assert_error(
        err, "wav.scp", 2, "spk01-0002"
    )
    validate_data_dir(data_dir, check_audio=False)


def test_error_message_format():
    err = DataDirError(
        "data/train/wav.scp",
        "sample rate is 22050 Hz, expected 16000 Hz",
        "resample the audio.",
        line=12,
        utt="spk01-00003",
    )
    assert str(err) == (
        "data/train/wav.scp:12: utterance 'spk01-00003': sample rate is 22050 Hz, "
        "expected 16000 Hz. Fix: resample the audio."
    )
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.line == 12
    assert isinstance(err, ValueError)
    assert (
        str(DataDirError("d/text", "missing", "make it."))
        == "d/text: missing. Fix: make it."
    )


def test_file_that_is_not_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"a-1 hello\na-2 caf\xe9\n")
    with pytest.raises(DataDirError) as err:
        read_two_column_file(path)
    assert err.value.line == 2 and "UTF-8" in str(err.value)


def test_parser_returns_line_numbers_ids_and_values():
    text = "a-1 /x/a 1.wav\nb-2\t  hello  world \nc-3 v"  # no final newline
    assert parse_two_column_text(text) == [
        KaldiLine(1, "a-1", "/x/a 1.wav"),
        KaldiLine(2, "b-2", "hello  world"),
        KaldiLine(3, "c-3", "v"),
    ]
    assert parse_two_column_text("") == []
    assert parse_two_column_text("a ", allow_empty_value=True) == [
        KaldiLine(1, "a", "")
    ]


# Ids as Kaldi recipes make them, with characters whose byte order is easy to get wrong.
IDS = st.text(alphabet="abAB019-_.é中", min_size=1, max_size=8)


def _byte_sorted(ids):
    return sorted(ids, key=lambda utt: utt.encode("utf-8"))


@settings(max_examples=60, deadline=None)
@given(ids=st.sets(IDS, min_size=1, max_size=12), value=st.text("xy z", min_size=1))
def test_sorted_unique_ids_parse_back_and_agree_with_espnet(
    tmp_path_factory, ids, value
):
    ids = _byte_sorted(ids)
    value = "v" + value.strip()
    text = "".join(f"{utt} {value}\n" for utt in ids)
    lines = parse_two_column_text(text)
    assert [line.id for line in lines] == ids
    assert [line.line_no for line in lines] == list(range(1, len(ids) + 1))
    path = tmp_path_factory.mktemp("scp") / "wav.scp"
    path.write_text(text, encoding="utf-8")
    assert read_2columns_text(path) == {line.id: line.value for line in lines}


@settings(max_examples=60, deadline=None)
@given(ids=st.sets(IDS, min_size=2, max_size=12), data=st.data())
def test_any_adjacent_swap_is_reported_as_unsorted(ids, data):
    ids = _byte_sorted(ids)
    first = data.draw(st.integers(0, len(ids) - 2))
    ids[first], ids[first + 1] = ids[first + 1], ids[first]
    with pytest.raises(DataDirError) as err:
        parse_two_column_text("".join(f"{utt} v\n" for utt in ids), "utt2spk")
    assert err.value.line == first + 2 and err.value.utt == ids[first + 1]
    assert "not sorted" in err.value.problem


@pytest.mark.skipif(shutil.which("sort") is None, reason="needs coreutils sort")
def test_byte_order_matches_c_locale_sort():
    ids = [
        "a-1",
        "A-1",
        "a_1",
        "a.1",
        "a",
        "ab",
        "é-1",
        "e-1",
        "Z-9",
        "中-1",
        "a-10",
        "a-2",
    ]
    lines = "".join(f"{utt} x\n" for utt in ids)
    result = subprocess.run(
        ["sort", "-k1,1"],
        input=lines.encode(),
        capture_output=True,
        env={"LC_ALL": "C"},
        check=True,
    )
    sorted_text = result.stdout.decode("utf-8")
    assert [line.id for line in parse_two_column_text(sorted_text)] == _byte_sorted(ids)


def test_data_dir_lines_sort_by_id_in_byte_order_and_group_speakers(tmp_path):
    from espnet2.fileio.kaldi_data_dir import DataDirEntry, data_dir_lines

    entries = [
        DataDirEntry("spkB-2", "/b2.flac", "HELLO THERE", "spkB", 1.23456),
        DataDirEntry("spkA-1", "/a1.flac", "HI", "spkA", 0.5),
        DataDirEntry("spkB-1", "/b1.flac", "YES", "spkB", 2.0),
    ]
    lines = data_dir_lines(entries, seconds_digits=2)
    assert lines["wav.scp"] == ["spkA-1 /a1.flac", "spkB-1 /b1.flac", "spkB-2 /b2.flac"]
    assert lines["text"][2] == "spkB-2 HELLO THERE"
    assert lines["spk2utt"] == ["spkA spkA-1", "spkB spkB-1 spkB-2"]
    assert lines["utt2dur"] == ["spkA-1 0.50", "spkB-1 2.00", "spkB-2 1.23"]
    for name, file_lines in lines.items():
        (tmp_path / name).write_text("".join(line + "\n" for line in file_lines))
    assert validate_data_dir(tmp_path, check_audio=False).num_utterances == 3
