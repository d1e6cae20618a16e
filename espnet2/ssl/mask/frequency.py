"""Frequency masking of the encoder input frames (TERA's frequency alteration).

Each utterance gets ``num_masks`` blocks of consecutive feature channels (e.g. mel
bands) set to ``mask_value`` on every frame; a block's width is drawn uniformly from
``[0, max_width]`` and its first channel uniformly from the channels where it fits.
The masked channels are returned as a (B, F) mask so that a reconstruction loss can
predict them (``espnet2/ssl/loss/reconstruction.py``).

Registered as util ``freq_mask`` in the SSL task and configured like ``mask``::

    util:
        - name: freq_mask
          conf: {num_masks: 1, max_width: 16}

The default (``num_masks: 0``) is a no-op. The SSL model applies it to the features
right before the preencoder, in training and in (seeded) validation, never in
``inference_encode``.

References:
    A. T. Liu, S.-W. Li, H.-y. Lee, "TERA: Self-Supervised Learning of Transformer
    Encoder Representation for Speech", IEEE/ACM TASLP 2021, arXiv:2007.06028
    (frequency alteration: one block of up to 20% of the channels per utterance,
    zeroed after CMVN). Facts checked against s3prl
    ``s3prl/pretrain/mockingjay/task.py`` (``generate_masked_acoustic_model_data``,
    ``mask_frequency``); this file is written from the paper.
"""

from typing import Optional, Tuple

import torch
from typeguard import typechecked


class FrequencyMasking(torch.nn.Module):
    """Sets random blocks of feature channels to a constant, per utterance.

    It has no parameters; every draw comes from ``generator`` (torch's global
    generator when None, which the SSL model seeds in validation).
    """

    @typechecked
    def __init__(self, num_masks: int = 0, max_width: int = 0, mask_value: float = 0.0):
        """Stores the options.

        Args:
            num_masks: Channel blocks per utterance; 0 disables the masking. TERA
                uses 1 (its ``mask_frequency`` > 0).
            max_width: Largest block width in channels; each block's width is
                uniform in [0, max_width]. TERA: 20% of the channels (16 of 80
                log-mel bands).
            mask_value: What masked channels hold. TERA zeroes them after CMVN,
                i.e. sets them to the channel mean (0 after ``utterance_mvn``).

        Raises:
            ValueError: On a negative ``num_masks`` or ``max_width``.
        """
        super().__init__()
        if num_masks < 0 or max_width < 0:
            raise ValueError(
                f"util freq_mask: num_masks={num_masks} and max_width={max_width} "
                "must be >= 0 (0 disables frequency masking)"
            )
        self.num_masks = num_masks
        self.max_width = max_width
        self.mask_value = mask_value

    @property
    def enabled(self) -> bool:
        """True when some channel can be masked (``num_masks`` and ``max_width`` > 0).

        Returns:
            Whether ``forward`` changes anything.
        """
        return self.num_masks > 0 and self.max_width > 0

    def compute_mask(
        self,
        batch_size: int,
        num_channels: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> torch.Tensor:
        """Draws the masked channels of a batch, on ``device`` without host reads.

        Per utterance and block: a width uniform in [0, max_width] (``randint``),
        then a first channel uniform in [0, F - width] (the floor of a uniform
        draw scaled by the F - width + 1 places), for all blocks at once.

        Args:
            batch_size: B.
            num_channels: F, the feature channels.
            generator: Source of the draws, on ``device``; None uses torch's global
                generator of that device.
            device: Where to draw and return the mask; None = the CPU.

        Returns:
            (B, F) bool on ``device``, True = masked channel.

        Raises:
            ValueError: When ``max_width`` exceeds F.
        """
        if self.max_width > num_channels:
            raise ValueError(
                f"util freq_mask: max_width={self.max_width} exceeds the "
                f"{num_channels} channels of the frames; set "
                f"util.freq_mask.conf.max_width <= {num_channels}"
            )
        if not self.enabled:
            return torch.zeros(
                batch_size, num_channels, dtype=torch.bool, device=device
            )
        blocks = (batch_size, self.num_masks, 1)
        width = torch.randint(
            self.max_width + 1, blocks, generator=generator, device=device
        )  # (B, M, 1)
        places = num_channels - width + 1  # (B, M, 1) first channels where it fits
        uniform = torch.rand(blocks, generator=generator, device=device)
        start = torch.minimum(torch.floor(uniform * places).long(), places - 1)
        channels = torch.arange(num_channels, device=device)  # (F,)
        inside = (channels >= start) & (channels < start + width)  # (B, M, F)
        return inside.any(dim=1)

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Masks channel blocks of ``feats`` (a new tensor; ``feats`` is unchanged).

        Args:
            feats: Frames (B, T, F), e.g. normalised log-mel filterbanks of 20 ms;
                padded frames may hold anything (they are masked alike).
            lengths: Valid frames per utterance (B,); unused (the mask is per
                channel), kept for the ``(x, x_lens)`` convention.
            generator: Source of the draws (see ``compute_mask``), on ``feats``'
                device.

        Returns:
            The masked frames (B, T, F) and the (B, F) bool mask, True = channel set
            to ``mask_value`` on every frame of the utterance (all False when
            disabled, and then ``feats`` itself is returned).
        """
        batch_size, _, num_channels = feats.shape
        mask = self.compute_mask(batch_size, num_channels, generator, feats.device)
        if not self.enabled:
            return feats, mask
        masked = feats.masked_fill(mask[:, None, :], self.mask_value)  # (B, T, F)
        return masked, mask
