"""MFCC features for the first HuBERT iteration: 13 MFCCs with deltas, 100 Hz.

HuBERT's first-iteration targets cluster 39-dimensional MFCCs: 13 cepstra plus their
first and second time derivatives (Hsu et al., "HuBERT", arXiv:2106.07447, section
IV-C). The features follow fairseq's ``examples/hubert/simple_kmeans/
dump_mfcc_feature.py`` @ 3d262bb2 (read for facts only): Kaldi-compatible MFCCs
from ``torchaudio.compliance.kaldi.mfcc`` on the waveform in [-1, 1] (no dither, no
energy, 25 ms windows every 10 ms, ``snip_edges``), then
``torchaudio.functional.compute_deltas`` with Kaldi's 5-frame window, applied twice.
Each utterance is computed alone, so batching and padding never change a value.
"""

from typing import Dict, Tuple

import torch
import torchaudio
from typeguard import typechecked

from espnet2.ssl.frame_geometry import (
    KALDI_FRAME_LENGTH,
    KALDI_FRAME_SHIFT,
    kaldi_frame_count,
)
from espnet2.ssl.targets.dumpers.base import SAMPLE_RATE, FeatureDumper, Hz


def mfcc_with_deltas(
    waveform: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    num_ceps: int = 13,
    delta_window: int = 5,
) -> torch.Tensor:
    """MFCCs, deltas and delta-deltas of one waveform.

    Args:
        waveform: One utterance (S,) float in [-1, 1].
        sample_rate: Its sample rate in Hz.
        num_ceps: Cepstral coefficients per frame (Kaldi / HuBERT: 13).
        delta_window: Frames of the regression window of each delta (Kaldi: 5).

    Returns:
        Features (T, 3 * num_ceps) with T = ``kaldi_frame_count(S)``: the cepstra,
        then their deltas, then the deltas of the deltas.
    """
    cepstra = torchaudio.compliance.kaldi.mfcc(
        waveform.unsqueeze(0),  # (S,) -> (1, S)
        sample_frequency=sample_rate,
        num_ceps=num_ceps,
        use_energy=False,
        dither=0.0,
    )  # (T, C)
    cepstra = cepstra.transpose(0, 1)  # (T, C) -> (C, T)
    deltas = torchaudio.functional.compute_deltas(cepstra, win_length=delta_window)
    accelerations = torchaudio.functional.compute_deltas(
        deltas, win_length=delta_window
    )
    stacked = torch.cat([cepstra, deltas, accelerations], dim=0)  # (3C, T)
    return stacked.transpose(0, 1)  # (3C, T) -> (T, 3C)


class MfccDumper(FeatureDumper):
    """39-d MFCC + delta + delta-delta features at 100 Hz (HuBERT iteration 1)."""

    name = "mfcc"

    @typechecked
    def __init__(self, num_ceps: int = 13, delta_window: int = 5, device: str = "cpu"):
        """Sets up the features.

        Args:
            num_ceps: Cepstral coefficients (HuBERT / fairseq: 13).
            delta_window: Frames of each delta's regression window (Kaldi: 5).
            device: Where to compute (``auto``, ``cpu``, ``cuda``); the CPU is as
                fast as a GPU here, and its results match Kaldi-style references.
        """
        super().__init__(device)
        if num_ceps < 1 or delta_window < 3 or delta_window % 2 == 0:
            raise ValueError(
                "num_ceps must be >= 1 and delta_window an odd number >= 3, got "
                f"{num_ceps} and {delta_window}"
            )
        self.num_ceps = num_ceps
        self.delta_window = delta_window

    @property
    def dim(self) -> int:
        """Feature dimension: cepstra, deltas and delta-deltas (39 for 13)."""
        return 3 * self.num_ceps

    @property
    def frame_rate(self) -> Hz:
        """100 Hz (10 ms frame shift)."""
        return SAMPLE_RATE / KALDI_FRAME_SHIFT

    @property
    def padding_invariant(self) -> bool:
        """True: every utterance is computed on its own samples only."""
        return True

    def num_frames(self, num_samples: int) -> int:
        """Kaldi framing with ``snip_edges``: ``(S - 400) // 160 + 1`` (0 if short)."""
        return kaldi_frame_count(num_samples)

    def min_samples(self) -> int:
        """One 25 ms window: 400 samples."""
        return KALDI_FRAME_LENGTH

    def describe(self) -> Dict:
        """Feature type, dimension, frame rate and the MFCC options."""
        return {
            "feature_type": self.name,
            "layer": None,
            "dim": self.dim,
            "frame_rate": self.frame_rate,
            "sample_rate": self.sample_rate,
            "num_ceps": self.num_ceps,
            "delta_window": self.delta_window,
        }

    def _forward(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-utterance MFCCs of a padded batch.

        Args:
            speech: Waveforms (B, S), padded.
            speech_lengths: Valid samples (B,).

        Returns:
            Features (B, T_max, D), zero-padded, and frames per utterance (B,).
        """
        rows = []
        for wave, length in zip(speech, speech_lengths.tolist()):
            rows.append(
                mfcc_with_deltas(
                    wave[:length], self.sample_rate, self.num_ceps, self.delta_window
                )
            )
        frames = torch.tensor([row.shape[0] for row in rows], dtype=torch.long)
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, T, D)
        return padded, frames
