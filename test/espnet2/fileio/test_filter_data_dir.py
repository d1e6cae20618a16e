"""Tests for espnet2/fileio/filter_data_dir.py and espnet2/bin/filter_data_dir.py.

Real audio files (FLAC and WAV) of chosen lengths; every removed utterance must be
listed and every kept file must stay consistent.
"""

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
import soundfile

from espnet2.bin.filter_data_dir import main
from espnet2.fileio.filter_data_dir import FILTERED_LIST, filter_data_dir
from espnet2.fileio.kaldi_data_dir import (
    DataDirError,
    read_two_column_file,
    validate_data_dir,
)

FS = 16000
# utterance -> samples; sorted ids, speaker prefixes
UTTS = {
    "a-short": 800,  # 0.05 s: below 0.1 s
    "a-ok1": 16000,
    "a-ok2": 24000,
    "b-ok3": 1600,  # exactly 0.1 s: kept (inclusive)
    "b-long": 16000 * 3,  # 3 s: above max 2.5 s
}


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_dir(root: Path, utts: Dict[str, int] = UTTS, fs: int = FS) -> Path:
    """A valid data dir with text, utt2dur and phones.ctm (two lines per utterance)."""
    data = root / "data" / "train"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = sorted(utts)
    for i, utt in enumerate(ids):
        ext = "flac" if i % 2 else "wav"
        audio = 0.1 * rng.standard_normal(utts[utt])
        soundfile.write(data / f"{utt}.{ext}", audio, fs, subtype="PCM_16")
    write_lines(
        data / "wav.scp",
        [f"{u} {data / u}.{'flac' if i % 2 else 'wav'}" for i, u in enumerate(ids)],
    )
    write_lines(data / "utt2spk", [f"{u} {u.split('-')[0]}" for u in ids])
    speakers = sorted({u.split("-")[0] for u in ids})
    write_lines(
        data / "spk2utt",
        [f"{s} {' '.join(u for u in ids if u.startswith(s + '-'))}" for s in speakers],
    )
    write_lines(data / "text", [f"{u} WORDS OF {u.upper()}" for u in ids])
    write_lines(data / "utt2dur", [f"{u} {utts[u] / fs:.4f}" for u in ids])
    write_lines(
        data / "phones.ctm",
        [f"{u} 1 {t:.2f} 0.01 p{t}" for u in ids for t in (0.0, 0.01)],
    )
    return data


def test_keeps_the_range_inclusive_and_lists_every_removed_utterance(tmp_path):
    src = make_dir(tmp_path)
    dst = tmp_path / "dump" / "raw" / "train"
    report = filter_data_dir(src, dst, min_seconds=0.1, max_seconds=2.5)
    assert report.kept == ["a-ok1", "a-ok2", "b-ok3"]
    assert report.kept_seconds == pytest.approx(2.6)
    removed = (dst / FILTERED_LIST).read_text().splitlines()
    assert [line.split()[0] for line in removed] == ["a-short", "b-long"]
    assert "shorter than min_seconds=0.1" in removed[0]
    assert "longer than max_seconds=2.5" in removed[1]


def test_the_copy_is_a_valid_consistent_data_dir(tmp_path):
    src = make_dir(tmp_path)
    dst = tmp_path / "out"
    filter_data_dir(src, dst, min_seconds=0.1, max_seconds=2.5)
    summary = validate_data_dir(dst, FS)  # ids, spk2utt, utt2dur vs audio
    assert summary.num_utterances == 3
    samples = {
        x.id: int(x.value) for x in read_two_column_file(dst / "utt2num_samples")
    }
    assert samples == {u: UTTS[u] for u in ("a-ok1", "a-ok2", "b-ok3")}
    assert (dst / "spk2utt").read_text() == "a a-ok1 a-ok2\nb b-ok3\n"
    assert (dst / "text").read_text().splitlines()[0] == "a-ok1 WORDS OF A-OK1"
    ctm = (dst / "phones.ctm").read_text().splitlines()
    ctm_utts = [line.split()[0] for line in ctm]
    assert sorted(set(ctm_utts)) == ["a-ok1", "a-ok2", "b-ok3"]
    assert len(ctm) == 6  # both lines of every kept utterance


def test_no_max_keeps_long_utterances(tmp_path):
    report = filter_data_dir(make_dir(tmp_path), tmp_path / "out", 0.0, None)
    assert len(report.kept) == len(UTTS) and not report.removed


def test_an_existing_output_is_replaced_whole(tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "stale_file").write_text("old")
    filter_data_dir(make_dir(tmp_path), dst, 0.1, 2.5)
    assert not (dst / "stale_file").exists()
    assert not dst.with_name("out.tmp").exists()


def test_a_wrong_sample_rate_names_the_utterance_and_the_fix(tmp_path):
    src = make_dir(tmp_path, {"a-x": 8000}, fs=8000)
    with pytest.raises(DataDirError) as err:
        filter_data_dir(src, tmp_path / "out", 0.1, 2.5, sample_rate=FS)
    message = str(err.value)
    assert "wav.scp:1" in message and "'a-x'" in message
    assert "8000 Hz, not 16000 Hz" in message and "--fs 8000" in message
    assert not (tmp_path / "out").exists()


def test_unreadable_audio_names_the_file_and_the_utterance(tmp_path):
    src = make_dir(tmp_path)
    path = {x.id: x.value for x in read_two_column_file(src / "wav.scp")}["a-ok2"]
    Path(path).write_bytes(b"not audio at all")
    with pytest.raises(DataDirError) as err:
        filter_data_dir(src, tmp_path / "out", 0.1, 2.5)
    assert "'a-ok2'" in str(err.value) and path in str(err.value)


def test_nothing_left_is_an_error_not_an_empty_dir(tmp_path):
    with pytest.raises(DataDirError, match="no utterance lasts between 5.0 and 6.0"):
        filter_data_dir(make_dir(tmp_path), tmp_path / "out", 5.0, 6.0)
    assert not (tmp_path / "out").exists()


def test_a_malformed_data_dir_is_refused_before_reading_audio(tmp_path):
    src = make_dir(tmp_path)
    (src / "utt2spk").write_text("a-ok1 a\n")  # ids differ from wav.scp
    with pytest.raises(DataDirError, match="utt2spk"):
        filter_data_dir(src, tmp_path / "out", 0.1, 2.5)


def test_cli_writes_the_dir_and_reports_bad_input_without_a_traceback(tmp_path, capsys):
    src = make_dir(tmp_path)
    main([str(src), str(tmp_path / "out"), "--min_seconds", "0.1"])
    assert (tmp_path / "out" / "utt2num_samples").is_file()
    with pytest.raises(SystemExit) as code:
        main([str(src), str(tmp_path / "out2"), "--sample_rate", "8000"])
    assert code.value.code == 1
    err = capsys.readouterr().err
    assert "filter_data_dir: error:" in err and "Traceback" not in err


def test_max_hours_keeps_a_seeded_subset_within_the_budget_and_lists_the_rest(tmp_path):
    src = make_dir(tmp_path)
    budget_s = 3.0  # of 1.0 + 1.5 + 0.1 + 3.0 s within the range
    report = filter_data_dir(
        src, tmp_path / "sub", 0.1, None, FS, max_hours=budget_s / 3600, seed=1
    )
    assert 0 < report.kept_seconds <= budget_s
    listed = (tmp_path / "sub" / FILTERED_LIST).read_text()
    beyond = [u for u, _, why in report.removed if why.startswith("beyond max_hours")]
    assert beyond and all(u in listed for u in beyond)
    assert sorted(report.kept + [u for u, _, _ in report.removed]) == sorted(UTTS)
    validate_data_dir(tmp_path / "sub", FS, check_audio=True, require_text=True)
    again = filter_data_dir(
        src, tmp_path / "again", 0.1, None, FS, max_hours=budget_s / 3600, seed=1
    )
    assert again.kept == report.kept
    for hours in (4.0 / 3600, 1.0):  # nested subsets
        larger = filter_data_dir(
            src, tmp_path / f"h{hours}", 0.1, None, FS, max_hours=hours, seed=1
        )
        assert set(report.kept) <= set(larger.kept)
