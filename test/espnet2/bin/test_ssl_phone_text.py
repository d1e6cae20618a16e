"""Tests for espnet2/bin/ssl_phone_text.py: a CTM into the phone probe's text file."""

import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from espnet2.bin.ssl_phone_text import main, write_phone_text
from espnet2.fileio.kaldi_data_dir import read_two_column_file

REPO_ROOT = Path(__file__).resolve().parents[3]
CTM = [
    "spk-b 1 0.000 0.100 _:",
    "spk-b 1 0.300 0.100 t",
    "spk-a 1 0.050 0.100 'eI",
    "spk-b 1 0.100 0.200 s",
    "spk-a 1 0.150 0.100 k",
]


def write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_the_text_holds_each_utterances_phones_in_time_order_sorted(tmp_path):
    ctm = write(tmp_path / "phones.ctm", CTM)
    wav_scp = write(tmp_path / "wav.scp", ["spk-a a.flac", "spk-b b.flac"])
    output = tmp_path / "text_phn"
    main(["--ctm", str(ctm), "--utt_list", str(wav_scp), "--output", str(output)])
    assert output.read_text() == "spk-a eI k\nspk-b s t\n"
    assert [line.id for line in read_two_column_file(output)] == ["spk-a", "spk-b"]


def test_stress_and_pauses_are_kept_when_asked(tmp_path):
    ctm = write(tmp_path / "phones.ctm", CTM)
    output = tmp_path / "text_phn"
    count = write_phone_text(
        str(ctm), str(output), merge_stress=False, drop_pauses=False
    )
    assert count == 2
    assert output.read_text() == "spk-a 'eI k\nspk-b _: s t\n"


@pytest.mark.parametrize(
    "ctm_lines, message",
    [
        (CTM[:2], "phones.ctm: utterance 'spk-a': no segment in this CTM"),
        ([], "phones.ctm: the CTM holds no segment"),
    ],
    ids=["missing-utterance", "empty-ctm"],
)
def test_an_utterance_without_phones_exits_1_naming_it_the_file_and_the_fix(
    tmp_path, ctm_lines, message
):
    ctm = write(tmp_path / "phones.ctm", ctm_lines)
    wav_scp = write(tmp_path / "wav.scp", ["spk-a a.flac", "spk-b b.flac"])
    output = tmp_path / "text_phn"
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.ssl_phone_text", "--ctm", str(ctm)]
        + ["--utt_list", str(wav_scp), "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"ssl_phone_text: error: {tmp_path}/{message}" in result.stderr
    assert "--phone_probe false" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_a_missing_ctm_exits_1_with_the_fix(tmp_path, capsys):
    output = tmp_path / "text_phn"
    with pytest.raises(SystemExit) as info:
        main(["--ctm", str(tmp_path / "none.ctm"), "--output", str(output)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/none.ctm: no such file. Fix: provide" in err
    assert not output.exists()
