"""ESPnet's Trainer with a budget in hours of audio seen (``--max_seen_hours``), a
stop after repeated non-finite steps (``--max_nonfinite_steps``), atomic checkpoint
files and mid-epoch checkpoints (``--save_interval_updates``).

The batch-size study (arXiv:2402.13723) finds that an SSL model's quality depends
mainly on the audio it has seen (batch seconds x updates) and proposes comparing runs
at equal seen hours. ``--max_seen_hours H`` ends training at the first optimizer
update boundary where the model's ``seen_audio`` counter (global over ranks, restored
on resume) reaches H hours. The epoch in progress is then finished as ESPnet finishes
any epoch (validation, checkpoint, best-model links), and training stops.

ESPnet's trainer skips an optimizer step whose gradient norm is not finite (the
learning-rate schedule and our update counter do not advance), but it goes on
forever if every step is. ``--max_nonfinite_steps N`` counts the skipped steps (an
update boundary where ``num_updates`` did not advance), logs them per epoch, and
stops the run with an error after N in a row; the last checkpoint (the previous
epoch) is kept.

Every checkpoint file is written through a temporary file and a rename, so a kill
while saving never leaves a file that cannot be loaded
(``espnet2/ssl/train/checkpoint.py``).
``--save_interval_updates N`` also writes ``checkpoint_mid_epoch.pth`` every N
optimizer updates; a run killed mid-epoch and started again with ``--resume true``
(the recipes always pass it) continues from the next batch instead of the start of
the epoch.

Under ``DistributedDataParallel`` with ``accum_grad > 1``, every micro-batch but the
last of each update runs under ``no_sync()`` (``--ddp_no_sync_accum``, default
true): one gradient all-reduce per optimizer update instead of ``accum_grad``
(``espnet2/ssl/train/grad_sync.py``).
"""

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from typeguard import typechecked

from espnet2.ssl.train.checkpoint import (
    MID_EPOCH_CHECKPOINT,
    MidEpochSaver,
    MidEpochState,
    TrainingParts,
    atomic_torch_saves,
    remove_temporaries,
    restore_epoch_snapshot,
    skip_batches,
    world,
)
from espnet2.ssl.train.grad_sync import NoSyncAccumulation, accumulates_without_sync
from espnet2.ssl.train.seen_audio import SEEN_AUDIO_LOG  # noqa: F401 (re-exported)
from espnet2.train.trainer import Trainer, TrainerOptions
from espnet2.utils.build_dataclass import build_dataclass
from espnet2.utils.types import float_or_none, str2bool


@dataclasses.dataclass
class SSLTrainerOptions(TrainerOptions):
    """ESPnet's ``TrainerOptions`` plus the options of ``SSLTrainer.add_arguments``.

    Attributes:
        max_seen_hours: Budget in hours of audio seen (all GPUs, after cropping);
            None: no budget (``max_epoch`` decides).
        max_nonfinite_steps: Skipped (non-finite) optimizer steps in a row that
            stop the run with ``NonFiniteStepsError``.
        save_interval_updates: Optimizer updates between mid-epoch checkpoints;
            0: none.
        ddp_no_sync_accum: Under DDP with ``accum_grad > 1``, reduce gradients
            once per optimizer update (``no_sync`` on the other micro-batches).
    """

    max_seen_hours: Optional[float]
    max_nonfinite_steps: int
    save_interval_updates: int
    ddp_no_sync_accum: bool


class NonFiniteStepsError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


class NonFiniteGuard:
    """Wraps the training iterator; counts the optimizer steps ESPnet skipped.

    At every update boundary (a multiple of ``accum_grad`` micro-batches) the model's
    ``num_updates`` must have advanced since the previous boundary; when it has not,
    the step was skipped for a non-finite gradient. ``max_in_a_row`` skips in a row
    raise ``NonFiniteStepsError``.
    """

    def __init__(self, iterator: Iterable, model, accum_grad: int, max_in_a_row: int):
        """Reads the model's update count and the skips in a row carried over.

        Args:
            iterator: The epoch's training batches.
            model: The SSL model (possibly DDP-wrapped); it must have the
                ``num_updates`` buffer of ``espnet2/ssl/espnet_model.py``.
            accum_grad: Micro-batches per optimizer update.
            max_in_a_row: Skipped steps in a row that raise ``NonFiniteStepsError``.
        """
        self.iterator = iterator
        self.model = getattr(model, "module", model)
        self.accum_grad = accum_grad
        self.max_in_a_row = max_in_a_row
        self.skipped = 0
        # skips in a row carry over epochs (kept on the model, not in checkpoints)
        self.in_a_row = getattr(self.model, "nonfinite_in_a_row", 0)
        self._last = self._updates()

    def __len__(self) -> int:
        return len(self.iterator)

    def _updates(self) -> int:
        return int(self.model.num_updates[0])

    def _check(self, micro_batches: int) -> None:
        if micro_batches == 0 or micro_batches % self.accum_grad:
            return
        updates = self._updates()
        if updates > self._last:
            self.in_a_row = 0
        else:
            self.skipped += 1
            self.in_a_row += 1
        self._last = updates
        self.model.nonfinite_in_a_row = self.in_a_row
        if self.in_a_row >= self.max_in_a_row:
            raise NonFiniteStepsError(
                f"{self.in_a_row} optimizer steps in a row had a non-finite loss or "
                f"gradient and were skipped (after {updates} updates). Lower the "
                "learning rate or warm up longer, enable grad_clip, check the data "
                "for NaN samples, or raise --max_nonfinite_steps. The checkpoints "
                "of finished epochs are kept; fix the cause and run again to resume."
            )

    def __iter__(self) -> Iterator:
        # checked before the next batch is fetched, so that a mid-epoch checkpoint
        # written while fetching (MidEpochSaver) holds the count after this step
        micro_batches = 0
        iterator = iter(self.iterator)
        while True:
            self._check(micro_batches)
            try:
                batch = next(iterator)
            except StopIteration:
                return
            yield batch
            micro_batches += 1


def seen_audio_of(model: torch.nn.Module):
    """The ``SeenAudio`` counter of a (possibly DDP-wrapped) SSL model, or None."""
    return getattr(getattr(model, "module", model), "seen_audio", None)


class SeenHoursBudget:
    """Wraps the training iterator; stops it once the budget of hours is spent.

    Stops only between optimizer updates (after a multiple of ``accum_grad``
    micro-batches of the epoch), so no accumulated gradient is thrown away. Every
    rank sees the same global counter, so every rank stops at the same batch.
    """

    def __init__(
        self, iterator: Iterable, seen_audio, max_seen_hours: float, accum_grad: int
    ):
        """Keeps the counter to read at each update boundary.

        Args:
            iterator: The epoch's training batches.
            seen_audio: The model's ``SeenAudio`` counter (``seen_audio_of``).
            max_seen_hours: The budget in hours of audio seen, all ranks.
            accum_grad: Micro-batches per optimizer update.
        """
        self.iterator = iterator
        self.seen_audio = seen_audio
        self.max_seen_hours = max_seen_hours
        self.accum_grad = accum_grad
        self.reached = False

    def __len__(self) -> int:
        return len(self.iterator)  # ESPnet derives its log interval from it

    def exceeded(self) -> bool:
        """True once the counter has reached ``max_seen_hours``."""
        return self.seen_audio.seen_hours() >= self.max_seen_hours

    def _check(self, micro_batches: int) -> bool:
        """True (and logged once) when at an update boundary the budget is spent."""
        if micro_batches % self.accum_grad or not self.exceeded():
            return False
        self.reached = True
        logging.info(
            f"max_seen_hours={self.max_seen_hours:g} reached: "
            f"{self.seen_audio.seen_hours():.4f} h of audio seen; training stops "
            "after this epoch's validation and checkpoint"
        )
        return True

    def __iter__(self) -> Iterator:
        micro_batches = 0
        for batch in self.iterator:
            if self._check(micro_batches):
                return
            yield batch
            micro_batches += 1
        self._check(micro_batches)  # the epoch's last batch may spend the budget


def is_main_rank() -> bool:
    """True without torch.distributed, or on rank 0 (the rank that writes logs)."""
    return not dist.is_initialized() or dist.get_rank() == 0


class SSLTrainer(Trainer):
    """ESPnet's Trainer plus ``--max_seen_hours``, ``--max_nonfinite_steps`` and a
    seen-hours log per epoch."""

    @classmethod
    @typechecked
    def build_options(cls, args: argparse.Namespace) -> TrainerOptions:
        """The parsed command line as ``SSLTrainerOptions`` (ESPnet's interface)."""
        return build_dataclass(SSLTrainerOptions, args)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser):
        """Adds ``--max_seen_hours``, ``--save_interval_updates``,
        ``--max_nonfinite_steps`` and ``--ddp_no_sync_accum`` to ESPnet's trainer
        options."""
        group = parser.add_argument_group("Seen-audio budget")
        group.add_argument(
            "--max_seen_hours",
            type=float_or_none,
            default=None,
            help="End training once this many hours of audio (all GPUs, after "
            "cropping) have been trained on; null: no limit (max_epoch decides)",
        )
        group.add_argument(
            "--save_interval_updates",
            type=int,
            default=0,
            help="Also write <output_dir>/checkpoint_mid_epoch.pth every this many "
            "optimizer updates, from which --resume true continues a killed run "
            "with the next batch of its epoch; 0: only ESPnet's per-epoch checkpoint",
        )
        group.add_argument(
            "--max_nonfinite_steps",
            type=int,
            default=20,
            help="Stop with an error after this many optimizer steps in a row with "
            "a non-finite loss or gradient (each is skipped, not applied)",
        )
        group = parser.add_argument_group("Gradient accumulation under DDP")
        group.add_argument(
            "--ddp_no_sync_accum",
            type=str2bool,
            default=True,
            help="With several GPUs (DDP) and accum_grad > 1, all-reduce the "
            "gradients once per optimizer update: the other micro-batches run "
            "under DistributedDataParallel.no_sync(). false: ESPnet's path, one "
            "all-reduce per micro-batch (same weights up to summation order)",
        )

    @classmethod
    def _log_epoch_end(cls, model, seen_audio, output_dir, epoch) -> None:
        """Appends the exact counts at the end of a training epoch to
        ``<output_dir>/seen_audio.jsonl`` (one JSON object per epoch: ``epoch``,
        ``seen_hours``, ``num_updates``, ``seen_samples``), for plots against hours
        seen."""
        if not is_main_rank():
            return
        module = getattr(model, "module", model)
        record = dict(
            epoch=epoch,
            seen_hours=seen_audio.seen_hours(),
            seen_samples=int(seen_audio.seen_samples),
            num_updates=int(getattr(module, "num_updates", torch.zeros(1))[0]),
        )
        with open(Path(output_dir) / SEEN_AUDIO_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @classmethod
    def run(cls, *args, **kwargs) -> None:
        """ESPnet's training loop, with every checkpoint saved atomically and what a
        kill left behind (temporary files, a missing epoch model) tidied first."""
        options = kwargs["trainer_options"]
        output_dir = Path(options.output_dir)
        if is_main_rank() and output_dir.is_dir():
            for tmp in remove_temporaries(output_dir):
                logging.warning(f"removed {tmp}, left by a save that was interrupted")
            if options.resume:
                restored = restore_epoch_snapshot(output_dir)
                if restored is not None:
                    logging.warning(f"wrote {restored} from checkpoint.pth (killed)")
        with atomic_torch_saves():
            super().run(*args, **kwargs)
        if is_main_rank():  # checkpoint.pth now holds every finished epoch
            (output_dir / MID_EPOCH_CHECKPOINT).unlink(missing_ok=True)

    @classmethod
    def _pending_state(cls, path: Path, epoch: int, resume: bool):
        """The mid-epoch state to continue this epoch from, or None; a stale file
        (an earlier epoch's, or any when not resuming) is deleted by rank 0."""
        state = MidEpochState.load(path) if path.exists() else None
        if dist.is_initialized():
            dist.barrier()  # every rank has read it before rank 0 may delete it
        if state is None or (resume and state.epoch == epoch):
            return state
        if is_main_rank():
            if not resume:
                logging.warning(f"{path} is from an earlier run (no --resume): removed")
            path.unlink(missing_ok=True)
        return None

    @classmethod
    def _resumable_state(cls, path: Path, iterator, options, epoch: int):
        """The mid-epoch state this epoch continues from and the rest of its loader,
        or (None, iterator) when there is none or it does not fit (logged)."""
        state = cls._pending_state(path, epoch, options.resume)
        if state is None:
            return None, iterator
        rest = skip_batches(iterator, state.batches_done)
        problem = state.mismatch(len(iterator), world()[1])
        if rest is None:
            problem = "this data iterator cannot skip batches"
        if problem is None:
            return state, rest
        logging.warning(
            f"not resuming epoch {epoch} from {path}: {problem}; the epoch starts "
            "from its first batch"
        )
        return None, iterator

    @classmethod
    def _mid_epoch_saver(cls, model, iterator, options, kwargs):
        """Wrap the epoch's loader in a MidEpochSaver, first resuming the epoch from
        ``checkpoint_mid_epoch.pth`` when one fits it.

        Returns:
            (the saver, whether the epoch had applied updates before the resume).
        """
        module = getattr(model, "module", model)
        reporter, epoch_batches = kwargs["reporter"], len(iterator)
        epoch = reporter.get_epoch()
        path = Path(options.output_dir) / MID_EPOCH_CHECKPOINT
        state, iterator = cls._resumable_state(path, iterator, options, epoch)
        parts = TrainingParts(
            module, kwargs["optimizers"], kwargs["schedulers"], kwargs["scaler"],
            reporter,
        )  # fmt: skip
        start_updates, start, rng = parts.num_updates(), 0, None
        if state is not None:
            state.apply(parts)
            start_updates, start = state.updates_at_epoch_start, state.batches_done
            rng = state.rng[world()[0]]
            logging.info(
                f"resumed epoch {epoch} from {path} after {start} of {epoch_batches} "
                f"batches ({parts.num_updates()} updates)"
            )

        def snapshot(batches_done: int, rngs: list) -> Optional[MidEpochState]:
            if not is_main_rank():
                return None
            return MidEpochState.capture(
                parts, epoch, batches_done, start_updates, rngs, epoch_batches
            )

        saver = MidEpochSaver(
            iterator, snapshot, parts.num_updates, options.accum_grad,
            options.save_interval_updates, path, start, rng,
        )  # fmt: skip
        return saver, parts.num_updates() > start_updates

    @classmethod
    def _espnet_epoch(cls, model, iterator, options, kwargs) -> bool:
        """ESPnet's ``train_one_epoch``; under DDP with ``accum_grad > 1`` (and
        ``--ddp_no_sync_accum``) its micro-batches but the last of each update run
        under ``no_sync`` (the outermost wrapper: its count is ESPnet's ``iiter``).

        Returns:
            ESPnet's ``all_steps_are_invalid``.
        """
        no_sync = None
        if options.ddp_no_sync_accum and accumulates_without_sync(
            model, options.accum_grad
        ):
            no_sync = NoSyncAccumulation(iterator, model, options.accum_grad)
            iterator = no_sync
        try:
            return super().train_one_epoch(
                model=model, iterator=iterator, options=options, **kwargs
            )
        finally:
            if no_sync is not None:
                no_sync.close()  # never leave the model in no_sync

    @classmethod
    def train_one_epoch(cls, model, iterator, options, **kwargs) -> bool:
        """ESPnet's epoch; True (stop training) also when the budget is spent."""
        scaler = kwargs.get("scaler")
        if scaler is not None and not scaler.is_enabled():
            # torch.cuda.amp.GradScaler disables itself without CUDA (use_amp on a
            # CPU); ESPnet's skip branch would then call optimizer.step() on the
            # non-finite gradient it means to skip (weights become NaN)
            logging.warning("use_amp has no effect without CUDA: training in float32")
            kwargs["scaler"] = None
        seen_audio = seen_audio_of(model)
        had_updates = False
        if hasattr(getattr(model, "module", model), "num_updates"):
            iterator, had_updates = cls._mid_epoch_saver(
                model, iterator, options, kwargs
            )
        guard = None
        if getattr(getattr(model, "module", model), "update_hook_installed", False):
            guard = NonFiniteGuard(
                iterator, model, options.accum_grad, options.max_nonfinite_steps
            )
            iterator = guard
        budget = None
        if options.max_seen_hours is not None and seen_audio is not None:
            budget = SeenHoursBudget(
                iterator, seen_audio, options.max_seen_hours, options.accum_grad
            )
            iterator = budget
        all_steps_are_invalid = cls._espnet_epoch(model, iterator, options, kwargs)
        if guard is not None and guard.skipped:
            logging.warning(
                f"{guard.skipped} optimizer steps of this epoch were skipped for a "
                "non-finite loss or gradient"
            )
        if seen_audio is not None:
            logging.info(f"seen so far: {seen_audio.seen_hours():.4f} h of audio")
            epoch = getattr(kwargs.get("reporter"), "epoch", None)
            cls._log_epoch_end(model, seen_audio, options.output_dir, epoch)
        if budget is not None and budget.reached:
            logging.info(
                "stopping at the seen-hours budget (ESPnet's next message calls "
                "this epoch's steps invalid; they are not)"
            )
            return True
        return all_steps_are_invalid and not had_updates
