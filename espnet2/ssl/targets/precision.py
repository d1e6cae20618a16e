"""bf16 feature dumps on GPUs, checked against float32 on the first batch.

Model dumpers (``ssl``, ``asr``) run under ``torch.autocast(dtype=torch.bfloat16)``
on CUDA by default: the matmuls and convolutions of a BASE model run about twice as
fast with half the activation memory, and k-means only needs the features to land in
the same clusters. bf16 keeps 8 bits of mantissa (a relative rounding of 2**-9 per
operation), so each shard first computes its first batch both ways and compares:

    relative error = ||bf16 - fp32||_F / ||fp32||_F   over every valid frame

It is logged, and a value above the tolerance (``--bf16_tolerance``, default 0.05)
stops the dump with a message: the features would then differ by more than the
spread of typical clusters, and ``--bf16 false`` dumps in float32. MFCCs are always
float32 on the CPU. On a CPU, bf16 is off unless asked for (CPU autocast is slow
without AMX units, and it is what the unit tests use to exercise this check).
"""

import logging
from typing import Optional, Sequence

import numpy as np
import torch

from espnet2.ssl.targets.dumpers.base import FeatureDumper, FeatureDumpError

DEFAULT_TOLERANCE = 0.05


def resolve_bf16(requested: Optional[bool], device: torch.device) -> bool:
    """Whether to run a model dumper under bf16 autocast.

    Args:
        requested: The ``--bf16`` option: True, False, or None (on for CUDA).
        device: The dumper's device.

    Returns:
        True for bf16 autocast, False for float32.
    """
    if requested is None:
        return device.type == "cuda"
    return requested


def relative_error(
    reference: Sequence[np.ndarray], approximate: Sequence[np.ndarray]
) -> float:
    """Frobenius norm of the difference over that of the reference, all frames.

    Args:
        reference: Per-utterance features (T_b, D), e.g. float32.
        approximate: The same utterances computed another way, same shapes.

    Returns:
        ``||approximate - reference|| / ||reference||`` over all utterances (0.0
        when both are zero; inf when only the reference is).
    """
    if len(reference) != len(approximate):
        raise ValueError(f"{len(reference)} reference and {len(approximate)} others")
    diff, norm = 0.0, 0.0
    for ref, approx in zip(reference, approximate):
        if ref.shape != approx.shape:
            raise ValueError(f"shapes differ: {ref.shape} and {approx.shape}")
        diff += float(np.sum((approx.astype(np.float64) - ref) ** 2))
        norm += float(np.sum(ref.astype(np.float64) ** 2))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return (diff / norm) ** 0.5


def check_bf16(
    dumper: FeatureDumper,
    speech: torch.Tensor,
    speech_lengths: torch.Tensor,
    bf16_feats: Sequence[np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    where: str = "",
) -> float:
    """Compare bf16 features of a batch with float32 ones; raise beyond tolerance.

    Args:
        dumper: A model dumper with ``bf16`` on; it is run once more in float32.
        speech: The batch's waveforms (B, S), padded.
        speech_lengths: Valid samples (B,).
        bf16_feats: What ``dumper.extract`` gave for the batch under bf16.
        tolerance: Largest relative error accepted.
        where: The shard and utterances, for the log and the message.

    Returns:
        The relative error (see :func:`relative_error`).

    Raises:
        FeatureDumpError: The error exceeds ``tolerance``.
    """
    dumper.bf16 = False
    try:
        reference = dumper.extract(speech, speech_lengths)
    finally:
        dumper.bf16 = True
    error = relative_error(reference, bf16_feats)
    logging.info(
        f"{where}bf16 vs float32 features of the first batch ({len(reference)} "
        f"utterances): relative error {error:.2e} (tolerance {tolerance})"
    )
    if not error <= tolerance:
        raise FeatureDumpError(
            f"{where}the bf16 features differ from float32 ones by {error:.3g} "
            f"(relative Frobenius norm), more than the tolerance {tolerance}. Fix: "
            "dump in float32 with --bf16 false (or check the model for values "
            "beyond bf16's range)."
        )
    return error
