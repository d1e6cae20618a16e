"""Run the shards of a feature dump in parallel processes, one per CPU job or GPU.

``ssl_dump_feats --nj N`` (without ``--shard``) starts one process per shard,
each ``ssl_dump_feats ... --shard j``, as Kaldi's ``run.pl JOB=1:N`` would:

* on the CPU (``--ngpu 0``) all N at once, each with ``OMP_NUM_THREADS`` = the
  usable cores divided by N (at least 1; an ``OMP_NUM_THREADS`` already set is
  kept): N single-threaded processes beat one process with N threads, since audio
  decoding, MFCC framing and small matmuls parallelise poorly within a process;
* on G GPUs (``--ngpu G``) one process per GPU at a time: shard j runs on GPU
  (j - 1) mod G, alone on it (``CUDA_VISIBLE_DEVICES`` names that one GPU, taken
  from the list the launcher itself sees), and the shards of a GPU run one after
  the other; each gets the cores divided by G.

Each process writes its log to ``<out_dir>/log/dump.<j>.log``. A process that
fails does not stop the others (their shards are kept, as with run.pl); at the end
every failed shard is reported with its log and the log's last line (the tool's
one-line error: file, utterance, fix). The shard processes die with the launcher
(Linux's parent-death signal), so a killed dump leaves nothing running behind it.
A finished shard is skipped by its process (its done marker); the launcher merges
once every shard is done.
"""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from espnet2.ssl.targets.dumpers.base import FeatureDumpError

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): signal when the parent dies
POLL_SECONDS = 0.2  # how often the launcher looks at its shard processes


@dataclass
class ShardJob:
    """How one shard's process runs.

    Attributes:
        index: The shard, 1..nj.
        slot: The worker slot (a CPU job, or a GPU) whose shards run in turn.
        env: Variables set for the process on top of the launcher's environment.
        log: Its log file.
    """

    index: int
    slot: int
    env: Dict[str, str]
    log: Path


def visible_gpus(
    environ: Mapping[str, str], ngpu: int, available: Optional[int] = None
) -> List[str]:
    """The ids to put into ``CUDA_VISIBLE_DEVICES`` for GPUs 0..ngpu-1.

    Args:
        environ: The launcher's environment; its ``CUDA_VISIBLE_DEVICES`` (e.g.
            set by a scheduler to ``"2,3"``) is honoured.
        ngpu: GPUs to use.
        available: GPUs that torch sees (``torch.cuda.device_count()``), or None
            not to check.

    Returns:
        ``ngpu`` ids, e.g. ``["2", "3"]``, or ``["0", "1"]`` when nothing is set.

    Raises:
        FeatureDumpError: Fewer GPUs are visible than asked for.
    """
    if available is not None and available < ngpu:
        raise FeatureDumpError(
            f"--ngpu {ngpu} asks for {ngpu} GPUs but {available} are visible. Fix: "
            f"use --ngpu {available} (0: the CPU), or run on a node with more GPUs."
        )
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(ngpu)]
    ids = [item.strip() for item in listed.split(",") if item.strip()]
    if len(ids) < ngpu:
        raise FeatureDumpError(
            f"--ngpu {ngpu} asks for {ngpu} GPUs but CUDA_VISIBLE_DEVICES="
            f"'{listed}' names {len(ids)}. Fix: lower --ngpu to {len(ids)}, or make "
            "more GPUs visible."
        )
    return ids[:ngpu]


def plan_jobs(
    nj: int,
    ngpu: int,
    log_dir: Path,
    environ: Mapping[str, str],
    num_cores: int,
) -> List[ShardJob]:
    """The process of every shard: its slot, device and threads.

    Args:
        nj: Shards, one process each.
        ngpu: GPUs (0: every shard on the CPU, all at once).
        log_dir: Where the logs go.
        environ: The launcher's environment (``CUDA_VISIBLE_DEVICES``,
            ``OMP_NUM_THREADS``).
        num_cores: CPU cores the launcher may use.

    Returns:
        One job per shard, in shard order; shard j is in slot (j - 1) mod slots.
    """
    slots = nj if ngpu == 0 else min(ngpu, nj)
    gpus = visible_gpus(environ, ngpu) if ngpu > 0 else []
    threads = str(max(1, num_cores // slots))
    jobs = []
    for index in range(1, nj + 1):
        slot = (index - 1) % slots
        env = {}
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if name not in environ:
                env[name] = threads
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot]
        jobs.append(ShardJob(index, slot, env, log_dir / f"dump.{index}.log"))
    return jobs


def _last_line(log: Path) -> str:
    """The last non-empty line of a log (the tool's one-line error), or ''."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    lines = [line for line in lines if line.strip()]
    return lines[-1] if lines else ""


def _die_with_launcher() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes Linux SIGKILL the child when the launcher dies.

    Without it a launcher killed on its own (``kill PID``, a scheduler signalling
    one process) would leave its shard processes running, writing into a dump that
    the next run resumes. With it they stop with the launcher, and their shards
    stay unfinished (``.partial``) until the re-run redoes them. ``prctl`` is
    looked up here, in the launcher, so the hook only makes one C call in the
    forked child. None where there is no ``prctl`` (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


def _start(command: Sequence[str], job: ShardJob, preexec) -> subprocess.Popen:
    """Start one shard's process, its output into its log."""
    with open(job.log, "w", encoding="utf-8") as log:
        return subprocess.Popen(
            [*command, "--shard", str(job.index)],
            env=dict(os.environ, **job.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )


def _run_all(command: Sequence[str], jobs: Sequence[ShardJob]) -> Dict[int, int]:
    """Run the jobs, those of a slot one after the other, every slot at once.

    Processes are started from this (the main) thread, the only one, so that the
    ``preexec_fn`` is safe and each child's death signal follows this process.
    If the launcher stops on an exception (e.g. KeyboardInterrupt) its children
    are killed before it re-raises.

    Returns:
        The exit status of every failed shard, by shard index.
    """
    queues: Dict[int, List[ShardJob]] = {}
    for job in jobs:
        queues.setdefault(job.slot, []).append(job)
    preexec = _die_with_launcher()
    running: Dict[int, Tuple[ShardJob, subprocess.Popen]] = {}
    failed: Dict[int, int] = {}
    try:
        while queues or running:
            for slot in [slot for slot in queues if slot not in running]:
                job = queues[slot].pop(0)
                if not queues[slot]:
                    del queues[slot]
                running[slot] = (job, _start(command, job, preexec))
            for slot, (job, process) in list(running.items()):
                status = process.poll()
                if status is not None:
                    del running[slot]
                    if status != 0:
                        failed[job.index] = status
            time.sleep(POLL_SECONDS)
    finally:
        for _, process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return failed


def run_jobs(command: Sequence[str], jobs: Sequence[ShardJob]) -> None:
    """Run every job (the slots in parallel); raise if any failed.

    Args:
        command: The argv of a shard's process without ``--shard j``.
        jobs: From :func:`plan_jobs`.

    Raises:
        FeatureDumpError: Naming each failed shard, its exit status, its log and
            the log's last line.
    """
    failed = _run_all(command, jobs)
    if failed:
        log_of = {job.index: job.log for job in jobs}
        reports = [
            f"shard {index} (exit status {failed[index]}, log {log_of[index]}): "
            f"{_last_line(log_of[index])}"
            for index in sorted(failed)
        ]
        raise FeatureDumpError(
            f"{len(failed)} of {len(jobs)} shards failed; finished shards are kept "
            "and a re-run redoes only the others. " + " | ".join(reports)
        )


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where known)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def launch_shards(
    argv: Sequence[str],
    nj: int,
    ngpu: int,
    out_dir: Path,
    environ: Optional[Mapping[str, str]] = None,
) -> None:
    """Run ``python -m espnet2.bin.ssl_dump_feats argv --shard j`` for j = 1..nj.

    Args:
        argv: The tool's arguments as given, without ``--shard``; each process
            gets them with ``--shard j`` and ``--ngpu 1`` (it sees one GPU) or
            ``--ngpu 0``.
        nj: Number of shards.
        ngpu: GPUs (0: CPU processes).
        out_dir: The dump directory; logs go to ``out_dir/log/dump.<j>.log``.
        environ: The environment to plan with (default ``os.environ``).

    Raises:
        FeatureDumpError: Fewer GPUs than ``ngpu`` are visible, or a shard failed
            (see :func:`run_jobs`).
    """
    environ = os.environ if environ is None else environ
    if ngpu > 0:
        visible_gpus(environ, ngpu, torch.cuda.device_count())
    log_dir = out_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(nj, ngpu, log_dir, environ, usable_cores())
    where = f"{ngpu} GPU(s)" if ngpu else "the CPU"
    logging.info(
        f"{out_dir}: {nj} shards in {len({j.slot for j in jobs})} parallel "
        f"processes on {where} (logs: {log_dir}/dump.*.log)"
    )
    command = [sys.executable, "-m", "espnet2.bin.ssl_dump_feats", *argv]
    command += ["--ngpu", "1" if ngpu else "0"]  # a process sees at most one GPU
    run_jobs(command, jobs)
