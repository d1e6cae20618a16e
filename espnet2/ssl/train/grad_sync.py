"""One gradient all-reduce per optimizer update under DDP gradient accumulation.

ESPnet's ``Trainer.train_one_epoch`` (``espnet2/train/trainer.py`` of ESPnet 202511)
runs the backward of every micro-batch on the ``DistributedDataParallel`` model, and
DDP all-reduces the gradients in every backward: with ``accum_grad`` k an update
costs k all-reduces of the whole gradient, of which k - 1 only produce sums that
the next one would produce anyway. ``DistributedDataParallel.no_sync()`` turns the
reduction off; gradients then accumulate locally in ``param.grad`` and the first
synchronised backward after it reduces the accumulated sums. fairseq
(``fairseq/trainer.py``, ``train_step``: every sample but the last of
``update_freq``), SpeechBrain (``Brain.no_sync``) and nanow2v2 do the same.

``NoSyncAccumulation`` wraps the epoch's batch iterator as the outermost wrapper,
so that it counts micro-batches exactly as ESPnet's loop counts ``iiter`` (1-based,
the optimizer steps at ``iiter % accum_grad == 0``). It enters ``no_sync()`` before
it hands out a micro-batch that is not the last of its update and leaves it when
the loop asks for the next one: ESPnet's forward and backward of that micro-batch
both run inside, as ``no_sync`` requires, and fetching the next batch (the
wrappers below it: budget, non-finite guard, mid-epoch checkpoint) runs outside.

Why the weights are those of ESPnet's path: DDP averages the gradients over ranks,
a linear map, so reducing the sum of k micro-batch gradients once gives the sum of
the k averages, up to floating-point summation order. Every collective other than
the gradient reduction is untouched: ESPnet's per-micro-batch ``iterator_stop``
all-reduce, its ``recursive_average`` of the stats, DDP's buffer broadcast in every
forward and the model's own counters still run per micro-batch.

Leftover micro-batches: when an epoch's batch count is not a multiple of
``accum_grad``, ESPnet's loop ends without a step and without ``zero_grad``; the
leftover gradients are added to those of the next epoch's first update (or
dropped, after the last epoch). Here they stay local (not reduced) until that
next update's synchronised backward reduces them together with its own: the same
sum as ESPnet's path, where they were averaged at once. A checkpoint written in
between holds no gradients on either path.
"""

import logging
from typing import Iterable, Iterator, Optional

import torch

DDP = torch.nn.parallel.DistributedDataParallel


def accumulates_without_sync(model: torch.nn.Module, accum_grad: int) -> bool:
    """Whether an epoch of ``model`` can skip the reduction of all but the last
    micro-batch of each update.

    Args:
        model: The model as ESPnet's trainer holds it.
        accum_grad: Micro-batches per optimizer update.

    Returns:
        True for a ``DistributedDataParallel`` model with ``accum_grad > 1``;
        False otherwise (one process, ``DataParallel``, or nothing to accumulate).
    """
    return isinstance(model, DDP) and accum_grad > 1


class NoSyncAccumulation:
    """Wraps an epoch's batch iterator: every micro-batch that is not the last of
    its optimizer update is consumed under ``model.no_sync()``.

    Must be the outermost wrapper (the iterator handed to ESPnet's loop), so that
    its count is ESPnet's ``iiter``; ESPnet restarts ``iiter`` at 1 in every epoch
    and after a mid-epoch resume (which resumes at an update boundary), and so does
    this count. Call :meth:`close` when the epoch ends, however it ends, to leave
    ``no_sync`` if a micro-batch was still inside (an exception in the forward, a
    rank stopped by ESPnet's ``iterator_stop``).

    Args:
        iterator: The epoch's batches, ``(utt_ids, batch)`` as ESPnet yields them.
        model: The ``DistributedDataParallel`` model.
        accum_grad: Micro-batches per optimizer update (> 1).
    """

    def __init__(self, iterator: Iterable, model: DDP, accum_grad: int):
        if not isinstance(model, DDP) or accum_grad < 2:
            raise ValueError(
                "NoSyncAccumulation needs a DistributedDataParallel model and "
                f"accum_grad > 1, got {type(model).__name__} and accum_grad="
                f"{accum_grad}; use accumulates_without_sync() to decide"
            )
        self.iterator = iterator
        self.model = model
        self.accum_grad = accum_grad
        self.leftover = 0  # unsynced micro-batches at the end of the epoch
        self._batches: Optional[Iterator] = None

    def __len__(self) -> int:
        return len(self.iterator)  # ESPnet derives its log interval from it

    def __iter__(self) -> Iterator:
        self.close()
        self._batches = self._generate()
        return self._batches

    def _generate(self) -> Iterator:
        micro_batches = 0
        for batch in self.iterator:
            micro_batches += 1
            if micro_batches % self.accum_grad == 0:
                yield batch  # the last of its update: its backward reduces
                continue
            with self.model.no_sync():
                yield batch  # forward and backward run here, unsynchronised
        self.leftover = micro_batches % self.accum_grad
        if self.leftover:
            logging.info(
                f"{self.leftover} micro-batches after this epoch's last update: "
                "their gradients stay on each rank and are reduced with the next "
                "epoch's first update (the same sum as reducing them now)"
            )

    def close(self) -> None:
        """Leaves ``no_sync`` if the epoch stopped with a micro-batch inside it."""
        if self._batches is not None:
            self._batches.close()  # GeneratorExit at the yield exits the context
            self._batches = None
