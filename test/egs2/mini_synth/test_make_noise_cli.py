"""Tests of egs2/mini_synth/ssl2/local/make_noise.py (the noise data dir CLI) and of
its call in local/data.sh."""

import os
from pathlib import Path

import pytest
from recipe_scripts import load_script

from espnet2.ssl.synth.espeak import EspeakError

REPO_ROOT = Path(__file__).resolve().parents[3]
LOCAL = REPO_ROOT / "egs2" / "mini_synth" / "ssl2" / "local"
SCRIPT = LOCAL / "make_noise.py"


@pytest.fixture(scope="module")
def cli():
    return load_script(SCRIPT, "make_noise_cli")


def test_script_is_an_executable_python3_tool():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_main_writes_the_noise_data_dir_and_logs_its_arguments(cli, tmp_path, caplog):
    caplog.set_level("INFO")
    out, audio = tmp_path / "data" / "noise", tmp_path / "a" / "noise"
    cli.main(["--out_dir", str(out), "--audio_dir", str(audio), "--seed", "4"])
    for name in ("wav.scp", "utt2spk", "spk2utt", "utt2dur"):
        assert (out / name).stat().st_size > 0
    assert (audio / "noise.json").is_file() and (audio / "babble-00.flac").is_file()
    assert "'seed': 4" in caplog.text


def test_parser_requires_both_dirs_and_defaults_the_seed(cli):
    args = cli.get_parser().parse_args(["--out_dir", "d", "--audio_dir", "a"])
    assert vars(args) == {"out_dir": "d", "audio_dir": "a", "seed": 0}
    with pytest.raises(SystemExit):
        cli.get_parser().parse_args(["--out_dir", "d"])


def test_synthesis_error_exits_with_status_1_naming_the_problem(
    cli, tmp_path, capsys, monkeypatch
):
    def fail(*args, **kwargs):
        raise EspeakError("espeak_Synth failed with status 2")

    monkeypatch.setattr(cli, "build_noise_dir", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out_dir", str(tmp_path / "d"), "--audio_dir", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "status 2" in err and "espeakng-loader" in err and "Traceback" not in err


def test_data_sh_makes_and_validates_data_noise_from_the_corpus_seed():
    script = (LOCAL / "data.sh").read_text()
    assert "python local/make_noise.py" in script
    assert '--audio_dir "${audio_dir}/noise"' in script and '--seed "${seed}"' in script
    assert "validate_data_dir --require_text false data/noise" in script
