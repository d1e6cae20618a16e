"""Kill and resume: ``espnet2.bin.ssl_train`` SIGKILLed mid-epoch, then run again.

The real trainer, iterators and sound reader on synthesised speech (tiny wav2vec 2.0,
1 s crops, 2 micro-batches per update). One run trains 2 epochs straight. Another,
with the same command, is killed with SIGKILL as soon as it has written a mid-epoch
checkpoint of epoch 2 (``--save_interval_updates``), and the same command is run
again. The resumed run must continue from that checkpoint (not from the start of
epoch 2) and end bit-identical to the straight run: the same weights, the same
per-epoch training and validation statistics and the same seen-audio count.

Exact equality is the honest expectation on one CPU thread with ``num_workers: 0``:
two straight runs are then bit-identical too. With 2 threads, two straight runs
already differ by about 2e-7 in a few weights (multi-threaded kernels accumulate in
a scheduling-dependent order), so the runs here use one thread.
"""

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from espnet2.ssl.train.checkpoint import MID_EPOCH_CHECKPOINT, MidEpochState

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # every run here
KILL_TIMEOUT_S = 300

pytestmark = pytest.mark.recipe


@pytest.fixture(scope="module")
def corpus(synth_corpus) -> Path:
    return synth_corpus(
        "resume", seed=11, train_minutes=0.8, labeled_minutes=0.1, dev_minutes=0.1,
        test_minutes=0.1, collect_stats_config=CONFIG, env=ONE_THREAD,
    )  # fmt: skip


def training(ssl_train, output_dir: str) -> list:
    """The arguments of both runs: 2 epochs, 2 s of audio per update in 2
    micro-batches of one 1 s crop, a mid-epoch checkpoint every 3 updates,
    --resume true."""
    return [
        *ssl_train.speech_args(CONFIG), "--output_dir", output_dir,
        "--max_epoch", "2", "--resume", "true",
        "--train_shape_file", "stats/train/speech_shape",
        "--valid_shape_file", "stats/valid/speech_shape",
        "--collate_fn_conf", "crop_seconds=1.0",
        "--batch_seconds", "2", "--max_device_batch_seconds", "1",
        "--save_interval_updates", "3",
    ]  # fmt: skip


def kill_in_epoch(
    ssl_train, cwd: Path, args: list, output_dir: Path, epoch: int
) -> int:
    """Start ssl_train with ``args``; SIGKILL it once it has a mid-epoch checkpoint
    of ``epoch``.

    Returns:
        The micro-batches of that epoch the checkpoint had done.
    """
    log = open(output_dir.parent / f"{output_dir.name}.killed.log", "w")
    process = subprocess.Popen(
        ssl_train.command(*args), cwd=cwd, env=ssl_train.environ(ONE_THREAD),
        stderr=log, stdout=log,
    )  # fmt: skip
    checkpoint = output_dir / MID_EPOCH_CHECKPOINT
    deadline = time.time() + KILL_TIMEOUT_S
    try:
        while time.time() < deadline and process.poll() is None:
            if checkpoint.exists():
                state = MidEpochState.load(checkpoint)  # complete: written atomically
                if state.epoch == epoch:
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=60)
                    return state.batches_done
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    pytest.fail(f"no mid-epoch checkpoint of epoch {epoch} (rc {process.returncode})")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(corpus, ssl_train):
    """(straight output dir, resumed output dir, batches done at the kill, its log)."""
    ssl_train(corpus, *training(ssl_train, "straight"), env=ONE_THREAD)
    killed = training(ssl_train, "killed")
    done = kill_in_epoch(ssl_train, corpus, killed, corpus / "killed", epoch=2)
    assert not (corpus / "killed/2epoch.pth").exists()  # killed inside epoch 2
    log = ssl_train(corpus, *killed, env=ONE_THREAD).stderr
    return corpus / "straight", corpus / "killed", done, log


def test_the_rerun_continues_from_the_mid_epoch_checkpoint(runs):
    _, _, done, log = runs
    assert done > 0
    assert "resumed epoch 2 from " in log and f"after {done} of " in log
    assert "1/2epoch started" not in log  # epoch 1 was not trained again


def test_the_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(runs):
    straight, killed, _, _ = runs
    expected, resumed = load(straight / "2epoch.pth"), load(killed / "2epoch.pth")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
    assert int(resumed["seen_audio.seen_samples"]) > 0


def test_the_resumed_run_has_the_loss_curve_of_an_uninterrupted_run(runs):
    straight, killed, _, _ = runs
    expected = load(straight / "checkpoint.pth")["reporter"]["stats"]
    resumed = load(killed / "checkpoint.pth")["reporter"]["stats"]
    for epoch in (1, 2):
        for phase in ("train", "valid"):
            for key, value in expected[epoch][phase].items():
                if key.endswith("time") or key in ("gpu_max_cached_mem_GB",):
                    continue  # wall-clock measurements
                assert resumed[epoch][phase][key] == value, (epoch, phase, key)
    assert expected[2]["train"]["total_count"] == resumed[2]["train"]["total_count"]


def test_a_finished_epoch_leaves_no_mid_epoch_checkpoint_behind(runs):
    straight, killed, _, _ = runs
    for output_dir in (straight, killed):
        assert (output_dir / "2epoch.pth").exists()
        assert not (output_dir / MID_EPOCH_CHECKPOINT).exists()
        assert not list(output_dir.glob(".*.tmp"))
