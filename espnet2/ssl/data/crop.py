"""Fixed-length crops of an utterance with its frame labels, aligned to model frames.

A crop starts at a multiple of the frame stride (320 samples, 20 ms, for the wav2vec
2.0 CNN), so label ``i`` of the crop is label ``offset // stride + i`` of the whole
utterance and still belongs to audio frame ``i``: no fraction of a frame is lost.
ESPnet's ``_crop_audio_label`` starts at any sample and takes the label offset as
``floor((offset - window) / stride) + 1``, which is one frame early when the offset is a
multiple of the stride.

References:
    Y. Gao et al., "Match to Win: Analysing sequence lengths for efficient
    self-supervised learning in speech and audio", arXiv:2209.15575 (pretraining on
    truncated sequences). fairseq ``examples/hubert/config/pretrain/
    hubert_base_librispeech.yaml`` (``max_sample_size``, ``random_crop``).
"""

from typing import Optional, Tuple

import numpy as np
import torch

from espnet2.ssl.frame_geometry import frame_count


def crop_offset(
    num_samples: int,
    crop_samples: int,
    frame_stride: int,
    random: bool,
    generator: Optional[torch.Generator] = None,
) -> int:
    """First sample of a crop; a multiple of ``frame_stride``.

    Args:
        num_samples: Length of the utterance (samples).
        crop_samples: Length of the crop (samples); <= ``num_samples``.
        frame_stride: Hop of the model's frames (samples).
        random: Uniform over the aligned offsets (training), else the aligned offset
            nearest to a centred crop (validation: the same crop every epoch).
        generator: Random source (torch's global one when None, which ESPnet seeds
            per epoch and the DataLoader per worker).

    Returns:
        The offset in samples, in ``[0, num_samples - crop_samples]``.
    """
    if crop_samples > num_samples:
        raise ValueError(f"crop of {crop_samples} > utterance of {num_samples} samples")
    num_offsets = (num_samples - crop_samples) // frame_stride + 1
    if random:
        index = int(torch.randint(num_offsets, (1,), generator=generator))
    else:
        index = (num_offsets - 1) // 2
    return index * frame_stride


def crop_utterance(
    speech: np.ndarray,
    labels: Optional[np.ndarray],
    offset: int,
    crop_samples: int,
    frame_field: int,
    frame_stride: int,
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Cuts ``crop_samples`` of audio at ``offset`` and the labels of those frames.

    Args:
        speech: Waveform (S,).
        labels: Frame labels (L,) at the model's frame rate (one per frame of the
            whole utterance), or None.
        offset: First sample; a multiple of ``frame_stride``.
        crop_samples: Samples to keep.
        frame_field: Receptive field of one frame (samples; 400 for the wav2vec 2.0
            CNN).
        frame_stride: Hop between frames (samples; 320).

    Returns:
        The audio (crop_samples,) and the labels of its frames
        (``frame_count(crop_samples)``,) or fewer when ``labels`` ends earlier.
    """
    if offset % frame_stride:
        raise ValueError(f"offset {offset} is not a multiple of {frame_stride}")
    if offset + crop_samples > len(speech):
        raise ValueError(
            f"crop [{offset}, {offset + crop_samples}) exceeds {len(speech)} samples"
        )
    speech = speech[offset : offset + crop_samples]
    if labels is not None:
        first = offset // frame_stride
        labels = labels[
            first : first + frame_count(crop_samples, frame_field, frame_stride)
        ]
    return speech, labels
