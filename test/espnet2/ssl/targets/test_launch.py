"""Tests for espnet2/ssl/targets/launch.py: one process per shard, CPU or GPU."""

import sys
from pathlib import Path

import pytest
import torch

from espnet2.ssl.targets.dumpers import FeatureDumpError
from espnet2.ssl.targets.launch import launch_shards, plan_jobs, run_jobs, visible_gpus


def test_cpu_shards_run_all_at_once_with_the_cores_shared(tmp_path):
    jobs = plan_jobs(4, 0, tmp_path, environ={}, num_cores=32)
    assert [job.index for job in jobs] == [1, 2, 3, 4]
    assert [job.slot for job in jobs] == [0, 1, 2, 3]
    assert all(
        job.env == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"} for job in jobs
    )
    assert [job.log.name for job in jobs] == [f"dump.{j}.log" for j in range(1, 5)]


def test_more_cpu_shards_than_cores_get_one_thread_each(tmp_path):
    jobs = plan_jobs(3, 0, tmp_path, environ={}, num_cores=2)
    assert {job.env["OMP_NUM_THREADS"] for job in jobs} == {"1"}


def test_a_thread_count_set_by_the_user_is_kept(tmp_path):
    jobs = plan_jobs(2, 0, tmp_path, environ={"OMP_NUM_THREADS": "3"}, num_cores=8)
    assert all(job.env == {"MKL_NUM_THREADS": "4"} for job in jobs)


def test_gpu_shards_go_round_robin_one_process_per_gpu(tmp_path):
    jobs = plan_jobs(5, 2, tmp_path, environ={}, num_cores=16)
    assert [job.slot for job in jobs] == [0, 1, 0, 1, 0]
    assert [job.env["CUDA_VISIBLE_DEVICES"] for job in jobs] == [
        "0",
        "1",
        "0",
        "1",
        "0",
    ]
    assert {job.env["OMP_NUM_THREADS"] for job in jobs} == {"8"}


def test_gpu_ids_come_from_the_visible_list_of_the_launcher(tmp_path):
    environ = {"CUDA_VISIBLE_DEVICES": "4,6,7"}
    jobs = plan_jobs(4, 3, tmp_path, environ=environ, num_cores=12)
    assert [job.env["CUDA_VISIBLE_DEVICES"] for job in jobs] == ["4", "6", "7", "4"]


def test_fewer_shards_than_gpus_use_one_gpu_per_shard(tmp_path):
    jobs = plan_jobs(2, 8, tmp_path, environ={}, num_cores=32)
    assert [job.env["CUDA_VISIBLE_DEVICES"] for job in jobs] == ["0", "1"]
    assert {job.env["OMP_NUM_THREADS"] for job in jobs} == {"16"}


def test_asking_for_more_gpus_than_visible_is_an_error():
    with pytest.raises(FeatureDumpError, match="names 2. Fix: lower --ngpu to 2"):
        visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, 4)
    assert visible_gpus({}, 3) == ["0", "1", "2"]
    with pytest.raises(FeatureDumpError, match="but 0 are visible. Fix: use --ngpu 0"):
        visible_gpus({}, 2, available=0)


def test_launching_on_gpus_that_this_machine_lacks_is_an_error(tmp_path):
    missing = torch.cuda.device_count() + 1
    with pytest.raises(FeatureDumpError, match=f"--ngpu {missing} asks for"):
        launch_shards(["--feature_type", "ssl"], 2, missing, tmp_path, environ={})
    assert not (tmp_path / "log").exists()  # nothing started


SCRIPT = """
import os, sys
shard = sys.argv[sys.argv.index("--shard") + 1]
print("shard", shard, "threads", os.environ["OMP_NUM_THREADS"])
if shard == "2":
    print("tool: error: utterance 'u7' is bad. Fix: drop it.", file=sys.stderr)
    sys.exit(1)
"""


def test_a_failed_shard_fails_the_run_naming_its_log_and_error(tmp_path):
    jobs = plan_jobs(3, 0, tmp_path, environ={}, num_cores=3)
    with pytest.raises(FeatureDumpError) as err:
        run_jobs([sys.executable, "-c", SCRIPT], jobs)
    message = str(err.value)
    assert message.startswith("1 of 3 shards failed")
    assert f"shard 2 (exit status 1, log {tmp_path / 'dump.2.log'})" in message
    assert "utterance 'u7' is bad. Fix: drop it." in message
    for shard in (1, 3):  # the others ran to the end
        assert (
            tmp_path / f"dump.{shard}.log"
        ).read_text() == f"shard {shard} threads 1\n"


def test_shards_of_one_slot_run_one_after_the_other(tmp_path):
    script = (
        "import sys, time; from pathlib import Path; "
        "shard = sys.argv[sys.argv.index('--shard') + 1]; "
        f"log = Path({str(tmp_path / 'order')!r}); "
        "log.open('a').write(f'start {shard}\\n'); time.sleep(0.2); "
        "log.open('a').write(f'end {shard}\\n')"
    )
    jobs = plan_jobs(3, 1, tmp_path, environ={}, num_cores=2)
    run_jobs([sys.executable, "-c", script], jobs)
    events = (tmp_path / "order").read_text().split("\n")[:-1]
    assert events == [f"{kind} {j}" for j in (1, 2, 3) for kind in ("start", "end")]
    assert all(Path(job.log).exists() for job in jobs)
