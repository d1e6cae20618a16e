"""Masked acoustic frame reconstruction: a generative SSL objective (TERA-style).

The encoder input frames (what the SSL model feeds its preencoder: log-mel
filterbanks of the ``default`` frontend after normalisation, or the CNN features of
``wav2vec_cnn``) are the targets. Spans of frames are masked along time by the
``mask`` util (the encoder sees its learned mask embedding there) and, optionally,
blocks of channels along frequency by the ``freq_mask`` util; a small prediction
head on one encoder layer reconstructs the original, unmasked frames, and the loss
is the L1 distance on the masked elements (or on every valid one).

Loss positions are elements ``(b, t, f)`` of the (B, T, F) frames:

* ``loss_positions: masked`` (TERA): ``t`` valid and (frame ``t`` time-masked or
  channel ``f`` frequency-masked in utterance ``b``);
* ``loss_positions: all``: every valid element (an autoencoder on unmasked frames).

Padded frames are never loss positions, nor read: the head runs on every frame with
the frames that hold no loss element zeroed first, and only the loss elements count
(fixed-size tensors: no gather of a data-dependent size, no host read; every stat is
a 0-dim tensor).

References:
    A. T. Liu, S.-W. Li, H.-y. Lee, "TERA: Self-Supervised Learning of Transformer
    Encoder Representation for Speech", IEEE/ACM TASLP 2021, arXiv:2007.06028
    (time and frequency alteration, L1 reconstruction of the masked elements,
    prediction head Linear-GELU-LayerNorm-Linear).
    A. T. Liu, S.-w. Yang, P.-H. Chi, P.-c. Hsu, H.-y. Lee, "Mockingjay:
    Unsupervised Speech Representation Learning with Deep Bidirectional Transformer
    Encoders", ICASSP 2020, arXiv:1910.12638 (masked acoustic model).
    Liu et al., arXiv:2409.16295 (SSL pretraining under a compute budget), for
    which this objective is the generative point of comparison.
    Facts (head shape, loss on masked elements only, TERA's masking values) checked
    against s3prl ``s3prl/pretrain/mockingjay/task.py`` and
    ``s3prl/pretrain/tera/exp_model_config/*.yaml``; this file is written from the
    papers.
"""

from typing import Dict, List, Optional, Tuple

import torch
from typeguard import typechecked

from espnet2.ssl.loss.abs_loss import AbsSSLLoss

LOSS_POSITIONS = ("masked", "all")


class ReconstructionLoss(AbsSSLLoss):
    """L1 reconstruction of the encoder input frames from one encoder layer.

    The returned loss is the mean absolute error over the N loss elements of the
    batch, with ``stats["sample_size"] = N`` (elements, not frames). ESPnet weights
    each rank's loss by its ``sample_size`` and divides by the sum,
    ``sum_r N_r * loss_r / sum_r N_r``, which is exactly the mean over every loss
    element of the global batch, as one process with the combined batch computes it.
    """

    @typechecked
    def __init__(
        self,
        encoder_output_size: int,
        frame_size: int,
        hidden_size: Optional[int] = None,
        loss_positions: str = "masked",
        layer: int = -1,
        layer_norm_eps: float = 1.0e-5,
    ):
        """Builds the prediction head.

        Args:
            encoder_output_size: Size D of the encoder output (set by the task).
            frame_size: Size F of the frames to reconstruct: the frontend's output
                size (``n_mels`` of the ``default`` frontend, the last CNN channel
                count of ``wav2vec_cnn``). TERA: 80 log-mel bands.
            hidden_size: Width of the head's hidden layer; None = D. TERA: D (768).
            loss_positions: ``masked`` (TERA): the time-masked frames and the
                frequency-masked channels; ``all``: every valid element.
            layer: Entry of ``encoder_output`` the head reads; -1 = the final
                output. TERA: the last layer.
            layer_norm_eps: Epsilon of the head's LayerNorm (TERA: 1e-12).

        Raises:
            ValueError: On a ``loss_positions`` other than ``masked``/``all`` or a
                non-positive size.
        """
        super().__init__()
        if loss_positions not in LOSS_POSITIONS:
            raise ValueError(
                f"loss.conf.loss_positions={loss_positions!r}: must be one of "
                f"{LOSS_POSITIONS}"
            )
        hidden_size = encoder_output_size if hidden_size is None else hidden_size
        if frame_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"loss.conf.frame_size={frame_size} and loss.conf.hidden_size="
                f"{hidden_size} must be > 0"
            )
        self.frame_size = frame_size
        self.loss_positions = loss_positions
        self.layer = layer
        self.util_attributes = ["mask", "freq_mask"]  # freq_mask: no-op by default
        self.required_inputs = [
            "encoder_output",
            "encoder_output_lengths",
            "mask_info",
            "frames",
            "frames_lengths",
            "frequency_mask",
        ]
        self.head = torch.nn.Sequential(
            torch.nn.Linear(encoder_output_size, hidden_size),
            torch.nn.GELU(),
            torch.nn.LayerNorm(hidden_size, eps=layer_norm_eps),
            torch.nn.Linear(hidden_size, frame_size),
        )

    def forward(
        self,
        encoder_output: List[torch.Tensor],
        encoder_output_lengths: Optional[torch.Tensor],
        mask_info: Optional[Dict[str, torch.Tensor]],
        frames: torch.Tensor,
        frames_lengths: torch.Tensor,
        frequency_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Computes the L1 loss over the loss elements of a batch.

        Args:
            encoder_output: Per-layer encoder outputs, each (B, T, D) float, at the
                frame rate of ``frames``; padded frames may hold anything.
            encoder_output_lengths: Valid encoder frames (B,) long, or None.
            mask_info: ``mask_m`` (B, T) bool, True on time-masked frames (None:
                no time masking).
            frames: The unmasked encoder input frames (B, T, F) float, e.g. 20 ms
                log-mel frames; the targets (detached here). Padded frames may
                hold anything, NaN included.
            frames_lengths: Valid frames (B,) long.
            frequency_mask: (B, F) bool, True on frequency-masked channels, or
                None (no frequency masking).

        Returns:
            ``(loss, stats)``: loss is a 0-dim float32, the mean absolute error
            over the N loss elements (0 with a gradient path when N == 0). stats
            holds 0-dim detached tensors ``loss_reconstruction`` (the loss),
            ``masked_share`` (time-masked share of the valid frames),
            ``num_masked_frames`` (time-masked valid frames) and ``sample_size``
            (N, elements).

        Raises:
            ValueError: When F differs from ``frame_size`` (naming
                ``loss.conf.frame_size``) or the encoder output has another frame
                count than ``frames``.
        """
        hidden = encoder_output[self.layer]
        self._check_shapes(hidden, frames)
        valid = _valid_frames(frames_lengths, encoder_output_lengths, frames.shape[1])
        if mask_info is None:
            time_masked = torch.zeros_like(valid)
        else:
            time_masked = mask_info["mask_m"].to(valid.device).bool() & valid
        elements = self._loss_elements(valid, time_masked, frequency_mask)
        rows = elements.any(dim=-1)[..., None]  # (B, T, 1) frames with an element
        # zeroed first: what padded frames hold (NaN included) reaches no gradient
        predicted = self.head(torch.where(rows, hidden, 0.0)).float()  # (B, T, F)
        target = torch.where(rows, frames.detach().float(), 0.0)  # (B, T, F)
        errors = torch.where(elements, (predicted - target).abs(), 0.0)
        num_elements = elements.sum()  # 0-dim N, stays on the device
        loss = errors.sum() / num_elements.clamp(min=1)
        stats = {"loss_reconstruction": loss.detach()}
        stats.update(_frame_counts(valid, time_masked))
        stats["sample_size"] = num_elements.float()
        return loss, stats

    def _check_shapes(self, hidden: torch.Tensor, frames: torch.Tensor) -> None:
        """Raises a ValueError naming the option when the shapes do not fit.

        Args:
            hidden: The encoder layer (B, T', D).
            frames: The targets (B, T, F).
        """
        if frames.dim() != 3 or frames.shape[-1] != self.frame_size:
            raise ValueError(
                f"loss.conf.frame_size={self.frame_size}, but the encoder input "
                f"frames are {tuple(frames.shape)} (B, T, F): set "
                f"loss.conf.frame_size: {frames.shape[-1]} (the frontend's output "
                "size, e.g. n_mels)"
            )
        if hidden.shape[:2] != frames.shape[:2]:
            raise ValueError(
                f"the encoder output {tuple(hidden.shape)} and the frames "
                f"{tuple(frames.shape)} differ in (B, T): the reconstruction loss "
                "needs an encoder that keeps the frame rate (encoder_conf."
                "input_layer: wav2vec, linear or null, not a subsampling one)"
            )

    def _loss_elements(
        self,
        valid: torch.Tensor,
        time_masked: torch.Tensor,
        frequency_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The loss positions (see the module docstring).

        Args:
            valid: (B, T) bool, valid frames.
            time_masked: (B, T) bool, time-masked valid frames.
            frequency_mask: (B, F) bool masked channels, or None.

        Returns:
            (B, T, F) bool, True on loss elements; never on padded frames.
        """
        shape = (*valid.shape, self.frame_size)
        if self.loss_positions == "all":
            return valid[:, :, None].expand(shape)
        elements = time_masked[:, :, None].expand(shape)  # (B, T, F)
        if frequency_mask is not None:
            channels = frequency_mask.to(valid.device).bool()[:, None, :]  # (B, 1, F)
            elements = elements | (valid[:, :, None] & channels)
        return elements


def _valid_frames(
    frames_lengths: torch.Tensor,
    encoder_output_lengths: Optional[torch.Tensor],
    max_frames: int,
) -> torch.Tensor:
    """(B, T) bool, True on frames below both lengths (B,) (padding is False)."""
    positions = torch.arange(max_frames, device=frames_lengths.device)  # (T,)
    valid = positions[None, :] < frames_lengths[:, None]  # (B, T)
    if encoder_output_lengths is not None:
        lengths = encoder_output_lengths.to(frames_lengths.device)
        valid = valid & (positions[None, :] < lengths[:, None])
    return valid


def _frame_counts(
    valid: torch.Tensor, time_masked: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """``masked_share`` and ``num_masked_frames``, 0-dim float tensors.

    Args:
        valid: (B, T) bool valid frames.
        time_masked: (B, T) bool time-masked valid frames.
    """
    num_masked = time_masked.sum().float()
    return {
        "masked_share": num_masked / valid.sum().clamp(min=1),
        "num_masked_frames": num_masked,
    }
