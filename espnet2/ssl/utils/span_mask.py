"""Span masking of encoder inputs for masked prediction (wav2vec 2.0, HuBERT).

References:
    wav2vec 2.0 (Baevski et al., 2020, arXiv:2006.11477), section 3.1: spans of
    ``mask_length`` frames start at a ``mask_prob`` share of the frames.
    fairseq ``compute_mask_indices`` (fairseq/data/data_utils.py @ 3d262bb2): number of
    spans ``int(mask_prob * T / mask_length + U[0, 1))``, at least ``min_masks``, start
    frames drawn without replacement, spans may overlap and are clipped at the end;
    ``require_same_masks`` trims every row to the smallest mask count of the batch.

Differences from ESPnet 202511's ``espnet2.ssl.utils.mask.Masking`` (same options):

* the input is not modified in place (ESPnet's writes the mask embedding into the
  tensor that the model also hands to losses as unmasked features);
* every random draw takes a ``torch.Generator``; in eval mode each utterance gets its
  own generator seeded by the caller (the SSL model derives the seed from the audio), so
  the same validation utterance gets the same mask in every epoch, whatever its batch;
* ``mask_u`` excludes padded frames (ESPnet's marks padding as "unmasked");
* a mask can be given explicitly (parity tests against other implementations).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from typeguard import typechecked


def span_mask_1d(
    num_frames: int,
    mask_prob: float,
    mask_length: int,
    min_masks: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Draws the masked frames of one utterance.

    Args:
        num_frames: Valid frames T of the utterance (no padding).
        mask_prob: Share of frames that start a span (fairseq ``mask_prob``).
        mask_length: Frames per span (fairseq ``mask_length``).
        min_masks: Minimum number of spans (fairseq ``mask_min_masks``).
        generator: Source of randomness; None uses torch's global generator.

    Returns:
        Sorted unique masked frame indices, (M,) long, all in [0, T).
    """
    if num_frames <= 0 or mask_prob <= 0:
        return torch.zeros(0, dtype=torch.long)
    jitter = torch.rand(1, generator=generator).item()
    num_spans = max(min_masks, int(mask_prob * num_frames / mask_length + jitter))
    # Keep room for the spans' starts; short utterances may be masked entirely.
    start_range = num_frames - mask_length
    if start_range <= num_spans:
        start_range = num_frames - (num_frames - num_spans - 1)
    num_spans = min(num_spans, start_range)
    starts = torch.randperm(start_range, generator=generator)[:num_spans]
    frames = (starts[:, None] + torch.arange(mask_length)[None, :]).flatten()
    return torch.unique(frames[frames < num_frames])


def trim_to_same_count(
    frames: List[torch.Tensor], generator: Optional[torch.Generator] = None
) -> List[torch.Tensor]:
    """Keeps a random subset of each row so that all rows have the same count.

    Args:
        frames: Masked frame indices per utterance, each (M_b,).
        generator: Source of randomness.

    Returns:
        Per utterance (min_b M_b,) sorted indices (fairseq ``require_same_masks``).
    """
    count = min((len(f) for f in frames), default=0)
    trimmed = []
    for f in frames:
        if len(f) > count:
            keep = torch.randperm(len(f), generator=generator)[:count]
            f = torch.sort(f[keep]).values
        trimmed.append(f)
    return trimmed


class SpanMasking(torch.nn.Module):
    """Replaces random spans of frames by a learned mask embedding.

    Registered as util ``mask`` in the SSL task; accepts every option of ESPnet's
    ``Masking`` (``util: [{name: mask, conf: {...}}]`` configs keep working).
    """

    @typechecked
    def __init__(
        self,
        encoder_embed_dim: int,
        mask_prob: float = 0.8,
        mask_selection: str = "static",
        mask_other: float = 0.0,
        mask_length: int = 10,
        no_mask_overlap: bool = False,
        mask_min_space: int = 0,
        mask_channel_prob: float = 0.0,
        mask_channel_selection: str = "static",
        mask_channel_other: float = 0.0,
        mask_channel_length: int = 10,
        no_mask_channel_overlap: bool = False,
        mask_channel_min_space: int = 0,
        min_masks: int = 2,
        require_same_masks: bool = True,
    ):
        """Builds the mask embedding.

        Args:
            encoder_embed_dim: Feature size D of the masked input (set by the task).
            mask_prob: Share of frames that start a masked span. fairseq
                ``mask_prob``; wav2vec 2.0 BASE = 0.65, HuBERT BASE = 0.8.
            mask_selection: Span length distribution; only "static" (fixed
                ``mask_length``, as every published BASE model) is implemented.
            mask_other: Unused with "static"; kept for config compatibility.
            mask_length: Frames per span. fairseq ``mask_length``; BASE = 10.
            no_mask_overlap: Must be False (overlapping spans, as fairseq BASE).
            mask_min_space: Unused without ``no_mask_overlap``.
            mask_channel_prob: Share of feature channels that start a zeroed channel
                span (fairseq ``mask_channel_prob``); 0 disables channel masking.
            mask_channel_selection: Only "static".
            mask_channel_other: Unused with "static".
            mask_channel_length: Channels per channel span.
            no_mask_channel_overlap: Must be False.
            mask_channel_min_space: Unused.
            min_masks: Minimum spans per utterance (fairseq ``mask_min_masks``; ESPnet
                fixes 2).
            require_same_masks: In training, trim every utterance to the smallest
                mask count of the batch (fairseq ``require_same_masks``, default True).
                Eval masks are per utterance and never trimmed (batch-independent).
        """
        super().__init__()
        selections = dict(
            mask_selection=mask_selection, mask_channel_selection=mask_channel_selection
        )
        for name, value in selections.items():
            if value != "static":
                raise ValueError(f"{name}={value!r}: only 'static' is implemented")
        if no_mask_overlap or no_mask_channel_overlap:
            raise ValueError("no_mask_overlap / no_mask_channel_overlap: not supported")
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.min_masks = min_masks
        self.mask_channel_prob = mask_channel_prob
        self.mask_channel_length = mask_channel_length
        self.require_same_masks = require_same_masks
        self.mask_embedding = torch.nn.Parameter(torch.empty(encoder_embed_dim))
        torch.nn.init.uniform_(self.mask_embedding)

    def compute_mask(
        self,
        lengths: torch.Tensor,
        max_frames: int,
        seeds: Optional[Sequence[int]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Draws the time mask of a batch.

        Args:
            lengths: Valid frames per utterance, (B,).
            max_frames: T of the padded batch.
            seeds: One seed per utterance: each row gets its own generator (used in
                eval for masks that depend only on the utterance).
            generator: Shared generator for the batch when ``seeds`` is None.

        Returns:
            Mask (B, T) bool, True = masked; never True on padded frames.
        """
        rows = []
        for b, length in enumerate(lengths.tolist()):
            gen = generator
            if seeds is not None:
                gen = torch.Generator().manual_seed(int(seeds[b]))
            rows.append(
                span_mask_1d(
                    length, self.mask_prob, self.mask_length, self.min_masks, gen
                )
            )
        if self.training and self.require_same_masks and seeds is None:
            rows = trim_to_same_count(rows, generator)
        mask = torch.zeros(len(rows), max_frames, dtype=torch.bool)
        for b, frames in enumerate(rows):
            mask[b, frames] = True
        return mask

    def _channel_mask(
        self, batch: int, channels: int, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        """(B, C) bool, True = channel zeroed (fairseq ``mask_channel_*``)."""
        mask = torch.zeros(batch, channels, dtype=torch.bool)
        for b in range(batch):
            frames = span_mask_1d(
                channels, self.mask_channel_prob, self.mask_channel_length, 0, generator
            )
            mask[b, frames] = True
        return mask

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: Optional[torch.Tensor],
        mask: Optional[torch.Tensor] = None,
        seeds: Optional[Sequence[int]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Masks spans of ``x`` (a new tensor; ``x`` is left unchanged).

        Args:
            x: Encoder input (B, T, D); padded frames may hold anything.
            padding_mask: (B, T) bool, True = padded frame; None = no padding.
            mask: Optional explicit time mask (B, T) bool, True = masked (parity tests).
            seeds: Optional per-utterance seeds (see ``compute_mask``).
            generator: Optional generator for training-time draws.

        Returns:
            The masked input (B, T, D) and ``{"mask_m": (B, T) bool masked frames,
            "mask_u": (B, T) bool unmasked valid frames}``.
        """
        B, T, D = x.shape
        valid = (
            torch.ones(B, T, dtype=torch.bool, device=x.device)
            if padding_mask is None
            else ~padding_mask.to(x.device)
        )
        if mask is None:
            mask = self.compute_mask(valid.sum(-1).cpu(), T, seeds, generator)
        mask = mask.to(x.device) & valid
        x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        if self.mask_channel_prob > 0:
            zeroed = self._channel_mask(B, D, generator).to(x.device)
            x = x.masked_fill(zeroed[:, None, :], 0.0)  # (B, 1, D) broadcast over T
        return x, {"mask_m": mask, "mask_u": valid & ~mask}
