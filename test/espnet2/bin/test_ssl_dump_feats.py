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

from espnet2.bin.ssl_dump_feats import get_parser, main, shard_device
from espnet2.ssl.targets.dumpers import FeatureDumpError
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
        "--show_progress", "--log_level", "--ngpu", "--bf16", "--bf16_tolerance",
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


def make_longer_wav_scp(root: Path, count: int = 7) -> Path:
    """``count`` noisy tones of 0.5-1.7 s (two share a length), and their wav.scp."""
    rng = np.random.default_rng(1)
    lines = []
    for index in range(count):
        samples = 8000 + 3200 * (index % 5)
        wave = 0.05 * rng.standard_normal(samples)
        path = root / f"u{index}.flac"
        soundfile.write(path, wave, 16000, subtype="PCM_16")
        lines.append(f"u{index} {path}\n")
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


def load_dump(out_dir: Path):
    feats = kaldiio.load_scp(str(out_dir / "feats.scp"))
    return {utt: np.array(feats[utt]) for utt in feats}, (
        out_dir / "utt2num_frames"
    ).read_text()


@pytest.mark.recipe  # three processes end to end (slower)
def test_parallel_shards_write_the_features_of_a_serial_run(tmp_path):
    scp = make_longer_wav_scp(tmp_path)
    args = ["--feature_type", "mfcc", "--wav_scp", str(scp)]
    serial = run_cli(args + ["--out_dir", "serial", "--nj", "1"], tmp_path)
    parallel = run_cli(args + ["--out_dir", "parallel", "--nj", "3"], tmp_path)
    assert serial.returncode == 0 and parallel.returncode == 0, parallel.stderr
    assert "3 shards in 3 parallel processes on the CPU" in parallel.stderr
    serial_feats, serial_frames = load_dump(tmp_path / "serial")
    parallel_feats, parallel_frames = load_dump(tmp_path / "parallel")
    assert list(parallel_feats) == [f"u{i}" for i in range(7)]  # wav.scp order
    assert list(parallel_feats) == list(serial_feats)
    for utt, matrix in serial_feats.items():
        np.testing.assert_array_equal(parallel_feats[utt], matrix)
    assert parallel_frames == serial_frames
    for shard in (1, 2, 3):
        log = (tmp_path / "parallel" / "log" / f"dump.{shard}.log").read_text()
        assert f"shard {shard}/3 written" in log


@pytest.mark.recipe  # three processes end to end (slower)
def test_a_failed_shard_fails_the_command_and_a_rerun_redoes_only_it(tmp_path):
    scp = make_longer_wav_scp(tmp_path, count=4)
    moved = tmp_path / "u3.flac.away"
    (tmp_path / "u3.flac").rename(moved)  # in shard 2 of 2
    args = ["--feature_type", "mfcc", "--wav_scp", str(scp), "--out_dir", "d"]
    failed = run_cli(args + ["--nj", "2"], tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "1 of 2 shards failed" in failed.stderr
    assert "shard 2 (exit status 1, log d/log/dump.2.log)" in failed.stderr
    assert (
        "utterance 'u3'" in failed.stderr and "u3.flac' does not exist" in failed.stderr
    )
    assert (tmp_path / "d" / "feats.1.done").exists()
    assert not (tmp_path / "d" / "feats.scp").exists()
    first = (tmp_path / "d" / "feats.1.ark").stat()

    moved.rename(tmp_path / "u3.flac")
    rerun = run_cli(args + ["--nj", "2"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    again = (tmp_path / "d" / "feats.1.ark").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    log_1 = (tmp_path / "d" / "log" / "dump.1.log").read_text()
    assert "shard 1/2 is done; skipped" in log_1
    assert list(load_dump(tmp_path / "d")[0]) == ["u0", "u1", "u2", "u3"]


@pytest.mark.recipe  # three processes end to end (slower)
def test_parallel_ssl_shards_match_a_serial_run(tmp_path, ssl_model_dir):
    scp = make_longer_wav_scp(tmp_path, count=5)
    args = ["--feature_type", "ssl", "--wav_scp", str(scp), "--layer", "1"]
    args += ["--ssl_model_file", str(ssl_model_dir / "valid.loss.best.pth")]
    args += ["--device", "cpu", "--batch_seconds", "3"]
    main(args + ["--out_dir", str(tmp_path / "serial")])
    parallel = run_cli(args + ["--out_dir", "parallel", "--nj", "2"], tmp_path)
    assert parallel.returncode == 0, parallel.stderr
    serial_feats, serial_frames = load_dump(tmp_path / "serial")
    parallel_feats, parallel_frames = load_dump(tmp_path / "parallel")
    assert (
        list(parallel_feats) == list(serial_feats) and parallel_frames == serial_frames
    )
    for utt, matrix in serial_feats.items():  # other batch neighbours: float noise
        np.testing.assert_allclose(parallel_feats[utt], matrix, rtol=0, atol=1e-5)
    info = yaml.safe_load((tmp_path / "parallel" / "feats.yaml").read_text())
    assert (info["precision"], info["nj"]) == ("float32", 2)


@pytest.mark.parametrize(
    "device, ngpu, shard, expected",
    [
        ("auto", 0, None, "auto"),
        ("cpu", 0, 3, "cpu"),
        ("auto", 2, None, "cuda:0"),
        ("auto", 2, 2, "cuda:1"),
        ("cuda", 2, 3, "cuda:0"),
        ("auto", 1, 5, "cuda:0"),
    ],
)
def test_shard_j_runs_on_gpu_j_minus_1_mod_ngpu(device, ngpu, shard, expected):
    assert shard_device(device, ngpu, shard) == expected


def test_ngpu_with_a_cpu_device_is_an_error():
    with pytest.raises(FeatureDumpError, match="--ngpu 2 puts the shards on GPUs"):
        shard_device("cpu", 2, 1)


def test_bf16_with_mfcc_is_an_error(tmp_path, capsys):
    scp = make_wav_scp(tmp_path)
    args = ["--feature_type", "mfcc", "--wav_scp", str(scp), "--out_dir", "d"]
    with pytest.raises(SystemExit):
        main(args + ["--bf16", "true"])
    assert "MFCCs are computed in float32 on the CPU" in capsys.readouterr().err
