"""Frame geometry: the CNN's layers, receptive field and stride, and frame counts.

Labels must have exactly one entry per frame of the SSL model's CNN, and crops must
start on a frame boundary, so every tool that writes, crops or checks labels takes the
geometry from here: the CNN layer shapes (``frontend_conf.shapes``, read from a
training config by :func:`config_cnn_shapes`), their receptive field and total stride
(samples), and the frame count of a window sliding without padding
(:func:`frame_count`, the one formula for a CNN and for Kaldi framing).

For unpadded 1-D convolutions the layer-by-layer count ``L' = (L - k) // s + 1``
composes exactly into ``(S - field) // stride + 1`` (nested floor divisions by
positive integers are one floor division by their product), and an input shorter
than the receptive field gives 0 frames either way; the tests check both against
ESPnet's ``CNNFrontend``.

The frame rate of a built model (the frontend's hop and the encoder's subsampling)
is read from its modules by :func:`model_frame_rate`.

References:
    A. Baevski et al., "wav2vec 2.0", arXiv:2006.11477, section 4.2 (the CNN:
    kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2), 20 ms frames).
    W.-N. Hsu et al., "HuBERT", arXiv:2106.07447 (MFCC targets at 100 Hz, model
    frames at 50 Hz).
"""

from __future__ import annotations  # torch only in annotations: not imported

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Tuple, Union

import yaml

if TYPE_CHECKING:  # the text tools (scoring, labels) need not pay torch's import
    import torch

Hz = float
PathLike = Union[str, Path]
Shapes = Tuple[Tuple[int, int, int], ...]

# (channels, kernel, stride) of the wav2vec 2.0 / HuBERT BASE CNN (and the default of
# ESPnet's CNNFrontend): 400-sample receptive field, 320-sample hop (25 ms / 20 ms at
# 16 kHz)
WAV2VEC2_CNN_SHAPES = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

# Kaldi framing at 16 kHz (torchaudio.compliance.kaldi defaults, snip_edges=True)
KALDI_FRAME_LENGTH = 400  # samples, 25 ms
KALDI_FRAME_SHIFT = 160  # samples, 10 ms

# Time subsampling of ESPnet's encoder input layers (espnet/nets/pytorch_backend/
# transformer/subsampling.py), by class name.
SUBSAMPLING_FACTORS = {
    "Conv1dSubsampling1": 1,
    "Conv1dSubsampling2": 2,
    "Conv1dSubsampling3": 3,
    "Conv2dSubsampling": 4,
    "Conv2dSubsampling1": 1,
    "Conv2dSubsampling2": 2,
    "Conv2dSubsampling6": 6,
    "Conv2dSubsampling8": 8,
}


def frame_count(num_samples: int, window: int, hop: int) -> int:
    """Frames of a ``window`` sliding by ``hop`` over ``num_samples``, unpadded.

    Args:
        num_samples: Input length in samples (>= 0).
        window: Samples one frame sees (a CNN's receptive field, Kaldi's
            frame length).
        hop: Samples between frames (a CNN's total stride, Kaldi's frame shift).

    Returns:
        ``(num_samples - window) // hop + 1``, or 0 when shorter than one window.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if num_samples < window:
        return 0
    return (num_samples - window) // hop + 1


def receptive_field(shapes: Sequence[Sequence[int]]) -> int:
    """The fewest input samples for which unpadded convolutions give one frame.

    Args:
        shapes: ``(channels, kernel, stride)`` per layer, first layer first.

    Returns:
        The receptive field in samples; 400 for the wav2vec 2.0 CNN.
    """
    samples = 1
    for _, kernel, stride in reversed(list(shapes)):
        samples = (samples - 1) * stride + kernel
    return samples


def total_stride(shapes: Sequence[Sequence[int]]) -> int:
    """Samples between consecutive output frames: the product of the strides.

    Args:
        shapes: ``(channels, kernel, stride)`` per layer, first layer first.

    Returns:
        The hop in samples; 320 for the wav2vec 2.0 CNN.
    """
    return math.prod(stride for _, _, stride in shapes)


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
    return frame_count(num_samples, receptive_field(shapes), total_stride(shapes))


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
    return frame_count(num_samples, frame_length, frame_shift)


def config_cnn_shapes(config: Mapping[str, Any], source: str) -> Shapes:
    """The CNN layers ``(channels, kernel, stride)`` of a training config.

    Args:
        config: A training config (``config.yaml`` read as a dict, or
            ``vars(args)`` of the task): ``encoder_conf.extractor_conv_layer_config``
            when set (an encoder with its own CNN), else ``frontend_conf.shapes``;
            neither gives the wav2vec 2.0 CNN (``CNNFrontend``'s default).
        source: Where the config came from, for messages (its file).

    Returns:
        The shapes as integers, first layer first.

    Raises:
        ValueError: A layer that is not ``[channels, kernel, stride]``.
    """
    shapes = (config.get("encoder_conf") or {}).get("extractor_conv_layer_config")
    if shapes is None:
        shapes = (config.get("frontend_conf") or {}).get("shapes")
    if shapes is None:
        return WAV2VEC2_CNN_SHAPES
    if not all(len(layer) == 3 for layer in shapes):
        raise ValueError(
            f"{source}: frontend_conf.shapes must be a list of "
            f"[channels, kernel, stride], got {shapes}"
        )
    return tuple((int(c), int(k), int(s)) for c, k, s in shapes)


def read_cnn_shapes(ssl_config: Optional[PathLike] = None) -> Shapes:
    """The CNN layers ``(channels, kernel, stride)`` of an SSL training config file.

    Args:
        ssl_config: ESPnet SSL ``config.yaml`` (``frontend: wav2vec_cnn`` and
            ``frontend_conf.shapes``); None, or no ``shapes`` in it, gives the
            wav2vec 2.0 CNN (``CNNFrontend``'s default).

    Returns:
        The shapes, first layer first.

    Raises:
        ValueError: Another frontend, or malformed shapes (naming the file).
    """
    if ssl_config is None:
        return WAV2VEC2_CNN_SHAPES
    with open(ssl_config, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    frontend = config.get("frontend", "wav2vec_cnn")
    if frontend != "wav2vec_cnn":
        raise ValueError(
            f"{ssl_config}: frontend '{frontend}' is not the "
            "'wav2vec_cnn' frontend; labels follow its frames only"
        )
    return config_cnn_shapes(config, str(ssl_config))


def conv_shapes(frontend: Optional[torch.nn.Module]) -> Optional[Shapes]:
    """``(channels, kernel, stride)`` per layer of a built wav2vec 2.0 CNN frontend.

    Args:
        frontend: A model's frontend.

    Returns:
        The shapes for :func:`cnn_frame_count`, or None for other frontends.
    """
    from espnet2.asr.frontend.cnn import CNNFrontend

    if not isinstance(frontend, CNNFrontend):
        return None
    channels = frontend.output_size()
    return tuple(
        (channels, block.kernel_size, block.stride) for block in frontend.layers
    )


def frontend_hop(frontend: Optional[torch.nn.Module]) -> Optional[int]:
    """Samples per frontend frame: the CNN's total stride or the STFT hop.

    Returns:
        The hop in samples; 1 without a frontend (raw samples); None when unknown.
    """
    if frontend is None:
        return 1
    shapes = conv_shapes(frontend)
    if shapes is not None:
        return total_stride(shapes)
    hop = getattr(frontend, "hop_length", None)
    return hop if isinstance(hop, int) else None


def encoder_subsampling(encoder: torch.nn.Module) -> Optional[int]:
    """Time subsampling of an ESPnet encoder's input layer (``embed``).

    Returns:
        1 for a linear, positional or absent input layer; the factor of ESPnet's
        ``Conv*Subsampling*`` layers; None for an unknown subsampling layer.
    """
    embed = getattr(encoder, "embed", None)
    if embed is None:
        return 1
    for module in embed.modules():
        name = type(module).__name__
        if "Subsampling" in name:
            return SUBSAMPLING_FACTORS.get(name)
    return 1


def model_frame_rate(
    frontend: Optional[torch.nn.Module], encoder: torch.nn.Module, sample_rate: int
) -> Optional[Hz]:
    """Encoder frames per second, or None when the geometry is unknown.

    Args:
        frontend: The model's frontend.
        encoder: Its encoder.
        sample_rate: Input sample rate in Hz.

    Returns:
        ``sample_rate / (hop * subsampling)``, e.g. 50.0 for the wav2vec 2.0 CNN and
        25.0 for 10 ms fbank frames with ``conv2d`` (4x) subsampling.
    """
    hop, factor = frontend_hop(frontend), encoder_subsampling(encoder)
    if hop is None or factor is None:
        return None
    return sample_rate / (hop * factor)
