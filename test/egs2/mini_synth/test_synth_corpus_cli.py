"""Tests of egs2/mini_synth/ssl2/local/synth_corpus.py (the corpus CLI)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_scripts import load_script

from espnet2.ssl.synth.espeak import EspeakError

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "egs2" / "mini_synth" / "ssl2" / "local" / "synth_corpus.py"
TINY = [
    "--train_minutes", "0.3", "--labeled_minutes", "0.2",
    "--dev_minutes", "0.1", "--test_minutes", "0.1",
]  # fmt: skip


@pytest.fixture(scope="module")
def cli():
    return load_script(SCRIPT, "synth_corpus_cli")


def test_script_is_an_executable_python3_tool():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_main_writes_the_four_data_dirs_and_logs_its_arguments(cli, tmp_path, caplog):
    caplog.set_level("INFO")
    cli.main(
        ["--out_dir", str(tmp_path / "data"), "--audio_dir", str(tmp_path / "a")]
        + TINY
        + ["--seed", "3"]
    )
    for set_name in ("train", "train_labeled", "dev", "test"):
        assert (tmp_path / "data" / set_name / "wav.scp").stat().st_size > 0
    assert (tmp_path / "a" / "corpus.json").is_file()
    assert "'seed': 3" in caplog.text and "'train_minutes': 0.3" in caplog.text


def test_parser_defaults_match_the_recipe_sizes(cli):
    args = cli.get_parser().parse_args(["--out_dir", "d", "--audio_dir", "a"])
    assert vars(args) == {
        "out_dir": "d",
        "audio_dir": "a",
        "seed": 0,
        "train_minutes": 20.0,
        "labeled_minutes": 5.0,
        "dev_minutes": 2.0,
        "test_minutes": 2.0,
    }


@pytest.mark.parametrize("missing", ["--out_dir", "--audio_dir"])
def test_out_dir_and_audio_dir_are_required(cli, missing):
    argv = {"--out_dir": "d", "--audio_dir": "a"}
    argv.pop(missing)
    with pytest.raises(SystemExit):
        cli.get_parser().parse_args([x for kv in argv.items() for x in kv])


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--labeled_minutes", "30"], "must not exceed train_minutes"),
        (["--train_minutes", "0"], "train_minutes must be positive"),
        (["--test_minutes", "-2"], "test_minutes must be positive"),
    ],
)
def test_bad_sizes_exit_with_status_1_and_a_one_paragraph_error(
    cli, tmp_path, capsys, bad, message
):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out_dir", str(tmp_path / "d"), "--audio_dir", str(tmp_path)] + bad)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_synthesis_error_exits_with_status_1_naming_the_problem(
    cli, tmp_path, capsys, monkeypatch
):
    def fail(*args, **kwargs):
        raise EspeakError("espeak_SetVoiceByName('en-gb+m1') failed with status 2")

    monkeypatch.setattr(cli, "build_corpus", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out_dir", str(tmp_path / "d"), "--audio_dir", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "en-gb+m1" in err and "Traceback" not in err


def test_running_the_script_prints_no_traceback_on_bad_arguments(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out_dir", str(tmp_path / "d")]
        + ["--audio_dir", str(tmp_path / "a"), "--dev_minutes", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "dev_minutes must be positive" in result.stderr
    assert "Traceback" not in result.stderr
