"""SIGKILL a feature dump or a k-means fit mid-work; the same command resumes.

The target stage of ``ssl.sh`` runs ``python -m espnet2.bin.ssl_dump_feats`` (a
launcher and one process per shard, all at once on the CPU) and
``python -m espnet2.bin.ssl_kmeans fit``/``apply``.
These tests run the real commands as subprocesses, kill them with SIGKILL at a
chosen point (polled, with a bounded wait), check that nothing that looks finished
is half-written, run the same command again and compare with an uninterrupted run.
A run that ends before its kill point fails the test instead of passing it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import kaldiio
import numpy as np
import pytest
import soundfile
import yaml

from espnet2.ssl.targets.kmeans import KMeansModel

pytestmark = pytest.mark.recipe

REPO_ROOT = Path(__file__).resolve().parents[3]
KILL_POINT_TIMEOUT_S = 60  # most seconds to wait for a kill point
RUN_TIMEOUT_S = 300
# 90 utterances of 19-21 s in 3 shards: ~0.4 s of MFCC per shard here, far longer
# than the 2 ms polling step
NUM_UTTS, NUM_SHARDS, NUM_AUDIO_FILES = 90, 3, 6
# k-means: 200 x 400 frames of 39 dims, k 128, 100 Lloyd iterations: ~1.2 s of
# fitting after the "sampled" log line
KMEANS_UTTS, KMEANS_FRAMES, KMEANS_DIM, KMEANS_K = 200, 400, 39, 128


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return env


def run_tool(tool: str, args: List[str], cwd: Path) -> str:
    """Run ``python -m espnet2.bin.<tool> args`` to the end; returns its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", f"espnet2.bin.{tool}", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def kill_when(
    tool: str, args: List[str], cwd: Path, log: Path, kill_point: Callable[[], bool]
) -> None:
    """Start the tool (stderr to ``log``) and SIGKILL it once ``kill_point()``."""
    with open(log, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", f"espnet2.bin.{tool}", *args],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + KILL_POINT_TIMEOUT_S
    try:
        while not kill_point():
            if process.poll() is not None:
                pytest.fail(f"{tool} ended before the kill point:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no kill point within {KILL_POINT_TIMEOUT_S} s")
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=RUN_TIMEOUT_S) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- feature dump
def write_wav_scp(root: Path) -> Path:
    """90 utterances over 6 distinct 16 kHz WAV files (19-21 s), in shard order."""
    rng = np.random.default_rng(0)
    for index in range(NUM_AUDIO_FILES):
        samples = int((19.0 + 0.37 * index) * 16000)
        tone = np.sin(2 * np.pi * (200 + 40 * index) * np.arange(samples) / 16000)
        wave = 0.3 * tone + 0.05 * rng.standard_normal(samples)
        soundfile.write(root / f"audio{index}.wav", wave, 16000, subtype="PCM_16")
    lines = [
        f"utt{i:03d} {root}/audio{i % NUM_AUDIO_FILES}.wav\n" for i in range(NUM_UTTS)
    ]
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


def dump_command(wav_scp: Path, out_dir: str) -> List[str]:
    return ["--feature_type", "mfcc", "--wav_scp", str(wav_scp),
            "--out_dir", out_dir, "--nj", str(NUM_SHARDS)]  # fmt: skip


def shard_files(index: int) -> List[str]:
    return [f"feats.{index}.ark", f"feats.{index}.scp", f"utt2num_frames.{index}",
            f"feats.{index}.done"]  # fmt: skip


def identity(folder: Path, names: List[str]) -> Dict[str, Tuple[int, int]]:
    """(inode, mtime in ns) of each file: both stay when a file is not rewritten."""
    stats = {name: os.stat(folder / name) for name in names}
    return {name: (st.st_ino, st.st_mtime_ns) for name, st in stats.items()}


def load_feats(scp: Path) -> Dict[str, np.ndarray]:
    return {utt: np.asarray(m) for utt, m in kaldiio.load_scp(str(scp)).items()}


def listing(folder: Path) -> Dict[str, int]:
    """Size of every file under ``folder`` by relative path (logs left out)."""
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and "log" not in path.parts
    }


def test_killed_feature_dump_resumes_at_the_shard_it_was_in(tmp_path):
    """Shard 1 finished earlier (``--shard 1``, as ``run.pl JOB=1``); the parallel
    run is killed while shard 2 writes. The shard processes die with the launcher
    (nothing changes afterwards), shard 1 stays as it was, and the same command
    skips it, redoes the others and equals an uninterrupted run."""
    wav_scp = write_wav_scp(tmp_path)
    run_tool("ssl_dump_feats", dump_command(wav_scp, "reference"), tmp_path)
    reference = load_feats(tmp_path / "reference" / "feats.scp")
    dump = tmp_path / "dump"
    partial = dump / "feats.2.ark.partial"
    command = dump_command(wav_scp, "dump")
    run_tool("ssl_dump_feats", [*command, "--shard", "1"], tmp_path)
    before = identity(dump, shard_files(1))

    def inside_shard_2() -> bool:  # shard 2 has written features
        try:
            return partial.stat().st_size > 0
        except FileNotFoundError:  # not begun (or, too late, renamed)
            return False

    kill_when(
        "ssl_dump_feats", command, tmp_path, tmp_path / "killed.log", inside_shard_2
    )
    left = listing(dump)
    time.sleep(1.5)  # orphaned shard processes would keep writing
    assert listing(dump) == left
    assert "feats.2.done" not in left and "feats.scp" not in left
    assert all(name in left for name in shard_files(1))
    assert identity(dump, shard_files(1)) == before

    run_tool("ssl_dump_feats", command, tmp_path)
    shard_1_log = (dump / "log" / "dump.1.log").read_text()
    assert "shard 1/3 is done; skipped" in shard_1_log
    assert "shard 1/3 written" not in shard_1_log
    assert "shard 2/3 written" in (dump / "log" / "dump.2.log").read_text()
    assert identity(dump, shard_files(1)) == before  # shard 1 untouched
    assert not [n for n in os.listdir(dump) if n.endswith(".partial")]
    resumed = load_feats(dump / "feats.scp")
    assert list(resumed) == list(reference)
    assert all(np.array_equal(resumed[utt], reference[utt]) for utt in reference)
    frames, yamls = [
        [(folder / name).read_text() for folder in (dump, tmp_path / "reference")]
        for name in ("utt2num_frames", "feats.yaml")
    ]
    assert frames[0] == frames[1]
    assert yaml.safe_load(yamls[0]) == yaml.safe_load(yamls[1])


# ---------------------------------------------------------------- k-means
def write_features(root: Path) -> None:
    """``feats.scp`` of a 64-cluster 100 Hz mixture and its ``utt2num_samples``."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(64, KMEANS_DIM)) * 3
    with kaldiio.WriteHelper(f"ark,scp:{root}/feats.ark,{root}/feats.scp") as writer:
        for i in range(KMEANS_UTTS):
            truth = rng.integers(0, 64, size=KMEANS_FRAMES)
            noise = rng.normal(size=(KMEANS_FRAMES, KMEANS_DIM))
            writer(f"utt{i:04d}", (means[truth] + noise).astype(np.float32))
    info = dict(feature_type="mfcc", layer=None, dim=KMEANS_DIM, frame_rate=100.0)
    (root / "feats.yaml").write_text(yaml.safe_dump(info))
    samples = (KMEANS_FRAMES - 1) * 160 + 400  # Kaldi framing: 25 ms, 10 ms shift
    lines = [f"utt{i:04d} {samples}\n" for i in range(KMEANS_UTTS)]
    (root / "utt2num_samples").write_text("".join(lines))


def fit_command(out_dir: str) -> List[str]:
    return ["fit", "--feats_scp", "feats.scp", "--out_dir", out_dir,
            "--n_clusters", str(KMEANS_K), "--fraction", "1.0", "--seed", "3",
            "--niter", "100", "--faiss_tol", "0", "--max_points_per_centroid",
            "none"]  # fmt: skip


def apply_command(kmeans_dir: str, labels_dir: str) -> List[str]:
    return ["apply", "--kmeans_dir", kmeans_dir, "--feats_scp", "feats.scp",
            "--utt2num_samples", "utt2num_samples", "--output",
            f"{labels_dir}/text"]  # fmt: skip


def test_killed_kmeans_fit_run_again_gives_the_uninterrupted_centroids_and_labels(
    tmp_path,
):
    write_features(tmp_path)
    run_tool("ssl_kmeans", fit_command("km_reference"), tmp_path)
    run_tool("ssl_kmeans", apply_command("km_reference", "reference"), tmp_path)
    log = tmp_path / "killed.log"

    def fitting() -> bool:  # frames sampled: k-means++ and Lloyd under way
        return "sampled" in log.read_text(encoding="utf-8", errors="replace")

    kill_when("ssl_kmeans", fit_command("km"), tmp_path, log, fitting)
    km = tmp_path / "km"
    assert not (km / "kmeans.yaml").exists() and not (km / "centroids.npy").exists()
    with pytest.raises(FileNotFoundError):
        KMeansModel.load(km)

    run_tool("ssl_kmeans", fit_command("km"), tmp_path)
    run_tool("ssl_kmeans", apply_command("km", "labels"), tmp_path)
    resumed = KMeansModel.load(km)
    reference = KMeansModel.load(tmp_path / "km_reference")
    assert np.array_equal(resumed.centroids, reference.centroids)
    assert resumed.metadata == reference.metadata
    for name in ("text", "tokens.txt"):
        labels = [(tmp_path / d / name).read_text() for d in ("labels", "reference")]
        assert labels[0] == labels[1]
