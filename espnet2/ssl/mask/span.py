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
* without seeds (training) the whole batch is drawn at once on the input's device with
  fixed-size tensor ops (``span_mask_batch``): no loop over utterances and no read of
  the lengths on the host, so a GPU step does not wait here (fairseq and ESPnet draw
  on the host with numpy per utterance); the distribution is the same as
  ``span_mask_1d``'s (test/espnet2/ssl/mask/test_span_mask.py measures it);
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


def span_mask_batch(
    lengths: torch.Tensor,
    max_frames: int,
    mask_prob: float,
    mask_length: int,
    min_masks: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Draws the masked frames of a batch at once, as ``span_mask_1d`` per row.

    Per utterance b: ``n_b = max(min_masks, int(mask_prob * T_b / mask_length + u_b))``
    spans with ``u_b ~ U[0, 1)``, their starts drawn without replacement from
    ``[0, R_b)`` (``R_b = T_b - mask_length``, or ``n_b + 1`` when that leaves no room),
    ``n_b`` capped at ``R_b``; spans overlap and are clipped at ``T_b``. The starts
    are the ``n_b`` positions of smallest random key among ``[0, R_b)`` (a uniform
    subset), the spans a windowed count of the starts: sorts and a cumsum, no host read.

    Args:
        lengths: Valid frames T_b per utterance (B,) long, on the device to draw on.
        max_frames: T of the padded batch (>= every T_b).
        mask_prob: Share of frames that start a span (fairseq ``mask_prob``).
        mask_length: Frames per span (fairseq ``mask_length``).
        min_masks: Minimum number of spans (fairseq ``mask_min_masks``).
        generator: Source of randomness on ``lengths``' device; None uses torch's
            global generator of that device.

    Returns:
        (B, max_frames) bool on ``lengths``' device, True = masked; False on padding.
    """
    device, lengths = lengths.device, lengths.long()
    batch = lengths.numel()
    frames = torch.arange(max_frames, device=device)  # (T,)
    if mask_prob <= 0 or max_frames == 0:
        return torch.zeros(batch, max_frames, dtype=torch.bool, device=device)
    jitter = torch.rand(batch, generator=generator, device=device)  # (B,)
    spans = torch.floor(mask_prob * lengths.double() / mask_length + jitter.double())
    spans = spans.long().clamp(min=min_masks)  # (B,)
    room = lengths - mask_length  # (B,) start positions, as span_mask_1d
    room = torch.where(room <= spans, spans + 1, room)
    spans = torch.where(lengths > 0, torch.minimum(spans, room), 0)
    # R_b <= max(T_b + 2, min_masks + 1) when mask_prob <= 1: keys for every start
    width = max(max_frames, int(mask_prob * max_frames / mask_length) + 1)
    width += min_masks + 2
    starts = _random_subset(
        torch.arange(width, device=device)[None, :] < room[:, None], spans, generator
    )  # (B, W)
    covered = torch.nn.functional.pad(starts.long().cumsum(dim=1), (mask_length, 0))
    # (B, W + L): frame t is masked iff a start lies in [t - L + 1, t]
    in_span = covered[:, mask_length:] - covered[:, :-mask_length] > 0  # (B, W)
    return in_span[:, :max_frames] & (frames[None, :] < lengths[:, None])


def _random_subset(
    allowed: torch.Tensor, counts: torch.Tensor, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """A uniform random subset of ``counts[b]`` allowed positions per row.

    Args:
        allowed: (B, W) bool, the positions that may be picked.
        counts: (B,) long, positions to pick per row (<= allowed per row).
        generator: Source of one (B, W) float64 uniform draw on ``allowed``'s device.

    Returns:
        (B, W) bool, True on the picked positions.
    """
    keys = torch.rand(
        allowed.shape, generator=generator, device=allowed.device, dtype=torch.float64
    )
    keys = torch.where(allowed, keys, 2.0)  # positions not allowed sort last
    rank = keys.argsort(dim=1).argsort(dim=1)  # (B, W) rank of each key in its row
    return allowed & (rank < counts[:, None])


def trim_batch_to_same_count(
    mask: torch.Tensor, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``trim_to_same_count`` on a (B, T) mask, on its device without host reads.

    Args:
        mask: (B, T) bool, True = masked.
        generator: Source of one (B, T) float64 uniform draw on ``mask``'s device.

    Returns:
        (B, T) bool: per row a uniform random subset of its masked frames, of the
        size of the smallest row count (fairseq ``require_same_masks``).
    """
    if mask.numel() == 0:
        return mask
    smallest = mask.sum(dim=1).min()  # 0-dim, stays on the device
    return _random_subset(mask, smallest.expand(mask.shape[0]), generator)


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
            seeds: One seed per utterance: each row gets its own CPU generator and
                ``span_mask_1d`` (used in eval for masks that depend only on the
                utterance; reads ``lengths`` on the host).
            generator: Shared generator for the batch when ``seeds`` is None, on
                ``lengths``' device (``span_mask_batch``: no host read).

        Returns:
            Mask (B, T) bool, True = masked; never True on padded frames. On
            ``lengths``' device without seeds, on the CPU with them.
        """
        if seeds is None:
            mask = span_mask_batch(
                lengths,
                max_frames,
                self.mask_prob,
                self.mask_length,
                self.min_masks,
                generator,
            )
            if self.training and self.require_same_masks:
                mask = trim_batch_to_same_count(mask, generator)
            return mask
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
        mask = torch.zeros(len(rows), max_frames, dtype=torch.bool)
        for b, frames in enumerate(rows):
            mask[b, frames] = True
        return mask

    def _channel_mask(
        self,
        batch: int,
        channels: int,
        generator: Optional[torch.Generator],
        device: torch.device,
    ) -> torch.Tensor:
        """(B, C) bool on ``device``, True = channel zeroed (fairseq
        ``mask_channel_*``, no minimum of spans), drawn by ``span_mask_batch``."""
        lengths = torch.full((batch,), channels, dtype=torch.long, device=device)
        return span_mask_batch(
            lengths,
            channels,
            self.mask_channel_prob,
            self.mask_channel_length,
            0,
            generator,
        )

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
            generator: Optional generator for training-time draws, on ``x``'s
                device.

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
            mask = self.compute_mask(valid.sum(-1), T, seeds, generator)
        mask = mask.to(x.device) & valid
        x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        if self.mask_channel_prob > 0:
            zeroed = self._channel_mask(B, D, generator, x.device)
            x = x.masked_fill(zeroed[:, None, :], 0.0)  # (B, 1, D) broadcast over T
        return x, {"mask_m": mask, "mask_u": valid & ~mask}
