"""egs2/librispeech/ssl2/local/prepare_librispeech.py: folders -> Kaldi data dirs."""

import os
import shutil
from pathlib import Path

import pytest
from recipe_scripts import load_script

from espnet2.fileio.kaldi_data_dir import read_two_column_file, validate_data_dir

SCRIPT = (
    Path(__file__).resolve().parents[3]
    / "egs2/librispeech/ssl2/local/prepare_librispeech.py"
)
CHAPTER = "LibriSpeech/train-clean-100/103/1240"


@pytest.fixture(scope="module")
def tool():
    return load_script(SCRIPT, "prepare_librispeech")


@pytest.fixture
def corpus(tmp_path, make_corpus) -> Path:
    return make_corpus(tmp_path / "corpus")


def prepare(tool, corpus: Path, out: Path, *parts: str) -> None:
    folders = [str(corpus / "LibriSpeech" / part) for part in parts]
    tool.main(["--out_dir", str(out), "--nj", "2", "--set", "train", *folders])


def test_script_is_an_executable_python3_tool():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_main_logs_its_arguments_and_writes_a_valid_sorted_data_dir(
    tool, corpus, tmp_path, caplog, layout
):
    caplog.set_level("INFO")
    prepare(tool, corpus, tmp_path / "data", "train-clean-100", "dev-clean")
    data = tmp_path / "data" / "train"
    summary = validate_data_dir(data)
    assert [x.id for x in read_two_column_file(data / "wav.scp")] == (
        layout.part_ids("train-clean-100", "dev-clean")
    )
    assert summary.num_speakers == 4
    assert "'nj': 2" in caplog.text and "train-clean-100" in caplog.text
    assert not list((tmp_path / "data").glob(".*"))  # no temporary dir left


def test_a_transcript_line_without_its_flac_is_an_error(tool, corpus, tmp_path, capsys):
    (corpus / CHAPTER / "103-1240-0000.flac").unlink()
    with pytest.raises(SystemExit) as error:
        prepare(tool, corpus, tmp_path / "data", "train-clean-100")
    assert error.value.code == 1
    message = capsys.readouterr().err
    assert f"{CHAPTER}/103-1240.trans.txt:1: utterance '103-1240-0000'" in message
    assert "103-1240-0000.flac does not exist" in message
    assert not (tmp_path / "data" / "train").exists()


def test_a_flac_without_a_transcript_line_is_an_error(tool, corpus, tmp_path, capsys):
    trans = corpus / CHAPTER / "103-1240.trans.txt"
    trans.write_text(trans.read_text().splitlines(keepends=True)[0])
    with pytest.raises(SystemExit):
        prepare(tool, corpus, tmp_path / "data", "train-clean-100")
    message = capsys.readouterr().err
    assert f"{CHAPTER}/103-1240-0001.flac: utterance '103-1240-0001'" in message
    assert "has no transcript line" in message


def test_a_flac_outside_a_speaker_chapter_folder_is_an_error(
    tool, corpus, tmp_path, capsys
):
    shutil.copy(
        corpus / CHAPTER / "103-1240-0000.flac",
        corpus / "LibriSpeech/train-clean-100/103/stray.flac",
    )
    with pytest.raises(SystemExit):
        prepare(tool, corpus, tmp_path / "data", "train-clean-100")
    assert "is not at <speaker>/<chapter>/" in capsys.readouterr().err


def test_an_id_of_another_chapter_is_an_error(tool, corpus, tmp_path, capsys):
    trans = corpus / CHAPTER / "103-1240.trans.txt"
    trans.write_text(trans.read_text() + "103-9999-0000 WRONG CHAPTER\n")
    with pytest.raises(SystemExit):
        prepare(tool, corpus, tmp_path / "data", "train-clean-100")
    message = capsys.readouterr().err
    assert "103-1240.trans.txt:3: utterance '103-9999-0000'" in message


def test_a_folder_without_utterances_is_an_error(tool, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        tool.main(["--out_dir", str(tmp_path), "--set", "x", str(tmp_path / "empty")])
    assert "folder holds no utterance" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sets, problem",
    [
        ([["train"]], "needs at least one folder"),
        ([["a/b", "dir"]], "plain dir name"),
        ([["x", "d1"], ["x", "d2"]], "give each set once"),
    ],
)
def test_bad_set_options_are_rejected(tool, sets, problem):
    with pytest.raises(ValueError, match=problem):
        tool.parse_sets(sets)


def test_a_folder_in_two_sets_is_read_once_and_each_set_gets_it(
    tool, corpus, tmp_path, monkeypatch
):
    scanned = []
    scan = tool.scan_folder
    monkeypatch.setattr(tool, "scan_folder", lambda f: scanned.append(f) or scan(f))
    dev = str(corpus / "LibriSpeech/dev-clean")
    tool.main(["--out_dir", str(tmp_path), "--set", "a", dev, "--set", "b", dev])
    assert len(scanned) == 1
    assert (tmp_path / "a/wav.scp").read_text() == (tmp_path / "b/wav.scp").read_text()
