"""ESPnet's HuBERT loss, weighted by the masked frames it averages over.

ESPnet 202511's ``HuBERTLoss`` returns the cross-entropy averaged over the masked
frames of a batch but no ``sample_size``, so the SSL model weights it by the number of
utterances. On one process that weight only affects the logged averages; under
``DistributedDataParallel`` ESPnet's trainer computes ``sum_r w_r * loss_r / sum_r w_r``
over the ranks r, which with ``w_r`` = utterances gives each rank's frames a
different weight. Reporting the masked-frame count as ``sample_size`` makes that sum
the cross-entropy summed over every masked frame of the global batch divided by
their number: the loss of one process with the combined batch, and fairseq's
normalisation (the HuBERT criterion divides by the masked frames of all GPUs).

The forward is rewritten (same modules, options, stats names and values, up to the
fix below) so that a training step reads nothing on the host: ESPnet's indexes the
outputs with the boolean masks (a ``nonzero`` each, and on a GPU a CPU mask indexing
a GPU tensor) and calls ``.item()`` per layer. Here the decoder runs on every frame,
the cross-entropy is summed over the masked labelled frames by a where, and every
stat is a 0-dim tensor. ESPnet's ``hubert_acc_u_*`` repeats the masked accuracy (a
slip: ``correct_m / count_m``); here it is the accuracy on the unmasked frames.

References: W.-N. Hsu et al., "HuBERT: Self-Supervised Speech Representation
Learning by Masked Prediction of Hidden Units", arXiv:2106.07447; fairseq
``fairseq/criterions/hubert_criterion.py`` @ 3d262bb2 (``sample_size`` = masked
frames); ESPnet 202511 ``espnet2/ssl/loss/hubert.py``.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from espnet2.ssl.loss.hubert import HuBERTLoss

IGNORE_LABEL = -1  # ESPnet's cross-entropy ignore_index (padded labels)
LOGIT_TEMPERATURE = 0.1  # ESPnet's HuBERTDecoder divides its logits by 0.1


class WeightedHuBERTLoss(HuBERTLoss):
    """``HuBERTLoss`` (same options, modules and checkpoint keys) whose stats add
    ``num_masked_frames`` and ``sample_size``: the masked frames with a label."""

    def forward(
        self,
        encoder_output: List[torch.Tensor],
        encoder_output_lengths: Optional[torch.Tensor] = None,
        text: Optional[torch.Tensor] = None,
        text_lengths: Optional[torch.Tensor] = None,
        mask_info: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """ESPnet's HuBERT loss and stats, plus the frame count it averages over.

        Args:
            encoder_output: Per-layer encoder outputs, each (B, T, D) float.
            encoder_output_lengths: Valid frames (B,) long (unused: the masks
                exclude padding).
            text: Frame labels (B, T) long, padded with -1.
            text_lengths: Labels per utterance (B,) long (unused, as in ESPnet).
            mask_info: ``mask_m`` (B, T) bool, True on masked frames (never on
                padding), and ``mask_u`` (B, T) bool, the unmasked valid frames.

        Returns:
            The loss (per layer in ``layers``, weighted by ``loss_weights``: the
            mean cross-entropy over the N labelled masked frames; 0 when N == 0) and
            the stats, 0-dim detached tensors: ``hubert_loss_m_{layer}``,
            ``hubert_acc_m_{layer}``, ``hubert_acc_u_{layer}``, and
            ``num_masked_frames`` = ``sample_size`` = N.

        Raises:
            ValueError: When the labels do not have the frames of the masks.
        """
        mask_m, mask_u = mask_info["mask_m"].bool(), mask_info["mask_u"].bool()
        if text.shape[:2] != mask_m.shape:
            raise ValueError(
                f"HuBERT labels {tuple(text.shape)} (B, T) do not match the "
                f"{tuple(mask_m.shape)} encoder frames: the label frame rate must "
                "be the encoder's (check collate_fn_conf.label_downsampling and "
                "the frontend's stride)"
            )
        labels = text.long()
        labelled_m = mask_m & (labels != IGNORE_LABEL)  # (B, T)
        num_labelled = labelled_m.sum()  # 0-dim, stays on the device
        total_loss, stats = 0.0, {}
        for layer, weight in zip(self.layers, self.loss_weights):
            if layer < 0:
                layer = len(encoder_output) + layer
            logits = self._logits(encoder_output[layer])  # (B, T, C)
            loss = _masked_cross_entropy(logits, labels, labelled_m) * weight
            total_loss = total_loss + loss
            predicted = logits.detach().argmax(dim=-1)  # (B, T)
            stats[f"hubert_loss_m_{layer}"] = loss.detach()
            stats[f"hubert_acc_m_{layer}"] = _accuracy(predicted, labels, mask_m)
            stats[f"hubert_acc_u_{layer}"] = _accuracy(predicted, labels, mask_u)
        stats["num_masked_frames"] = num_labelled.detach().float()
        stats["sample_size"] = num_labelled.detach().float()
        return total_loss, stats

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """ESPnet's ``HuBERTDecoder`` on every frame: (B, T, D) -> (B, T, C), the
        label-embedding scores of ``final_proj(x)`` divided by its 0.1 temperature."""
        decoder = self.decoder
        return decoder.label_embeddings(decoder.final_proj(x)) / LOGIT_TEMPERATURE


def _masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, frames: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over the selected frames, with fixed-size ops.

    Args:
        logits: (B, T, C) float.
        labels: (B, T) long, -1 where unlabelled.
        frames: (B, T) bool, the frames to average over (labelled ones only).

    Returns:
        0-dim float: the mean over ``frames`` (0 with a gradient path when none).
    """
    safe_labels = torch.where(frames, labels, 0)  # any class where not selected
    per_frame = F.cross_entropy(
        logits.transpose(1, 2), safe_labels, reduction="none"
    )  # (B, C, T) -> (B, T)
    per_frame = torch.where(frames, per_frame, 0.0)
    return per_frame.sum() / frames.sum().clamp(min=1)


def _accuracy(
    predicted: torch.Tensor, labels: torch.Tensor, frames: torch.Tensor
) -> torch.Tensor:
    """Share of ``frames`` (B, T) bool whose argmax ``predicted`` (B, T) is the
    label (unlabelled frames count as wrong, as in ESPnet); 0-dim float, 0 when
    there is no frame."""
    correct = ((predicted == labels) & frames).sum()
    return correct.float() / frames.sum().clamp(min=1)
