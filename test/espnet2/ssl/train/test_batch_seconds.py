"""Tests for espnet2/ssl/train/batch_seconds.py (batch in seconds, accum_grad, LR
scaling)."""

import itertools
import math

import pytest

from espnet2.ssl.train.batch_seconds import plan_batch, scale_lr

TARGETS = (87.5, 150, 300, 1000, 5760, 4800.3)
DEVICES = (1, 2, 3, 8)
CAPS = (None, 20, 87.5, 90, 400)


@pytest.mark.parametrize(
    "batch_seconds, devices, cap", itertools.product(TARGETS, DEVICES, CAPS)
)
def test_numel_plan_multiplies_back_to_the_target_within_a_sample(
    batch_seconds, devices, cap
):
    plan = plan_batch(batch_seconds, devices, cap)
    assert plan.batch_type == "numel"
    product = plan.device_batch_seconds * devices * plan.accum_grad
    assert product == pytest.approx(batch_seconds, rel=1e-12)
    assert abs(plan.batch_bins * plan.accum_grad - batch_seconds * 16000) <= (
        plan.accum_grad / 2
    )
    assert plan.update_seconds == pytest.approx(
        batch_seconds, abs=plan.accum_grad / 16000
    )
    if cap is not None:
        assert plan.device_batch_seconds <= cap + 1e-9
        if plan.accum_grad > 1:  # the smallest accumulation that fits
            assert batch_seconds / (devices * (plan.accum_grad - 1)) > cap
    else:
        assert plan.accum_grad == 1


@pytest.mark.parametrize(
    "batch_seconds, devices, cap, crop",
    itertools.product(TARGETS, DEVICES, (None, 20, 90), (1.0, 2.0, 4.0, 15.6)),
)
def test_crop_plan_is_a_whole_number_of_crops_within_half_a_crop_per_micro_batch(
    batch_seconds, devices, cap, crop
):
    if cap is not None and cap < crop:
        return
    plan = plan_batch(batch_seconds, devices, cap, crop_seconds=crop)
    assert plan.batch_type == "unsorted" and plan.batch_size >= devices
    realised = plan.batch_size * plan.accum_grad * crop
    assert plan.update_seconds == pytest.approx(realised)
    if batch_seconds >= devices * crop * plan.accum_grad:
        assert abs(realised - batch_seconds) <= plan.accum_grad * crop / 2 + 1e-9
    if cap is not None:  # the busiest device (batches are split over ranks)
        assert math.ceil(plan.batch_size / devices) * crop <= cap + 1e-9


def test_wav2vec2_base_batch_is_1_6_hours_as_eight_gpus_times_eight_micro_batches():
    plan = plan_batch(5760, 8, max_device_batch_seconds=90)
    assert (plan.accum_grad, plan.device_batch_seconds) == (8, 90)
    assert plan.batch_bins == 11_520_000  # train_ssl_wav2vec2_summary_mixing_base.yaml


def test_crop_plan_puts_at_least_one_crop_on_every_device():
    plan = plan_batch(2, 8, crop_seconds=1.0)
    assert plan.batch_size == 8 and plan.update_seconds == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_seconds=0, num_devices=1), "batch_seconds must be > 0"),
        (dict(batch_seconds=10, num_devices=0), "num_devices must be > 0"),
        (dict(batch_seconds=10, num_devices=1, max_device_batch_seconds=-1), "> 0"),
        (
            dict(
                batch_seconds=10,
                num_devices=1,
                max_device_batch_seconds=1,
                crop_seconds=2,
            ),
            "cannot hold one crop",
        ),
    ],
)
def test_bad_plans_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_batch(**kwargs)


# The batch-size study's LR grid (anchors B): 5e-4 at 100 min, scaled linearly or by
# the square root; 87.5 s -> 7.29e-6 / 6.04e-5, 20 min -> 1e-4 / 2.24e-4.
@pytest.mark.parametrize(
    "batch_seconds, rule, published",
    [
        (87.5, "linear", 7.29e-6),
        (87.5, "sqrt", 6.04e-5),
        (1200, "linear", 1e-4),
        (1200, "sqrt", 2.24e-4),
        (2400, "sqrt", 3.16e-4),
        (150, "sqrt", 7.91e-5),
        (87.5, "none", 5e-4),
    ],
)
def test_lr_scaling_reproduces_the_batch_size_study_grid(
    batch_seconds, rule, published
):
    lr = scale_lr(5e-4, batch_seconds, reference_batch_seconds=6000, rule=rule)
    assert lr == pytest.approx(published, rel=5e-3)


def test_unknown_lr_scaling_rule_is_rejected():
    with pytest.raises(ValueError, match="sqrt"):
        scale_lr(1e-3, 100, 6000, "quadratic")
