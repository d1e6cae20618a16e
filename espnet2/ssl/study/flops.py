"""FLOPs of an SSL model: counted by torch on a real forward, and an analytic count.

``count_flops`` runs a function under ``torch.utils.flop_counter.FlopCounterMode``
(matmuls, convolutions, attention; 2 FLOPs per multiply-add), with the CPU flash
attention kernel added (torch's counter knows only the CUDA ones).
``analytic_transformer_flops`` is the textbook count of the wav2vec 2.0 / HuBERT
architecture (CNN, projection, convolutional positions, transformer blocks), used to
check the counter:

    CNN layer l:   2 * T_l * C_out * C_in * K_l
    projection:    2 * T * C * D
    positions:     2 * T * D * (D / groups) * K_pos
    block:         2 * T * (4 D^2 + 2 D F) + 4 * T^2 * D   (q, k, v, out; FFN; QK^T, AV)

References: A. Baevski et al., wav2vec 2.0, arXiv:2006.11477 (architecture);
J. Kaplan et al., arXiv:2001.08361, section 2.1 (per-token transformer FLOPs).
"""

from typing import Callable, Dict, Sequence

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from espnet2.ssl.frame_geometry import frame_count

ATEN = torch.ops.aten


def _cpu_flash_forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_flash_backward(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad, q, k, v)


# torch's counter knows the CUDA SDPA kernels but not the CPU flash one
CPU_SDPA_FLOPS = {
    ATEN._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    ATEN._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs torch counts while ``fn()`` runs (forward, and backward if it does one)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        fn()
    return float(counter.get_total_flops())


def cnn_flops(num_samples: int, shapes: Sequence[Sequence[int]]) -> float:
    """FLOPs (2 per multiply-add) of unpadded 1-D convolutions, first layer first."""
    flops, length, channels_in = 0.0, num_samples, 1
    for channels, kernel, stride in shapes:
        length = frame_count(length, kernel, stride)
        flops += 2.0 * length * channels * channels_in * kernel
        channels_in = channels
    return flops


def analytic_transformer_flops(
    num_samples: int,
    num_frames: int,
    cnn_shapes: Sequence[Sequence[int]],
    encoder_conf: Dict,
) -> Dict[str, float]:
    """Forward FLOPs of one utterance through CNN, projection and transformer.

    Args:
        num_samples: Audio length (samples).
        num_frames: Encoder frames T (the CNN's output length).
        cnn_shapes: ``frontend_conf.shapes``.
        encoder_conf: The transformer's ``output_size`` (D), ``linear_units`` (F),
            ``num_blocks``, ``pos_conv_kernel_size`` [128] and ``pos_conv_groups`` [16].

    Returns:
        FLOPs per part (``cnn``, ``projection``, ``positions``, ``blocks``) and
        ``total``.
    """
    d, ffn = encoder_conf["output_size"], encoder_conf["linear_units"]
    t = num_frames
    kernel = encoder_conf.get("pos_conv_kernel_size", 128)
    groups = encoder_conf.get("pos_conv_groups", 16)
    parts = {
        "cnn": cnn_flops(num_samples, cnn_shapes),
        "projection": 2.0 * t * cnn_shapes[-1][0] * d,
        "positions": 2.0 * t * d * (d // groups) * kernel if kernel else 0.0,
        "blocks": encoder_conf["num_blocks"]
        * (2.0 * t * (4 * d * d + 2 * d * ffn) + 4.0 * t * t * d),
    }
    parts["total"] = sum(parts.values())
    return parts
