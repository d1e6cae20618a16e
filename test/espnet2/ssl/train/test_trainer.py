"""Tests for espnet2/ssl/train/trainer.py: the seen-hours budget and the non-finite
guard
as iterator wrappers (end to end through ssl_train: test_ssl_train_budget.py)."""

import pytest
import torch

from espnet2.ssl.train.seen_audio import SeenAudio
from espnet2.ssl.train.trainer import (
    NonFiniteGuard,
    NonFiniteStepsError,
    SeenHoursBudget,
)


class Counter(torch.nn.Module):
    """What the guard reads of an SSL model: its num_updates buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("num_updates", torch.tensor([0]))


def run_epoch(guard, model, applied):
    """Consumes the guard like ESPnet's loop: after every accum_grad-th micro-batch
    the optimizer steps (num_updates + 1) when ``applied`` says so."""
    for i, _ in enumerate(guard, 1):
        if i % guard.accum_grad == 0 and applied[i // guard.accum_grad - 1]:
            model.num_updates.add_(1)


def test_skipped_steps_are_counted_at_update_boundaries_only():
    model = Counter()
    guard = NonFiniteGuard(range(8), model, accum_grad=2, max_in_a_row=10)
    run_epoch(guard, model, applied=[True, False, True, False])
    assert (guard.skipped, guard.in_a_row) == (2, 1)


def test_skips_in_a_row_carry_over_epochs_and_stop_the_run():
    model = Counter()
    run_epoch(NonFiniteGuard(range(4), model, 1, 3), model, [True, True, False, False])
    guard = NonFiniteGuard(range(4), model, 1, 3)
    with pytest.raises(NonFiniteStepsError, match="3 optimizer steps in a row"):
        run_epoch(guard, model, [False, False, False, False])


def test_an_applied_step_resets_the_run_of_skips():
    model = Counter()
    guard = NonFiniteGuard(range(6), model, 1, 3)
    run_epoch(guard, model, [False, False, True, False, False, True])
    assert (guard.skipped, guard.in_a_row) == (4, 0)


def test_the_budget_stops_only_between_updates():
    seen = SeenAudio(sample_rate=1)
    budget = SeenHoursBudget(range(10), seen, max_seen_hours=3 / 3600, accum_grad=2)
    taken = []
    for batch in budget:
        taken.append(batch)
        seen.add(torch.tensor([1]))  # one "second" per micro-batch
    assert taken == [0, 1, 2, 3] and budget.reached  # 3 s reached mid-update
