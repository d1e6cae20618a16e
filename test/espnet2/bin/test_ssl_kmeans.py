"""Tests for espnet2/bin/ssl_kmeans.py: fit, apply and check, in process and as
``python -m``, on real audio headers and kaldiio feature files."""

import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import yaml

from espnet2.bin.ssl_kmeans import main
from espnet2.ssl.frame_geometry import (
    cnn_frame_count,
    kaldi_frame_count,
    read_cnn_shapes,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY_CONFIG = (
    REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml"
)
# audio lengths in samples around the framing boundaries (400 / 160 / 320)
LENGTHS = {
    "s0399": 399,
    "s0400": 400,
    "s0719": 719,
    "s0720": 720,
    "s16000": 16000,
    "s16319": 16319,
    "s16320": 16320,
    "s24000": 24000,
}
DIM = 39


def write_corpus(root: Path, dim: int = DIM, frame_rate: int = 100) -> Path:
    """Audio (wav.scp) and 100 Hz features of a 4-cluster mixture; returns root."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, dim)) * 10
    (root / "wav").mkdir(parents=True)
    (root / "feats").mkdir()
    wav_lines = []
    feats = f"{root}/feats/feats"
    with kaldiio.WriteHelper(f"ark,scp:{feats}.ark,{feats}.scp") as writer:
        for utt, samples in LENGTHS.items():
            soundfile.write(root / "wav" / f"{utt}.wav", np.zeros(samples), 16000)
            wav_lines.append(f"{utt} {root / 'wav' / utt}.wav\n")
            frames = kaldi_frame_count(samples)
            if frame_rate == 50:
                frames = cnn_frame_count(samples, read_cnn_shapes(None))
            truth = rng.integers(0, 4, size=frames)
            writer(utt, (means[truth] + rng.normal(size=(frames, dim))).astype("f4"))
    (root / "wav.scp").write_text("".join(wav_lines))
    info = {
        "feature_type": "mfcc",
        "layer": None,
        "dim": dim,
        "frame_rate": float(frame_rate),
        "sample_rate": 16000,
    }
    (root / "feats" / "feats.yaml").write_text(yaml.safe_dump(info))
    return root


def cli(command: str) -> None:
    """``main`` on a command line without quoting (paths here have no spaces)."""
    main(command.split())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("corpus"))
    cli(
        f"fit --feats_scp {root}/feats/feats.scp --out_dir {root}/km "
        "--n_clusters 4 --fraction 1.0 --nredo 2"
    )
    return root


def read_labels(path: Path):
    with open(path) as f:
        return {line.split()[0]: line.split()[1:] for line in f}


def test_fit_writes_the_model_and_its_metadata(corpus):
    files = sorted(p.name for p in (corpus / "km").iterdir())
    assert files == ["centroids.npy", "kmeans.yaml"]
    meta = yaml.safe_load((corpus / "km" / "kmeans.yaml").read_text())
    frames = sum(kaldi_frame_count(n) for n in LENGTHS.values())
    assert meta["feature_type"] == "mfcc" and meta["feature_frame_rate"] == 100.0
    assert meta["backend"] == "faiss" and meta["n_clusters"] == 4
    assert meta["dim"] == DIM and meta["niter"] == 50 and meta["nredo"] == 2
    assert meta["sample_utterances"] == len(LENGTHS)
    assert meta["sample_frames"] == frames
    assert 0 < meta["inertia_per_frame"] < 1.3 * DIM  # noise variance 1
    assert meta["feats_scp"].endswith("feats/feats.scp")


def test_apply_then_check_gives_one_label_per_cnn_frame(corpus, capsys):
    out = corpus / "labels" / "text.km4"
    out.parent.mkdir()
    cli(
        f"apply --kmeans_dir {corpus}/km --feats_scp {corpus}/feats/feats.scp "
        f"--wav_scp {corpus}/wav.scp --ssl_config {TINY_CONFIG} --output {out} "
        "--batch_frames 64"
    )
    labels = read_labels(out)
    assert list(labels) == list(LENGTHS)
    counts = {utt: len(labels[utt]) for utt in LENGTHS}
    assert counts == {
        "s0399": 0,
        "s0400": 1,
        "s0719": 1,
        "s0720": 2,
        "s16000": 49,
        "s16319": 50,
        "s16320": 50,
        "s24000": 74,
    }
    assert set(sum(labels.values(), [])) == {"0", "1", "2", "3"}
    tokens = (out.parent / "tokens.txt").read_text().splitlines()
    assert tokens == ["0", "1", "2", "3", "<unk>"]
    cli(
        f"check --labels {out} --wav_scp {corpus}/wav.scp "
        f"--ssl_config {TINY_CONFIG} --n_clusters 4"
    )
    assert capsys.readouterr().out == f"{len(LENGTHS)} utterances checked\n"


def test_sklearn_backend_and_utt2num_samples_input(corpus, tmp_path):
    cli(
        f"fit --feats_scp {corpus}/feats/feats.scp --out_dir {tmp_path}/km "
        "--n_clusters 4 --backend sklearn --n_init 2 --batch_size 256 "
        "--fraction 1.0 --max_frames 300"
    )
    meta = yaml.safe_load((tmp_path / "km" / "kmeans.yaml").read_text())
    assert meta["backend"] == "sklearn" and meta["sample_frames"] == 300
    assert meta["backend_options"]["n_init"] == 2
    assert meta["backend_options"]["reassignment_ratio"] == 0.0  # ESPnet's
    lines = [f"{utt} {n}\n" for utt, n in LENGTHS.items()]
    (tmp_path / "utt2num_samples").write_text("".join(lines))
    cli(
        f"apply --kmeans_dir {tmp_path}/km --feats_scp {corpus}/feats/feats.scp "
        f"--utt2num_samples {tmp_path}/utt2num_samples --output {tmp_path}/text "
        f"--token_list {tmp_path}/tok.txt"
    )
    assert len(read_labels(tmp_path / "text")["s24000"]) == 74
    assert (tmp_path / "tok.txt").read_text().endswith("3\n<unk>\n")


def test_50hz_features_are_labelled_without_downsampling(tmp_path):
    root = write_corpus(tmp_path / "c50", dim=16, frame_rate=50)
    cli(
        f"fit --feats_scp {root}/feats/feats.scp --out_dir {root}/km "
        "--n_clusters 3 --fraction 1.0"
    )
    cli(
        f"apply --kmeans_dir {root}/km --feats_scp {root}/feats/feats.scp "
        f"--wav_scp {root}/wav.scp --output {root}/text"
    )
    cli(f"check --labels {root}/text --wav_scp {root}/wav.scp")
    assert len(read_labels(root / "text")["s16320"]) == 50


def run_failing(command: str, capsys):
    """``cli(command)`` must exit with status 1; returns (stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli(command)
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return out, err


def test_audio_without_features_is_named(corpus, tmp_path, capsys):
    extra = corpus / "wav" / "s16000.wav"
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text((corpus / "wav.scp").read_text() + f"zz_new {extra}\n")
    _, err = run_failing(
        f"apply --kmeans_dir {corpus}/km --feats_scp {corpus}/feats/feats.scp "
        f"--wav_scp {wav_scp} --output {tmp_path}/text",
        capsys,
    )
    assert "ssl_kmeans: error: ValueError: 1 utterances" in err
    assert "no features in" in err and "zz_new" in err
    assert not (tmp_path / "text").exists()


def test_too_many_clusters_says_how_many_frames_were_sampled(corpus, tmp_path, capsys):
    _, err = run_failing(
        f"fit --feats_scp {corpus}/feats/feats.scp --out_dir {tmp_path}/km "
        "--n_clusters 500 --max_frames 100",
        capsys,
    )
    assert "needs at least 500 frames, but only 100 were sampled" in err
    assert "--fraction or --max_frames, or lower --n_clusters" in err
    assert not (tmp_path / "km" / "kmeans.yaml").exists()


def test_features_of_another_dimension_name_the_utterance(corpus, tmp_path, capsys):
    other = write_corpus(tmp_path / "c20", dim=20)
    _, err = run_failing(
        f"apply --kmeans_dir {corpus}/km --feats_scp {other}/feats/feats.scp "
        f"--wav_scp {other}/wav.scp --output {tmp_path}/text",
        capsys,
    )
    assert "utterance 's0399'" in err and "dimension 39" in err


def test_missing_model_file_is_named(tmp_path, corpus, capsys):
    _, err = run_failing(
        f"apply --kmeans_dir {tmp_path}/none --feats_scp {corpus}/feats/feats.scp "
        f"--wav_scp {corpus}/wav.scp --output {tmp_path}/t",
        capsys,
    )
    assert f"{tmp_path}/none has no centroids.npy" in err


def test_check_lists_disagreements_and_exits_1_as_a_module(corpus, tmp_path):
    lines = [f"s16000 {' '.join(['1'] * 50)}", "s0720 2 2", "stray 1"]
    (tmp_path / "text").write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    command = f"check --labels {tmp_path}/text --wav_scp {corpus}/wav.scp"
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.ssl_kmeans", *command.split()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "length s16000: 50 labels, 49 CNN frames (+1)" in result.stdout
    assert "length s0720:" not in result.stdout
    assert "extra stray: in the labels, not in the audio list" in result.stdout
    assert "missing s24000: in the audio list, not in the labels" in result.stdout
    assert "problems (listed above)" in result.stderr
    assert "Traceback" not in result.stderr


def test_real_mfcc_dump_gives_labels_that_fit_the_cnn(tmp_path):
    """ssl_dump_feats (100 Hz Kaldi MFCC) -> fit -> apply -> check, no frame options."""
    from espnet2.bin.ssl_dump_feats import main as dump_main

    rng = np.random.default_rng(1)
    lines = []
    for utt, samples in LENGTHS.items():
        if samples >= 400:  # the dumper refuses audio shorter than one window
            soundfile.write(
                tmp_path / f"{utt}.wav",
                0.1 * rng.normal(size=samples),
                16000,
                subtype="PCM_16",
            )
            lines.append(f"{utt} {tmp_path / utt}.wav\n")
    (tmp_path / "wav.scp").write_text("".join(sorted(lines)))
    dump_main(
        f"--feature_type mfcc --wav_scp {tmp_path}/wav.scp "
        f"--out_dir {tmp_path}/mfcc --nj 1".split()
    )
    cli(
        f"fit --feats_scp {tmp_path}/mfcc/feats.scp --out_dir {tmp_path}/km "
        "--n_clusters 8 --fraction 1.0"
    )
    cli(
        f"apply --kmeans_dir {tmp_path}/km --feats_scp {tmp_path}/mfcc/feats.scp "
        f"--wav_scp {tmp_path}/wav.scp --output {tmp_path}/text"
    )
    cli(f"check --labels {tmp_path}/text --wav_scp {tmp_path}/wav.scp")
    assert len(read_labels(tmp_path / "text")["s16319"]) == 50
