"""Batch size in seconds of audio: per-device batch, accum_grad, and LR scaling.

A batch is specified as the audio one optimizer update sees, ``batch_seconds``
(wav2vec 2.0 BASE: 1.6 h = 5760 s; the batch-size study: 87.5 s to 80 min). It is
realised as ``num_devices`` x ``accum_grad`` micro-batches of at most
``max_device_batch_seconds`` each (what fits in one GPU's memory):

    accum_grad = ceil(batch_seconds / (num_devices * max_device_batch_seconds))
    device_batch_seconds = batch_seconds / (num_devices * accum_grad)

ESPnet's ``batch_bins`` is global (each batch is split over the ranks), so with
``batch_type: numel`` it is ``num_devices * device_batch_seconds * sample_rate``
samples per micro-batch. With fixed crops (``crop_seconds``) every utterance costs
one crop, so the micro-batch is a number of utterances (``batch_type: unsorted``,
``batch_size``), rounded to the nearest whole utterance.

The learning rate is given for a reference batch and scaled to the actual one by a
rule of the batch-size study (arXiv:2402.13723, reference 100 min at 5e-4): constant,
square root (lr * sqrt(B / B_ref)) or linear (lr * B / B_ref).
"""

import dataclasses
import math
from typing import Dict, Optional

LR_SCALING_RULES = ("none", "sqrt", "linear")
REFERENCE_BATCH_SECONDS = 6000.0  # 100 min, the batch-size study's LR reference


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How a target batch in seconds is realised (every field in the log)."""

    batch_seconds: float  # target audio per update
    num_devices: int
    accum_grad: int
    device_batch_seconds: float  # audio per device per micro-batch
    batch_type: str  # ESPnet's: numel (samples) or unsorted (utterances)
    batch_bins: int  # numel: samples per micro-batch, all devices together
    batch_size: int  # unsorted: utterances per micro-batch, all devices together
    update_seconds: float  # what one update realises (== target for numel)

    def as_dict(self) -> Dict:
        """The fields as a plain ``{name: value}`` dict (for logs and YAML)."""
        return dataclasses.asdict(self)


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def plan_batch(
    batch_seconds: float,
    num_devices: int,
    max_device_batch_seconds: Optional[float] = None,
    sample_rate: int = 16000,
    crop_seconds: Optional[float] = None,
) -> BatchPlan:
    """Turns a target batch in seconds into ESPnet's batch options.

    Args:
        batch_seconds: Audio per optimizer update, all devices and micro-batches.
        num_devices: GPUs (or CPU processes) training together.
        max_device_batch_seconds: Most audio one device holds in a micro-batch;
            None: no limit (accum_grad 1).
        sample_rate: Samples per second.
        crop_seconds: Fixed crop length, or None for whole utterances.

    Returns:
        The plan. Without crops ``num_devices * device_batch_seconds * accum_grad``
        is ``batch_seconds`` (to a sample); with crops the update realises a whole
        number of crops, within ``accum_grad / 2`` crops of ``batch_seconds``
        (at least one crop per device).
    """
    _check_positive(
        batch_seconds=batch_seconds,
        num_devices=num_devices,
        max_device_batch_seconds=max_device_batch_seconds,
        crop_seconds=crop_seconds,
        sample_rate=sample_rate,
    )
    if crop_seconds is None:
        return _plan_numel(
            batch_seconds, num_devices, max_device_batch_seconds, sample_rate
        )
    return _plan_crops(
        batch_seconds, num_devices, max_device_batch_seconds, crop_seconds
    )


def _plan_numel(
    batch_seconds: float,
    num_devices: int,
    max_device_batch_seconds: Optional[float],
    sample_rate: int,
) -> BatchPlan:
    """Whole utterances, batched by samples (``batch_type: numel``)."""
    accum_grad = 1
    if max_device_batch_seconds is not None:
        ratio = batch_seconds / (num_devices * max_device_batch_seconds)
        accum_grad = max(1, math.ceil(ratio - 1e-9))
    device_seconds = batch_seconds / (num_devices * accum_grad)
    bins = round(device_seconds * num_devices * sample_rate)
    realised = bins * accum_grad / sample_rate
    return BatchPlan(
        batch_seconds,
        num_devices,
        accum_grad,
        device_seconds,
        "numel",
        bins,
        0,
        realised,
    )


def _plan_crops(
    batch_seconds: float,
    num_devices: int,
    max_device_batch_seconds: Optional[float],
    crop_seconds: float,
) -> BatchPlan:
    """Fixed crops, batched by utterances (``batch_type: unsorted``)."""
    crops = batch_seconds / crop_seconds  # per update, fractional
    accum_grad = 1
    if max_device_batch_seconds is not None:
        per_device = math.floor(max_device_batch_seconds / crop_seconds + 1e-9)
        if per_device < 1:
            raise ValueError(
                f"max_device_batch_seconds={max_device_batch_seconds:g} cannot hold "
                f"one crop of {crop_seconds:g} s"
            )
        accum_grad = max(1, math.ceil(crops / (num_devices * per_device) - 1e-9))
    utterances = max(num_devices, round(crops / accum_grad))
    device_seconds = utterances * crop_seconds / num_devices
    realised = utterances * accum_grad * crop_seconds
    return BatchPlan(
        batch_seconds,
        num_devices,
        accum_grad,
        device_seconds,
        "unsorted",
        0,
        utterances,
        realised,
    )


def scale_lr(
    lr: float,
    batch_seconds: float,
    reference_batch_seconds: float = REFERENCE_BATCH_SECONDS,
    rule: str = "none",
) -> float:
    """The learning rate for ``batch_seconds`` given ``lr`` at the reference batch.

    Args:
        lr: Learning rate tuned for ``reference_batch_seconds``.
        batch_seconds: The actual batch (audio per update).
        reference_batch_seconds: The batch ``lr`` was tuned for.
        rule: ``none`` (constant), ``sqrt`` or ``linear``.
    """
    _check_positive(batch_seconds=batch_seconds, reference=reference_batch_seconds)
    ratio = batch_seconds / reference_batch_seconds
    if rule == "none":
        return lr
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    if rule == "linear":
        return lr * ratio
    raise ValueError(f"lr scaling rule must be one of {LR_SCALING_RULES}, got {rule!r}")
