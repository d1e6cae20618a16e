"""Tests for espnet2/bin/ssl_dump_feats.py, in process and as ``python -m``."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet2.bin.ssl_dump_feats import get_parser, main
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

REPO_ROOT = Path(__file__).resolve().parents[3]
SECONDS = (0.6, 1.1, 0.8)


def make_wav_scp(root: Path) -> Path:
    """Three noisy-tone FLAC files (16 kHz) and their wav.scp, sorted."""
    rng = np.random.default_rng(0)
    lines = []
    for index, seconds in enumerate(SECONDS):
        samples = int(seconds * 16000)
        tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(samples) / 16000)
        wave = tone + 0.05 * rng.standard_normal(samples)
        path = root / f"utt{index}.flac"
        soundfile.write(path, wave, 16000, subtype="PCM_16")
        lines.append(f"utt{index} {path}\n")
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


def run_cli(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "espnet2.bin.ssl_dump_feats", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_documents_every_option():
    text = get_parser().format_help()
    for option in (
        "--feature_type", "--wav_scp", "--out_dir", "--nj", "--shard", "--layer",
        "--ssl_config", "--ssl_model_file", "--ssl_packed_model", "--asr_config",
        "--asr_model_file", "--asr_packed_model", "--device", "--batch_seconds",
        "--show_progress", "--log_level",
    ):  # fmt: skip
        assert option in text, option


def test_cli_dumps_mfcc_in_shards_and_merges(tmp_path):
    make_wav_scp(tmp_path)
    args = ["--feature_type", "mfcc", "--wav_scp", "wav.scp", "--out_dir", "dump"]
    result = run_cli(args + ["--nj", "2"], tmp_path)
    assert result.returncode == 0, result.stderr
    feats = kaldiio.load_scp(str(tmp_path / "dump" / "feats.scp"))
    assert list(feats) == ["utt0", "utt1", "utt2"]
    assert [m.shape for m in feats.values()] == [(58, 39), (108, 39), (78, 39)]
    assert (tmp_path / "dump" / "feats.2.ark").exists()


def test_cli_bad_audio_is_one_message_and_exit_1(tmp_path):
    scp = make_wav_scp(tmp_path)
    (tmp_path / "utt1.flac").unlink()
    result = run_cli(
        ["--feature_type", "mfcc", "--wav_scp", str(scp), "--out_dir", "dump"],
        tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "ssl_dump_feats: error:" in result.stderr
    assert "utterance 'utt1'" in result.stderr and "utt1.flac" in result.stderr


@pytest.fixture
def ssl_model_dir(tmp_path, build_ssl_model, ssl_configs) -> Path:
    """A tiny wav2vec 2.0 saved as ESPnet's trainer saves it (config + state)."""
    model, args = build_ssl_model(ssl_configs["wav2vec2"])
    exp = tmp_path / "exp"
    exp.mkdir()
    with open(exp / "config.yaml", "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), exp / "valid.loss.best.pth")
    return exp


def test_cli_dumps_a_layer_of_an_ssl_model(tmp_path, ssl_model_dir):
    scp = make_wav_scp(tmp_path)
    main(
        ["--feature_type", "ssl", "--wav_scp", str(scp),
         "--out_dir", str(tmp_path / "dump"), "--layer", "2",
         "--ssl_model_file", str(ssl_model_dir / "valid.loss.best.pth"),
         "--device", "cpu", "--batch_seconds", "1.5"]
    )  # fmt: skip
    info = yaml.safe_load((tmp_path / "dump" / "feats.yaml").read_text())
    assert (info["feature_type"], info["layer"], info["dim"]) == ("ssl", 2, 32)
    assert info["frame_rate"] == 50.0
    assert info["config_file"] == str(ssl_model_dir / "config.yaml")
    frames = (tmp_path / "dump" / "utt2num_frames").read_text().split()
    assert frames[1::2] == [str((int(s * 16000) - 400) // 320 + 1) for s in SECONDS]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--layer", "5"], "layer 5 is out of range: the encoder of .* has 2 layers"),
        (["--asr_config", "x.yaml"], "--feature_type ssl takes no --asr_config"),
        (["--ssl_packed_model", "m.zip"], "not both"),
    ],
)
def test_cli_bad_model_options_exit_1_with_a_message(
    tmp_path, ssl_model_dir, capsys, extra, message
):
    scp = make_wav_scp(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["--feature_type", "ssl", "--wav_scp", str(scp), "--out_dir", "dump",
             "--ssl_model_file", str(ssl_model_dir / "valid.loss.best.pth"),
             "--device", "cpu", *extra]
        )  # fmt: skip
    assert exit_info.value.code == 1
    assert re.search(message, capsys.readouterr().err)


def test_cli_layer_with_mfcc_is_an_error(tmp_path, capsys):
    scp = make_wav_scp(tmp_path)
    args = ["--feature_type", "mfcc", "--wav_scp", str(scp), "--out_dir", "d"]
    with pytest.raises(SystemExit):
        main(args + ["--layer", "3"])
    assert "--feature_type mfcc takes no --layer" in capsys.readouterr().err
