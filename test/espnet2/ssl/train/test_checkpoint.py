"""Tests for espnet2/ssl/train/checkpoint.py: atomic saves (under a real SIGKILL), the
generator and statistics states, skipping batches and the mid-epoch saver (end to
end through ssl_train: test/integration/test_ssl_train_resume.py)."""

import io
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from espnet2.ssl.train.checkpoint import (
    CheckpointError,
    MidEpochSaver,
    MidEpochState,
    TrainingParts,
    atomic_torch_save,
    atomic_torch_saves,
    load_reporter_state,
    remove_temporaries,
    reporter_state,
    restore_epoch_snapshot,
    rng_state,
    set_rng_state,
    skip_batches,
)
from espnet2.train.reporter import Reporter

SAVER = textwrap.dedent("""
    import sys, torch
    from espnet2.ssl.train.checkpoint import atomic_torch_saves
    path, i = sys.argv[1], 0
    with atomic_torch_saves():
        while True:  # 8 MB files, each filled with its number, until killed
            i += 1
            torch.save({"i": i, "x": torch.full((2_000_000,), float(i))}, path)
            print(i, flush=True)
    """)


def test_a_kill_while_saving_never_leaves_a_file_that_cannot_be_loaded(tmp_path):
    """SIGKILL at seeded random moments of a save loop: the file on disk always
    loads and is one complete save (every element equal to its number)."""
    path, rng = tmp_path / "checkpoint.pth", random.Random(0)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)], env=env,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        process.stdout.readline()  # one complete save at least
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        state = torch.load(path, weights_only=True)
        assert torch.all(state["x"] == state["i"])
    removed = remove_temporaries(tmp_path)
    assert all(p.name.startswith(".checkpoint.pth.") for p in removed)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_a_failing_save_keeps_the_previous_file_and_no_temporary(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("interrupted")

    path = tmp_path / "model.pth"
    atomic_torch_save({"w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_torch_save({"w": torch.zeros(3), "x": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_atomic_saves_cover_paths_only_and_restore_torch_save(tmp_path):
    original = torch.save
    with atomic_torch_saves():
        assert torch.save is not original
        torch.save(torch.ones(2), tmp_path / "a.pth")
        torch.save(torch.ones(2), str(tmp_path / "b.pth"))
        with open(tmp_path / "c.pth", "wb") as f:
            torch.save(torch.ones(2), f)  # a file object: passed through
    assert torch.save is original
    for name in ("a.pth", "b.pth", "c.pth"):
        assert torch.equal(torch.load(tmp_path / name), torch.ones(2))


def draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def test_generator_states_restore_every_generator_and_load_as_weights(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.randn()  # a cached Gaussian is part of numpy's state
    atomic_torch_save(rng_state(), tmp_path / "rng.pth")
    expected = draws()
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    assert draws() == expected


def register_steps(sub, steps):
    for i in steps:
        sub.register({"loss": torch.tensor(float(i)), "acc": np.float64(i / 10)}, i)
        if i % 2:
            sub.register({"grad_norm": float(i)})
        sub.next()


def test_partial_epoch_statistics_continue_to_the_same_epoch_averages():
    straight = Reporter()
    with straight.observe("train", 1) as sub:
        register_steps(sub, range(1, 7))
    resumed = Reporter()
    with resumed.observe("train", 1) as first:
        register_steps(first, range(1, 4))
    buffer = io.BytesIO()
    torch.save(reporter_state(first), buffer)
    buffer.seek(0)
    resumed = Reporter()
    with resumed.observe("train", 1) as second:
        load_reporter_state(second, torch.load(buffer, weights_only=True))
        register_steps(second, range(4, 7))
    for key in ("loss", "acc", "grad_norm", "total_count"):
        assert resumed.get_value("train", key, 1) == straight.get_value(
            "train", key, 1
        ), key


def test_skip_batches_reads_only_the_rest_of_the_epoch():
    read = []

    class Data(torch.utils.data.Dataset):
        def __getitem__(self, i):
            read.append(i)
            return i

    loader = DataLoader(Data(), batch_sampler=[[0, 1], [2, 3], [4, 5], [6]])
    rest = skip_batches(loader, 2)
    assert [b.tolist() for b in rest] == [[4, 5], [6]]
    assert read == [4, 5, 6]
    assert skip_batches(iter([[0]]), 1) is None  # not a loader over a batch list


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.register_buffer("num_updates", torch.tensor([0]))


def parts():
    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    sub = Reporter().start_epoch("train", 1)
    return TrainingParts(model, [optimizer], [None], None, sub)


def test_the_saver_writes_every_interval_updates_at_update_boundaries(tmp_path):
    p, saved = parts(), []

    def snapshot(batches_done, rngs):
        saved.append((batches_done, p.num_updates()))
        return MidEpochState.capture(p, 1, batches_done, 0, rngs, 12)

    path = tmp_path / "mid.pth"
    saver = MidEpochSaver(range(12), snapshot, p.num_updates, 2, 2, path)
    for i, _ in enumerate(saver, 1):
        if i % 2 == 0:  # accum_grad 2: an update every second micro-batch
            p.module.num_updates.add_(1)
    assert saved == [(4, 2), (8, 4)]  # not at 12: the epoch's end has its own
    state = MidEpochState.load(path)
    assert (state.epoch, state.batches_done, state.epoch_batches) == (1, 8, 12)
    assert state.mismatch(12, 1) is None and "world size 1" in state.mismatch(12, 2)
    assert "batches" in state.mismatch(10, 1)


def test_a_state_restores_model_optimizer_and_statistics(tmp_path):
    p = parts()
    p.module.w.grad = torch.ones(2)
    p.optimizers[0].step()
    p.module.num_updates.add_(1)
    p.reporter.register({"loss": 1.5})
    p.reporter.next()
    MidEpochState.capture(p, 1, 2, 0, [rng_state()], 4).save(tmp_path / "m.pth")
    q = parts()
    MidEpochState.load(tmp_path / "m.pth").apply(q)
    assert torch.equal(q.module.w, p.module.w) and q.num_updates() == 1
    exp_avg = q.optimizers[0].state_dict()["state"][0]["exp_avg"]
    assert torch.equal(exp_avg, p.optimizers[0].state_dict()["state"][0]["exp_avg"])
    assert q.reporter.count == 1 and q.reporter.stats["loss"][0].value == 1.5


def test_a_file_that_is_not_a_mid_epoch_checkpoint_is_refused(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="delete .*noise.pth"):
        MidEpochState.load(noise)
    other = tmp_path / "other.pth"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="not a mid-epoch checkpoint"):
        MidEpochState.load(other)


def test_the_epoch_model_missing_after_a_kill_is_written_from_the_checkpoint(
    tmp_path,
):
    model = {"w": torch.arange(3.0)}
    torch.save({"model": model, "reporter": {"epoch": 3, "stats": {}}},
               tmp_path / "checkpoint.pth")  # fmt: skip
    (tmp_path / "latest.pth").symlink_to("2epoch.pth")  # dangling: 2 was removed
    assert restore_epoch_snapshot(tmp_path) == tmp_path / "3epoch.pth"
    assert torch.equal(torch.load(tmp_path / "latest.pth")["w"], model["w"])
    assert restore_epoch_snapshot(tmp_path) is None  # nothing missing now


@pytest.mark.parametrize(
    "saved_epoch, epoch, resume, used",
    [(2, 2, True, True), (1, 2, True, False), (2, 2, False, False)],
)
def test_only_a_state_of_the_epoch_being_resumed_is_used_and_stale_ones_removed(
    tmp_path, saved_epoch, epoch, resume, used
):
    from espnet2.ssl.train.trainer import SSLTrainer

    path = tmp_path / "checkpoint_mid_epoch.pth"
    MidEpochState.capture(parts(), saved_epoch, 2, 0, [], 4).save(path)
    state = SSLTrainer._pending_state(path, epoch, resume)
    assert (state is not None) == used
    assert path.exists() == used


RANK_SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from espnet2.ssl.train.checkpoint import gather_rng_states, set_rng_state
rank, world, init_file, out = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                        world_size=world)
torch.manual_seed(100 + rank)  # every rank has its own stream
states = gather_rng_states()
own = torch.rand(2).tolist()
set_rng_state(states[1 - rank])  # the other rank's
other = torch.rand(2).tolist()
json.dump(dict(own=own, other=other), open(out, "w"))
dist.destroy_process_group()
"""


def test_every_rank_gets_every_ranks_generator_state_on_gloo(run_gloo_ranks, tmp_path):
    """Each rank can restore the other's stream: rank r's draws after restoring the
    gathered state of rank 1 - r equal rank 1 - r's own draws."""
    results = run_gloo_ranks(RANK_SCRIPT, tmp_path)
    assert results[0]["own"] != results[1]["own"]
    assert results[0]["other"] == results[1]["own"]
    assert results[1]["other"] == results[0]["own"]
