"""ESPnet's Trainer with a budget in hours of audio seen (``--max_seen_hours``) and a
stop after repeated non-finite steps (``--max_nonfinite_steps``).

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

from espnet2.train.trainer import Trainer, TrainerOptions
from espnet2.utils.build_dataclass import build_dataclass
from espnet2.utils.types import float_or_none


@dataclasses.dataclass
class SSLTrainerOptions(TrainerOptions):
    max_seen_hours: Optional[float]
    max_nonfinite_steps: int


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
        micro_batches = 0
        for batch in self.iterator:
            self._check(micro_batches)
            yield batch
            micro_batches += 1
        self._check(micro_batches)


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
        self.iterator = iterator
        self.seen_audio = seen_audio
        self.max_seen_hours = max_seen_hours
        self.accum_grad = accum_grad
        self.reached = False

    def __len__(self) -> int:
        return len(self.iterator)  # ESPnet derives its log interval from it

    def exceeded(self) -> bool:
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


SEEN_AUDIO_LOG = "seen_audio.jsonl"


def is_main_rank() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class SSLTrainer(Trainer):
    """ESPnet's Trainer plus ``--max_seen_hours``, ``--max_nonfinite_steps`` and a
    seen-hours log per epoch."""

    @classmethod
    @typechecked
    def build_options(cls, args: argparse.Namespace) -> TrainerOptions:
        return build_dataclass(SSLTrainerOptions, args)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group("Seen-audio budget")
        group.add_argument(
            "--max_seen_hours",
            type=float_or_none,
            default=None,
            help="End training once this many hours of audio (all GPUs, after "
            "cropping) have been trained on; null: no limit (max_epoch decides)",
        )
        group.add_argument(
            "--max_nonfinite_steps",
            type=int,
            default=20,
            help="Stop with an error after this many optimizer steps in a row with "
            "a non-finite loss or gradient (each is skipped, not applied)",
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
    def train_one_epoch(cls, model, iterator, options, **kwargs) -> bool:
        """ESPnet's epoch; True (stop training) also when the budget is spent."""
        seen_audio = seen_audio_of(model)
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
        all_steps_are_invalid = super().train_one_epoch(
            model=model, iterator=iterator, options=options, **kwargs
        )
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
        return all_steps_are_invalid
