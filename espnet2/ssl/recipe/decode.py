"""Decode several test sets with several ASR models in one process.

Recipe stage 8 decodes every test set with every fine-tuned model. Started as one
``espnet2.bin.asr_inference`` process per set and job, each process pays ESPnet's
import (about 7 s on a CPU) before decoding a few dozen utterances. Here one process
imports once, then forks ``nj`` workers that run ESPnet's own
:func:`espnet2.bin.asr_inference.inference` on each (model, set, shard): the decoding
is ESPnet's, unchanged, and so are the files it writes.

A job is (training config, model file, ``wav.scp``, output dir). Its utterances are
split round-robin into ``min(nj, utterances)`` shards whose key lists are
``<out>/logdir/keys.<n>.scp``; shard n writes ``<out>/logdir/output.<n>/`` (ESPnet's
``1best_recog/`` files) and logs to ``<out>/logdir/decode.<n>.log``. When every shard of
a job is done, ``<out>/text`` holds the 1-best texts of all shards, sorted by id (C
locale), written atomically.
"""

import logging
import multiprocessing
import os
import queue
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from espnet2.bin.asr_inference import get_parser, inference
from espnet2.fileio.kaldi_data_dir import read_two_column_file
from espnet2.ssl.targets.labels import atomic_path
from espnet2.utils.tool_logging import LOG_FORMAT


class DecodeError(RuntimeError):
    """A shard failed to decode; the message names its log."""


@dataclass(frozen=True)
class DecodeJob:
    """One model on one set.

    Attributes:
        config: The ASR training ``config.yaml``.
        model: The model file (``*.pth``).
        wav_scp: The set's ``wav.scp``.
        out_dir: Where ``logdir/`` and ``text`` go (e.g. ``<exp>/decode_<set>``).
    """

    config: str
    model: str
    wav_scp: str
    out_dir: str


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of a job: its key list, output dir and log."""

    job: DecodeJob
    index: int
    key_file: Path
    output_dir: Path
    log_file: Path


def split_job(job: DecodeJob, nj: int) -> List[Shard]:
    """Writes the job's key lists (round-robin over its utterances) into a fresh
    ``<out>/logdir`` and returns its shards.

    Raises:
        DecodeError: ``wav.scp`` is missing or has no utterances (the file and the
            fix named).
    """
    if not Path(job.wav_scp).is_file():
        raise DecodeError(f"{job.wav_scp}: no such file; run stage 2 for this set")
    keys = [line.id for line in read_two_column_file(job.wav_scp)]
    if not keys:
        raise DecodeError(f"{job.wav_scp}: no utterances to decode; check stage 2")
    logdir = Path(job.out_dir) / "logdir"
    shutil.rmtree(job.out_dir, ignore_errors=True)
    logdir.mkdir(parents=True)
    count = min(nj, len(keys))
    shards = []
    for n in range(1, count + 1):
        key_file = logdir / f"keys.{n}.scp"
        key_file.write_text("".join(f"{k}\n" for k in keys[n - 1 :: count]))
        output_dir, log_file = logdir / f"output.{n}", logdir / f"decode.{n}.log"
        shards.append(Shard(job, n, key_file, output_dir, log_file))
    return shards


def _decode_shard(item: Tuple[Shard, Dict[str, Any], int, int]) -> Tuple[Shard, str]:
    """Worker: ESPnet's inference of one shard, logging into the shard's log.

    Returns the shard and "" on success, else the error's one-line description.
    """
    shard, options, worker_gpus, threads = item
    root = logging.getLogger()
    handler = logging.FileHandler(shard.log_file, mode="w")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.handlers = [handler]
    root.setLevel(options.get("log_level", "INFO"))
    torch.set_num_threads(threads)
    kwargs = dict(options)
    kwargs.update(
        output_dir=str(shard.output_dir),
        data_path_and_name_and_type=[(shard.job.wav_scp, "speech", "sound")],
        key_file=str(shard.key_file),
        asr_train_config=shard.job.config,
        asr_model_file=shard.job.model,
        ngpu=1 if worker_gpus else 0,
    )
    try:
        logging.info(f"decoding {shard.key_file} with {shard.job.model}")
        # no autograd bookkeeping at all (ESPnet's no_grad still counts versions):
        # the same results, about 0.8x the time of its CTC prefix search on a CPU
        with torch.inference_mode():
            inference(**kwargs)
    except Exception as e:  # reported by the parent with the log's path
        logging.exception("decoding failed")
        return shard, f"{type(e).__name__}: {e}"
    finally:
        handler.close()
    return shard, ""


def _worker(items: List, number: int, gpus: int, results) -> None:
    """A forked worker: its share of the shards, each result onto ``results``.

    It is pinned to GPU ``number % gpus`` before anything touches CUDA. Workers are
    plain (not daemonic) processes, so ESPnet's data loader may start its own.
    """
    if gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(number % gpus)
    for item in items:
        shard, error = _decode_shard(item)
        results.put((shard.job.out_dir, shard.index, error))


def merge_text(job: DecodeJob, shards: Sequence[Shard]) -> Path:
    """``<out>/text``: the 1-best texts of the job's shards, sorted by id (C locale).

    Raises:
        DecodeError: A shard wrote no text for one of its keys.
    """
    lines: List[str] = []
    for shard in shards:
        text = shard.output_dir / "1best_recog" / "text"
        found = text.read_text(encoding="utf-8").splitlines() if text.is_file() else []
        have = {line.split(maxsplit=1)[0] for line in found if line.strip()}
        for key in shard.key_file.read_text(encoding="utf-8").split():
            if key not in have:
                raise DecodeError(
                    f"{text}: no hypothesis for utterance {key}; see {shard.log_file}"
                )
        lines += found
    out = Path(job.out_dir) / "text"
    with atomic_path(out) as tmp:  # sorted as `LC_ALL=C sort`: UTF-8 in code points
        tmp.write_text("".join(f"{line}\n" for line in sorted(lines)), "utf-8")
    return out


def _collect(results, workers, items) -> List[str]:
    """Waits for every shard's result; returns the failures (log: error)."""
    logs = {(i[0].job.out_dir, i[0].index): i[0].log_file for i in items}
    failures, pending = [], set(logs)
    while pending:
        try:
            out_dir, index, error = results.get(timeout=1.0)
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers) and results.empty():
                lost = sorted(str(logs[key]) for key in pending)
                return failures + [f"{log}: the worker process died" for log in lost]
            continue
        pending.discard((out_dir, index))
        logging.info(f"{out_dir} shard {index}: {'failed' if error else 'done'}")
        if error:
            failures.append(f"{logs[(out_dir, index)]}: {error}")
    return failures


def decode_jobs(
    jobs: Sequence[DecodeJob],
    options: Dict[str, Any],
    nj: int = 2,
    gpus: int = 0,
    threads: int = 1,
) -> List[Path]:
    """Decodes every job in ``nj`` forked workers; returns each job's ``text``.

    Args:
        jobs: (config, model, wav.scp, output dir) to decode.
        options: The other keyword arguments of ESPnet's ``inference`` (its
            command-line defaults, as parsed by ``asr_inference.get_parser``).
        nj: Shards per job and worker processes.
        gpus: GPUs to decode on, a worker each in turn (0: the CPU).
        threads: torch threads per worker.

    Raises:
        DecodeError: A shard failed (its log named) or left an utterance out.
    """
    shards = {job: split_job(job, nj) for job in jobs}
    items = [(s, options, gpus, threads) for job in jobs for s in shards[job]]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_worker, args=(items[n::nj], n, gpus, results))
        for n in range(min(nj, len(items)))
    ]
    for worker in workers:
        worker.start()
    failures = _collect(results, workers, items)
    for worker in workers:
        worker.join()
    if failures:
        raise DecodeError("decoding failed; see " + "; ".join(failures))
    return [merge_text(job, shards[job]) for job in jobs]


def decode_options(arguments: Optional[Sequence[str]]) -> Dict[str, Any]:
    """ESPnet's ``asr_inference`` options from its own parser (its defaults, then
    ``arguments``), less those a job sets."""
    required = [
        "--output_dir=-",
        "--data_path_and_name_and_type=-,speech,sound",
    ]
    options = vars(get_parser().parse_args(required + list(arguments or [])))
    options.pop("config", None)
    return options
