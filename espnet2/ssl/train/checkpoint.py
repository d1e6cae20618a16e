"""Checkpoints that survive a kill: atomic saves and mid-epoch training state.

ESPnet's trainer saves ``checkpoint.pth`` (model, optimizers, schedulers, scaler,
reporter) and ``<N>epoch.pth`` with ``torch.save`` straight to the final name, once
per epoch. A job killed while writing leaves a truncated zip that the next
``--resume true`` cannot load, and a job killed mid-epoch loses the whole epoch.

- :func:`atomic_torch_saves` makes every ``torch.save`` to a path during training
  write a temporary file beside it, flush it to disk and rename it over the target
  (``os.replace`` is atomic on POSIX), so a checkpoint file on disk is always the
  previous complete one or the new complete one.
- :class:`MidEpochState` is what ``--save_interval_updates N`` writes every N
  optimizer updates to ``checkpoint_mid_epoch.pth``: the training state plus the
  position in the epoch (micro-batches done), the epoch's partial statistics and
  every rank's random-number generator states. Resuming from it continues the epoch
  with the next batch; with ``num_workers: 0`` the run is then bit-identical to one
  that was never interrupted (with data-loader workers, the workers' random crops
  after the resume point differ, since their generators cannot be saved).

The fault-tolerance design follows fairseq's ``save_interval_updates`` /
``checkpoint_last.pt`` (fairseq/checkpoint_utils.py, which also writes through a
temporary file); the code is our own.
"""

import contextlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from espnet2.ssl.model_files import WeightsOnlyError, load_weights_only
from espnet2.ssl.targets.labels import atomic_path
from espnet2.ssl.utils.plain_values import plain_tree
from espnet2.train.reporter import Average, SubReporter, WeightedAverage

PathLike = Union[str, Path]
MID_EPOCH_CHECKPOINT = "checkpoint_mid_epoch.pth"


def atomic_torch_save(obj: Any, path: PathLike, save=torch.save) -> None:
    """``torch.save(obj, path)`` through a temporary file, fsync and a rename.

    A kill at any moment leaves ``path`` absent or complete (the old or the new
    content), never truncated.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            save(obj, f)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_torch_saves() -> Iterator[None]:
    """Within the block, every ``torch.save`` to a path is :func:`atomic_torch_save`.

    ESPnet's ``Trainer.run`` calls ``torch.save`` directly; this is how its epoch
    checkpoints become atomic without a copy of its 300-line loop. Saves to file
    objects are passed through unchanged. The original function is restored on exit.
    """
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and not args and not kwargs:
            return atomic_torch_save(obj, f, save=original)
        return original(obj, f, *args, **kwargs)

    torch.save = save
    try:
        yield
    finally:
        torch.save = original


def restore_epoch_snapshot(output_dir: PathLike) -> Optional[Path]:
    """Write ``<N>epoch.pth`` from ``checkpoint.pth`` when a kill came between them.

    ESPnet saves ``checkpoint.pth`` first and then the epoch's model file; a run
    killed in between would resume at epoch N+1 without ever writing epoch N's model
    (the file that ``latest.pth``, averaging and packing use).

    Returns:
        The restored file, or None when nothing was missing.
    """
    checkpoint = Path(output_dir) / "checkpoint.pth"
    if not checkpoint.exists():
        return None
    state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
    epoch = state["reporter"]["epoch"]
    snapshot = Path(output_dir) / f"{epoch}epoch.pth"
    if snapshot.exists():
        return None
    atomic_torch_save(state["model"], snapshot)
    latest = Path(output_dir) / "latest.pth"
    latest.unlink(missing_ok=True)
    latest.symlink_to(snapshot.name)
    return snapshot


def remove_temporaries(output_dir: PathLike) -> List[Path]:
    """Delete the temporary files of saves that a kill interrupted.

    Returns:
        The removed paths (``.<name>.<pid>.tmp`` files in ``output_dir``).
    """
    removed = []
    for tmp in Path(output_dir).glob(".*.pth.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# ------------------------------------------------------------ random generators


def rng_state() -> Dict[str, Any]:
    """The states of torch's (CPU and CUDA), numpy's and Python's global generators,
    as tensors and plain Python values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=[kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
               int(has_gauss), float(gauss)],  # fmt: skip
        python=random.getstate(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------ partial statistics


def reporter_state(reporter: SubReporter) -> Dict[str, Any]:
    """The statistics a training epoch has registered so far, as plain values.

    Returns:
        ``count``, ``total_count`` and ``stats``: per key one entry per step,
        ``[value, weight]`` for a weighted average and ``[value]`` for a plain one.
    """
    stats = {}
    for key, values in reporter.stats.items():
        stats[key] = [
            (
                [plain_tree(v.value), plain_tree(v.weight)]
                if isinstance(v, WeightedAverage)
                else [plain_tree(v.value)]
            )
            for v in values
        ]
    return dict(count=reporter.count, total_count=reporter.total_count, stats=stats)


def load_reporter_state(reporter: SubReporter, state: Dict[str, Any]) -> None:
    """Put what :func:`reporter_state` returned into a new epoch's reporter."""
    reporter.count = state["count"]
    reporter.total_count = state["total_count"]
    reporter.stats.clear()
    for key, values in state["stats"].items():
        reporter.stats[key] = [
            WeightedAverage(v[0], v[1]) if len(v) == 2 else Average(v[0])
            for v in values
        ]


# ------------------------------------------------------------ the checkpoint


@dataclass
class TrainingParts:
    """What a mid-epoch checkpoint saves and restores, besides the position.

    Attributes:
        module: The model (unwrapped from DDP); must have a ``num_updates`` buffer.
        optimizers, schedulers, scaler: ESPnet's (scaler None without AMP).
        reporter: The epoch's training statistics.
    """

    module: torch.nn.Module
    optimizers: Sequence[torch.optim.Optimizer]
    schedulers: Sequence[Any]
    scaler: Optional[Any]
    reporter: SubReporter

    def num_updates(self) -> int:
        """The model's optimizer-update count."""
        return int(self.module.num_updates[0])


class CheckpointError(RuntimeError):
    """A mid-epoch checkpoint that cannot be used; the message names it and the fix."""


@dataclass
class MidEpochState:
    """Training state in the middle of an epoch, at an optimizer-update boundary.

    Attributes:
        epoch: The epoch in progress (1-based, as ESPnet counts).
        batches_done: Micro-batches of the epoch already trained on (a multiple of
            ``accum_grad``).
        updates_at_epoch_start: The model's ``num_updates`` when the epoch began.
        model: The model's state dict (without a DDP wrapper's ``module.``).
        optimizers, schedulers: Their state dicts (None for no scheduler).
        scaler: The AMP grad scaler's state dict, or None.
        reporter: The epoch's statistics so far (:func:`reporter_state`).
        rng: Every rank's generator states (:func:`rng_state`), by rank.
        nonfinite_in_a_row: Skipped non-finite steps in a row at this point.
        world_size: Ranks that trained (the batches are sharded over them).
        epoch_batches: Micro-batches in the whole epoch, on one rank.
    """

    epoch: int
    batches_done: int
    updates_at_epoch_start: int
    model: Dict[str, torch.Tensor]
    optimizers: List[Dict[str, Any]]
    schedulers: List[Optional[Dict[str, Any]]]
    scaler: Optional[Dict[str, Any]]
    reporter: Dict[str, Any]
    rng: List[Dict[str, Any]]
    nonfinite_in_a_row: int = 0
    world_size: int = 1
    epoch_batches: Optional[int] = None

    def save(self, path: PathLike) -> None:
        """Write atomically (:func:`atomic_torch_save`)."""
        atomic_torch_save(dict(vars(self)), path)

    @classmethod
    def load(cls, path: PathLike) -> "MidEpochState":
        """Read a file written by :meth:`save` (weights only: nothing is executed;
        tensors are memory-mapped, so reading only the epoch is cheap).

        Raises:
            CheckpointError: When the file is not such a checkpoint.
        """
        fix = f"delete {path} to resume from the last finished epoch instead"
        try:
            state = load_weights_only(path, mmap=True)
        except WeightsOnlyError as err:
            raise CheckpointError(f"{err}; {fix}") from None
        try:
            return cls(**state)
        except TypeError as err:
            raise CheckpointError(
                f"'{path}' is not a mid-epoch checkpoint ({err}); {fix}"
            ) from None

    def mismatch(self, epoch_batches: Optional[int], world_size: int) -> Optional[str]:
        """Why this state does not fit the epoch about to run, or None."""
        if world_size != self.world_size:
            return (
                f"it was written with world size {self.world_size}, this run has "
                f"{world_size}"
            )
        if epoch_batches is not None and epoch_batches != self.epoch_batches:
            return (
                f"its epoch had {self.epoch_batches} batches, this one has "
                f"{epoch_batches} (the data or the batch options changed)"
            )
        return None

    @classmethod
    def capture(
        cls,
        parts: TrainingParts,
        epoch: int,
        batches_done: int,
        updates_at_epoch_start: int,
        rng: List[Dict[str, Any]],
        epoch_batches: Optional[int],
    ) -> "MidEpochState":
        """The state of ``parts`` now, ``batches_done`` micro-batches into ``epoch``."""
        scaler = parts.scaler
        return cls(
            epoch=epoch,
            batches_done=batches_done,
            updates_at_epoch_start=updates_at_epoch_start,
            model=parts.module.state_dict(),
            optimizers=[plain_tree(o.state_dict()) for o in parts.optimizers],
            schedulers=[plain_tree(s.state_dict()) if s else None
                        for s in parts.schedulers],  # fmt: skip
            scaler=None if scaler is None else plain_tree(scaler.state_dict()),
            reporter=reporter_state(parts.reporter),
            rng=rng,
            nonfinite_in_a_row=getattr(parts.module, "nonfinite_in_a_row", 0),
            world_size=world()[1],
            epoch_batches=epoch_batches,
        )

    def apply(self, parts: TrainingParts) -> None:
        """Load the model, optimizer, scheduler, scaler and statistics states."""
        parts.module.load_state_dict(self.model)
        for optimizer, state in zip(parts.optimizers, self.optimizers):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(parts.schedulers, self.schedulers):
            if scheduler is not None and state is not None:
                scheduler.load_state_dict(state)
        if parts.scaler is not None and self.scaler is not None:
            parts.scaler.load_state_dict(self.scaler)
        load_reporter_state(parts.reporter, self.reporter)
        parts.module.nonfinite_in_a_row = self.nonfinite_in_a_row


# ------------------------------------------------------------ in the epoch loop


def world() -> Tuple[int, int]:
    """(rank, world size); (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rng_states() -> List[Dict[str, Any]]:
    """Every rank's :func:`rng_state`, by rank (a collective: all ranks call it)."""
    rank, size = world()
    if size == 1:
        return [rng_state()]
    states = [None] * size
    dist.all_gather_object(states, rng_state())
    return states


def skip_batches(loader: Iterable, num_batches: int) -> Optional[DataLoader]:
    """The rest of an epoch's ``DataLoader`` after its first ``num_batches``.

    ESPnet's sequence iterator is a ``DataLoader`` over a list of batches (its
    ``batch_sampler``); the rest is a new one over the tail of that list, so the
    skipped batches are not read at all.

    Returns:
        The new loader, or None when ``loader`` is not of that kind (e.g. ESPnet's
        chunk or multiple iterators), which cannot be resumed mid-epoch.
    """
    if not isinstance(loader, DataLoader) or not isinstance(
        loader.batch_sampler, (list, tuple)
    ):
        return None
    return DataLoader(
        dataset=loader.dataset,
        batch_sampler=list(loader.batch_sampler)[num_batches:],
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        collate_fn=loader.collate_fn,
    )


class MidEpochSaver:
    """Wraps an epoch's data loader: every ``interval`` optimizer updates, writes a
    :class:`MidEpochState` before the next batch is fetched.

    It must be the innermost wrapper (it calls ``iter`` on the loader): the
    generator states it saves are then exactly those with which the next batch is
    read and cropped. After a resume (``start`` batches skipped, ``resume_rng``
    given), the generators are restored right after the loader's iterator is made.

    Args:
        iterator: The epoch's loader (after :func:`skip_batches` when resuming).
        snapshot: Called with ``batches_done`` and the gathered generator states;
            returns the :class:`MidEpochState` to write (rank 0) or None.
        num_updates: Returns the model's optimizer-update count.
        accum_grad: Micro-batches per optimizer update.
        interval: Updates between two saves (0: never).
        path: Where the state is written.
        start: Micro-batches of the epoch done before this loader's first batch.
        resume_rng: This rank's generator states to restore, or None.
    """

    def __init__(
        self,
        iterator: Iterable,
        snapshot: Callable[[int, List[Dict[str, Any]]], Optional[MidEpochState]],
        num_updates: Callable[[], int],
        accum_grad: int,
        interval: int,
        path: Path,
        start: int = 0,
        resume_rng: Optional[Dict[str, Any]] = None,
    ):
        self.iterator = iterator
        self.snapshot = snapshot
        self.num_updates = num_updates
        self.accum_grad = accum_grad
        self.interval = interval
        self.path = Path(path)
        self.start = start
        self.resume_rng = resume_rng
        self.last_saved = num_updates()
        self.saves = 0

    def __len__(self) -> int:
        return len(self.iterator)

    def _maybe_save(self, batches_done: int) -> None:
        if self.interval <= 0 or batches_done % self.accum_grad:
            return
        if batches_done >= self.start + len(self.iterator):
            return  # the epoch is over: ESPnet's checkpoint.pth follows
        if self.num_updates() - self.last_saved < self.interval:
            return
        state = self.snapshot(batches_done, gather_rng_states())
        if state is not None:
            state.save(self.path)
            logging.info(
                f"mid-epoch checkpoint {self.path}: epoch {state.epoch}, "
                f"{batches_done}/{state.epoch_batches} batches, "
                f"{self.num_updates()} updates"
            )
        self.last_saved = self.num_updates()
        self.saves += 1

    def __iter__(self) -> Iterator:
        iterator = iter(self.iterator)
        if self.resume_rng is not None:
            set_rng_state(self.resume_rng)
        batches_done = self.start
        while True:
            self._maybe_save(batches_done)
            try:
                batch = next(iterator)
            except StopIteration:
                return
            yield batch
            batches_done += 1
