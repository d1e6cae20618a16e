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

References: W.-N. Hsu et al., "HuBERT: Self-Supervised Speech Representation
Learning by Masked Prediction of Hidden Units", arXiv:2106.07447; fairseq
``fairseq/criterions/hubert_criterion.py`` @ 3d262bb2 (``sample_size`` = masked
frames); ESPnet 202511 ``espnet2/ssl/loss/hubert.py``.
"""

from typing import Dict, List, Optional, Tuple

import torch

from espnet2.ssl.loss.hubert import HuBERTLoss

IGNORE_LABEL = -1  # ESPnet's cross-entropy ignore_index (padded labels)


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
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """ESPnet's HuBERT loss and stats, plus the frame count it averages over.

        Args:
            encoder_output: Per-layer encoder outputs, each (B, T, D) float.
            encoder_output_lengths: Valid frames (B,) long.
            text: Frame labels (B, T) long, padded with -1.
            text_lengths: Labels per utterance (B,) long.
            mask_info: ``mask_m`` (B, T) bool, True on masked frames (never on
                padding), and ``mask_u``.

        Returns:
            The loss (a mean over the N labelled masked frames of the batch) and the
            stats of ``HuBERTLoss`` with ``num_masked_frames`` = ``sample_size`` = N.
        """
        loss, stats = super().forward(
            encoder_output, encoder_output_lengths, text, text_lengths, mask_info
        )
        labelled = int((text[mask_info["mask_m"]] != IGNORE_LABEL).sum())
        stats["num_masked_frames"] = float(labelled)
        stats["sample_size"] = float(labelled)
        return loss, stats
