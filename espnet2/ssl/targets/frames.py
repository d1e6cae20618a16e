"""Frame counts: how many frames a convolutional frontend or Kaldi framing gives.

Labels must have exactly one entry per frame of the SSL model's CNN, so every tool
that writes or checks labels counts frames here, with the exact arithmetic of
unpadded 1-D convolutions (no closed form that could round differently).

References:
    A. Baevski et al., "wav2vec 2.0", arXiv:2006.11477, section 4.2 (the CNN:
    kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2), 20 ms frames).
    W.-N. Hsu et al., "HuBERT", arXiv:2106.07447 (MFCC targets at 100 Hz, model
    frames at 50 Hz).
"""

from typing import Sequence

# (channels, kernel, stride) of the wav2vec 2.0 / HuBERT BASE CNN: 400-sample
# receptive field, 320-sample hop (25 ms / 20 ms at 16 kHz)
WAV2VEC2_CNN_SHAPES = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

# Kaldi framing at 16 kHz (torchaudio.compliance.kaldi defaults, snip_edges=True)
KALDI_FRAME_LENGTH = 400  # samples, 25 ms
KALDI_FRAME_SHIFT = 160  # samples, 10 ms


def cnn_frame_count(num_samples: int, shapes: Sequence[Sequence[int]]) -> int:
    """Output frames of unpadded 1-D convolutions on ``num_samples`` inputs.

    Args:
        num_samples: Input length in samples (>= 0).
        shapes: ``(channels, kernel, stride)`` per layer, first layer first (the
            ``frontend_conf.shapes`` of ESPnet's ``wav2vec_cnn`` frontend).

    Returns:
        Frames after the last layer; 0 when the input is shorter than the receptive
        field. For the wav2vec 2.0 CNN this is ``(num_samples - 400) // 320 + 1``.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    length = num_samples
    for _, kernel, stride in shapes:
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def kaldi_frame_count(
    num_samples: int,
    frame_length: int = KALDI_FRAME_LENGTH,
    frame_shift: int = KALDI_FRAME_SHIFT,
) -> int:
    """Frames of Kaldi-style framing with ``snip_edges=True`` (torchaudio's default).

    Args:
        num_samples: Input length in samples (>= 0).
        frame_length: Window in samples (400 = 25 ms at 16 kHz).
        frame_shift: Hop in samples (160 = 10 ms at 16 kHz).

    Returns:
        ``(num_samples - frame_length) // frame_shift + 1``, or 0 when shorter than
        one window.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if num_samples < frame_length:
        return 0
    return (num_samples - frame_length) // frame_shift + 1
