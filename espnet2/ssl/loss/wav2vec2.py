"""wav2vec 2.0 contrastive pretraining loss with its projection heads.

For each masked frame the context vector (``final_proj`` of the encoder output) must
pick its own quantized CNN features (``project_q`` of the Gumbel quantizer output)
among K distractors: quantized features of other masked frames of the same
utterance. The total adds the codebook diversity penalty and the CNN feature
penalty, weighted as in fairseq's ``wav2vec`` criterion.

References:
    A. Baevski, H. Zhou, A. Mohamed, M. Auli, "wav2vec 2.0: A Framework for
    Self-Supervised Learning of Speech Representations", NeurIPS 2020,
    arXiv:2006.11477, section 3.2 (contrastive and diversity losses).
    Reference implementation: facebookresearch/fairseq at commit 3d262bb2,
    ``fairseq/models/wav2vec/wav2vec2.py`` (``sample_negatives``,
    ``compute_preds``, ``get_extra_losses``) and
    ``fairseq/criterions/wav2vec_criterion.py`` (MIT licence). This file is written
    from the maths; only the facts (negative sampling scheme, cosine logits,
    ``neg_is_pos`` masking, loss weighting by the number of masked frames) follow
    fairseq.

Host syncs: without explicit ``negative_indices`` (training and validation) the loss
is computed with fixed-size tensors over every frame of the batch, weighted by the
mask (the masked frames are never gathered into an (N, ...) tensor, whose size N the
host would have to read), the negatives are drawn on the device, and every stat is
a 0-dim tensor. Explicit ``negative_indices`` (N, K') in masked-frame order (parity
tests) take the gathered path, which reads N.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from typeguard import typechecked

from espnet2.ssl.loss.abs_loss import AbsSSLLoss
from espnet2.ssl.quantizer.gumbel import GumbelVectorQuantizer

INVALID_NEGATIVE = -1  # index of a negative slot without a valid frame


class Wav2Vec2Loss(AbsSSLLoss):
    """Contrastive + diversity + feature-penalty loss of wav2vec 2.0 pretraining.

    The returned loss is fairseq's summed loss divided by the number N of masked
    frames, with ``stats["sample_size"] = N``. ESPnet weights each rank's loss by
    ``sample_size`` and divides by the total, ``sum_i N_i * loss_i / sum_i N_i``,
    which is fairseq's ``sum_i total_i / sum_i N_i`` (gradient divided by the total
    sample size).
    """

    @typechecked
    def __init__(
        self,
        encoder_output_size: int,
        feature_size: int = 512,
        final_dim: int = 256,
        num_negatives: int = 100,
        cross_sample_negatives: int = 0,
        logit_temperature: float = 0.1,
        num_groups: int = 2,
        num_entries: int = 320,
        max_temperature: float = 2.0,
        min_temperature: float = 0.5,
        temperature_decay: float = 0.999995,
        diversity_weight: float = 0.1,
        feature_penalty_weight: float = 10.0,
        feature_dropout: float = 0.1,
        layer: int = -1,
    ):
        """Build the quantizer and the two projection heads.

        Args:
            encoder_output_size: Size D of the context network output. Corresponds
                to ``encoder_embed_dim`` in fairseq; BASE = 768.
            feature_size: Size C of the CNN features fed to the quantizer.
                Corresponds to the last channel count of ``conv_feature_layers`` in
                fairseq (``self.embed``); BASE = 512.
            final_dim: Size of the space where context and targets are compared;
                also the quantizer output size. Corresponds to ``final_dim`` in
                fairseq; BASE = 256.
            num_negatives: Distractors K per masked frame, drawn with replacement
                from the other masked frames of the same utterance. Corresponds to
                ``num_negatives`` in fairseq; BASE = 100.
            cross_sample_negatives: Extra distractors per masked frame drawn from
                the masked frames of the whole batch. Corresponds to
                ``cross_sample_negatives`` in fairseq; BASE = 0.
            logit_temperature: Divisor of the cosine similarities. Corresponds to
                ``logit_temp`` in fairseq; BASE = 0.1.
            num_groups: Quantizer groups G. Corresponds to ``latent_groups`` in
                fairseq; BASE = 2.
            num_entries: Entries V per group. Corresponds to ``latent_vars`` in
                fairseq; BASE = 320.
            max_temperature: Gumbel temperature at update 0. Corresponds to
                ``latent_temp[0]`` in fairseq; BASE = 2.0.
            min_temperature: Gumbel temperature floor. Corresponds to
                ``latent_temp[1]`` in fairseq; BASE = 0.5.
            temperature_decay: Gumbel temperature factor per update. Corresponds to
                ``latent_temp[2]`` in fairseq; BASE = 0.999995.
            diversity_weight: Weight of ``(G*V - prob_perplexity) / (G*V)``, times
                N in the summed loss. Corresponds to ``loss_weights[0]`` of the
                ``wav2vec`` criterion in fairseq; BASE = 0.1.
            feature_penalty_weight: Weight of the mean squared CNN output, times N
                in the summed loss. Corresponds to ``loss_weights[1]`` of the
                ``wav2vec`` criterion in fairseq; BASE = 10.0.
            feature_dropout: Dropout on the quantizer input. Corresponds to
                ``dropout_features`` in fairseq; BASE = 0.1.
            layer: Entry of ``encoder_output`` used as context network output.
                Corresponds to fairseq's final encoder output (no option there);
                BASE = -1.

        Raises:
            ValueError: On negative counts (or none at all), a non-positive
                logit temperature or a dropout outside [0, 1).
        """
        super().__init__()
        if num_negatives < 0 or cross_sample_negatives < 0:
            raise ValueError("negative counts must be >= 0")
        if num_negatives + cross_sample_negatives == 0:
            raise ValueError("need num_negatives + cross_sample_negatives > 0")
        if logit_temperature <= 0.0:
            raise ValueError("logit_temperature must be > 0")
        if not 0.0 <= feature_dropout < 1.0:
            raise ValueError("feature_dropout must be in [0, 1)")
        self.num_negatives = num_negatives
        self.cross_sample_negatives = cross_sample_negatives
        self.logit_temperature = logit_temperature
        self.diversity_weight = diversity_weight
        self.feature_penalty_weight = feature_penalty_weight
        self.layer = layer
        self.util_attributes = ["mask"]
        self.required_inputs = [
            "encoder_output",
            "encoder_output_lengths",
            "mask_info",
            "features",
            "features_penalty",
        ]
        self.quantizer = GumbelVectorQuantizer(
            feature_size,
            num_groups=num_groups,
            num_entries=num_entries,
            output_size=final_dim,
            max_temperature=max_temperature,
            min_temperature=min_temperature,
            temperature_decay=temperature_decay,
        )
        self.project_q = torch.nn.Linear(final_dim, final_dim)
        self.final_proj = torch.nn.Linear(encoder_output_size, final_dim)
        self.feature_dropout = torch.nn.Dropout(feature_dropout)

    def step(self, num_updates: int) -> None:
        """Update the Gumbel temperature; see ``GumbelVectorQuantizer.step``."""
        self.quantizer.step(num_updates)

    def forward(
        self,
        encoder_output: List[torch.Tensor],
        encoder_output_lengths: Optional[torch.Tensor],
        mask_info: Dict[str, torch.Tensor],
        features: torch.Tensor,
        features_penalty: torch.Tensor,
        negative_indices: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Compute the loss over the masked frames of a batch.

        Masked frames are taken in (b, t) row-major order; N is their number.
        Randomness is drawn in this order: Gumbel noise (training only), then the
        negatives. ``feature_dropout`` uses torch's global generator.

        Args:
            encoder_output: Per-layer context network outputs, each (B, T, D) float;
                padded frames may hold anything.
            encoder_output_lengths: (B,) long, valid frames per utterance, or None.
                ``mask_m`` is intersected with them, so padding is never used.
            mask_info: ``mask_m`` (B, T) bool, True on masked frames, and
                ``mask_u`` (unused).
            features: (B, T, C) float, the layer-normed, unmasked CNN features
                (fairseq's ``unmasked_features``), frames of 20 ms for BASE.
            features_penalty: 0-dim float, mean square of the raw CNN output
                (fairseq's ``features_pen``).
            negative_indices: Optional (N, K') long, for each masked frame the
                indices of its distractors among the N masked frames, -1 for an
                empty slot. Given, it replaces the sampling (e.g. for parity tests
                against Hugging Face, whose indices are into the B * T frames and
                must be remapped to masked-frame order).
            generator: Source of the Gumbel noise and of the negatives.

        Returns:
            ``(loss, stats)``: loss is a 0-dim float32, the summed fairseq loss
            divided by N (0 with a gradient path when N == 0). stats holds 0-dim
            detached tensors ``loss_contrastive`` (per masked frame),
            ``loss_diversity``, ``loss_feature_penalty`` (both unweighted),
            ``contrastive_accuracy``,
            ``code_perplexity``, ``prob_perplexity``, ``gumbel_temperature``,
            ``codebook_usage``, ``num_masked_frames`` and ``sample_size`` (both N).
        """
        mask_m = _valid_mask(mask_info["mask_m"], encoder_output_lengths)
        if negative_indices is None:
            return self._loss_over_all_frames(
                encoder_output[self.layer],
                mask_m,
                features,
                features_penalty,
                generator,
            )
        x = self.final_proj(encoder_output[self.layer][mask_m])  # (N, final_dim)
        quantized, prob_perplexity, quantizer_stats = self.quantizer(
            self.feature_dropout(features[mask_m]), generator=generator
        )
        y = self.project_q(quantized)  # (N, final_dim)
        if x.size(0) == 0:
            leaves = x.sum() + y.sum() + prob_perplexity + features_penalty
            return self._empty_batch_result(leaves, features_penalty, quantizer_stats)
        logits = self._contrastive_logits(x, y, negative_indices)
        return self._combine_losses(
            logits, prob_perplexity, features_penalty, quantizer_stats
        )

    def _loss_over_all_frames(
        self,
        hidden: torch.Tensor,
        mask_m: torch.Tensor,
        features: torch.Tensor,
        features_penalty: torch.Tensor,
        generator: Optional[torch.Generator],
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The loss with fixed-size tensors: every frame is projected, quantized
        and scored, and only the masked ones count (no host read).

        Args:
            hidden: (B, T, D) context network output.
            mask_m: (B, T) bool, the masked valid frames.
            features: (B, T, C) quantizer input frames.
            features_penalty: 0-dim float.
            generator: Source of the Gumbel noise, then of the negatives.

        Returns:
            ``(loss, stats)`` as :meth:`forward`.
        """
        batch, frames = mask_m.shape
        flat_mask = mask_m.reshape(-1)  # (B * T,)
        # frames left out hold zeros: whatever they held cannot reach a gradient
        hidden = torch.where(mask_m[..., None], hidden, 0.0)
        features = torch.where(mask_m[..., None], features, 0.0)
        x = self.final_proj(hidden).reshape(batch * frames, -1)  # (B * T, F)
        quantized, prob_perplexity, quantizer_stats = self.quantizer(
            self.feature_dropout(features).reshape(batch * frames, -1),
            generator=generator,
            frame_mask=flat_mask,
        )  # (B, T, C) -> (B * T, C) frames
        y = self.project_q(quantized)  # (B * T, F)
        ranks = self._sample_negatives(mask_m, generator)  # (B, T, K')
        negatives = _ranks_to_frames(ranks.reshape(batch * frames, -1), flat_mask)
        logits = self._contrastive_logits(x, y, negatives, frames)  # (B * T, 1 + K')
        return self._combine_losses(
            logits, prob_perplexity, features_penalty, quantizer_stats, flat_mask
        )

    def _sample_negatives(
        self, mask_m: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Draw distractor indices among the masked frames, for every frame.

        For masked frame i of utterance b, with n_b masked frames, K indices are
        drawn uniformly with replacement from the other n_b - 1 masked frames of b
        (fairseq's trick: draw from [0, n_b - 2], add 1 where >= own position).
        Then ``cross_sample_negatives`` indices are drawn the same way from all N
        masked frames but i. Slots with nothing to draw from (n_b == 1, or N == 1
        for cross-sample ones) hold -1, and so does every slot of an unmasked
        frame. Fixed-size (B, T) ops on the mask's device: no host read.

        Args:
            mask_m: (B, T) bool, True on masked (non-padded) frames.
            generator: Source of the two (B * T, K) and (B * T, cross) float64
                uniform draws, taken in that order; frame (b, t) takes row
                ``b * T + t`` of each (so an utterance's draws depend only on its
                frames, not on the padded length T).

        Returns:
            (B, T, K + cross_sample_negatives) long: for frame (b, t) the ranks of
            its distractors among the batch's N masked frames in (b, t) row-major
            order (``negatives[mask_m]`` is the (N, K') index of the gathered
            path), or -1.
        """
        batch, frames = mask_m.shape
        counts = mask_m.sum(dim=1)  # (B,)
        own = mask_m.long().cumsum(dim=1) - 1  # (B, T) rank within the utterance
        first = (counts.cumsum(dim=0) - counts)[:, None]  # (B, 1) rank of its first
        pool = counts[:, None].expand(batch, frames).reshape(-1)  # (B * T,)
        own_flat = own.clamp(min=0).reshape(-1)  # (B * T,)
        first_flat = first.expand(batch, frames).reshape(-1)  # (B * T,)
        within = _draw_others(pool, own_flat, self.num_negatives, generator)
        within = torch.where(within >= 0, within + first_flat[:, None], within)
        everyone = counts.sum().expand(batch * frames)  # (B * T,) pool: all N
        cross = _draw_others(
            everyone, own_flat + first_flat, self.cross_sample_negatives, generator
        )
        ranks = torch.cat([within, cross], dim=1)  # (B * T, K')
        ranks = torch.where(mask_m.reshape(-1, 1), ranks, INVALID_NEGATIVE)
        return ranks.reshape(batch, frames, -1)  # (B * T, K') -> (B, T, K')

    def _contrastive_logits(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        negative_indices: torch.Tensor,
        utterance_frames: Optional[int] = None,
    ) -> torch.Tensor:
        """Cosine similarity of each context vector with its candidates.

        Args:
            x: (N, F) context vectors of the masked frames.
            y: (N, F) their quantized targets.
            negative_indices: (N, K) long indices into the N frames, -1 = empty.
            utterance_frames: T when the N rows are a (B, T) batch flattened and
                the first ``num_negatives`` columns point into each row's own
                utterance (the all-frames path); None = any frame (gathered path).

        Returns:
            (N, 1 + K) float32, ``cos(x_i, [y_i, y_negatives]) / logit_temperature``
            with -inf for empty slots and for negatives equal to the positive in
            every dim (fairseq's ``neg_is_pos``). The target is class 0.
        """
        valid = negative_indices >= 0  # (N, K)
        index = negative_indices.clamp(min=0)
        with torch.autocast(device_type=x.device.type, enabled=False):
            # unit vectors once per frame, then dot products: the cosine of
            # F.cosine_similarity on (N, 1 + K, F) without recomputing K norms
            x_unit, _ = _unit(x.float())  # (N, F)
            y_unit, y_norm = _unit(y.float())  # (N, F), (N,)
            positive = (x_unit * y_unit).sum(dim=-1, keepdim=True)  # (N, 1)
            if utterance_frames is None:
                negative = _gathered_dots(x_unit, y_unit, index)  # (N, K)
            else:
                negative = self._utterance_dots(x_unit, y_unit, index, utterance_frames)
        with torch.no_grad():  # fairseq's neg_is_pos: same direction, same norm
            same = (y_unit[index] == y_unit[:, None, :]).all(dim=-1) & (
                y_norm[index] == y_norm[:, None]
            )
        negative = negative.masked_fill(~valid | same, float("-inf"))
        return torch.cat([positive, negative], dim=1) / self.logit_temperature

    def _utterance_dots(
        self,
        x_unit: torch.Tensor,
        y_unit: torch.Tensor,
        index: torch.Tensor,
        frames: int,
    ) -> torch.Tensor:
        """``x_unit[n] . y_unit[index[n, k]]`` for a flattened (B, T) batch whose
        first ``num_negatives`` columns stay within each row's utterance.

        Those come from one (B, T, T) similarity matrix per utterance (a batched
        matmul) instead of an (N, K, F) gather of the negatives: the same dot
        products in another summation order, without the gather's backward (an
        accumulating scatter of N * K * F values, serial on a CPU) and without
        keeping (N, K, F) for backward. Cross-utterance columns are gathered.

        Args:
            x_unit: (B * T, F) unit context vectors.
            y_unit: (B * T, F) unit targets.
            index: (B * T, K') long frame indices (clamped: empty slots hold 0).
            frames: T.

        Returns:
            (B * T, K') float32 dot products (junk where the slot is empty).
        """
        rows, dim = x_unit.shape
        batch = rows // frames
        within = self.num_negatives
        similarity = torch.bmm(
            x_unit.view(batch, frames, dim), y_unit.view(batch, frames, dim).mT
        ).view(
            rows, frames
        )  # (B * T, T): frame (b, t) against every frame of b
        first = torch.arange(rows, device=index.device) // frames * frames  # (B * T,)
        local = (index[:, :within] - first[:, None]).clamp(0, frames - 1)
        negative = similarity.gather(1, local)  # (B * T, K)
        if index.size(1) > within:  # cross-sample negatives: any utterance
            cross = _gathered_dots(x_unit, y_unit, index[:, within:])
            negative = torch.cat([negative, cross], dim=1)
        return negative

    def _combine_losses(
        self,
        logits: torch.Tensor,
        prob_perplexity: torch.Tensor,
        features_penalty: torch.Tensor,
        quantizer_stats: Dict[str, torch.Tensor],
        frame_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """fairseq's summed loss, divided by N, and the stats; see forward.

        Args:
            logits: (M, 1 + K) float32 logits, target class 0.
            prob_perplexity: 0-dim float32 with gradient.
            features_penalty: 0-dim float.
            quantizer_stats: The quantizer's stats (0-dim tensors).
            frame_mask: Optional (M,) bool, the rows that count (N = their
                number); None = all M rows.

        Returns:
            The loss (0-dim float32) and the stats as 0-dim detached tensors.
        """
        if frame_mask is None:
            frame_mask = torch.ones(
                logits.size(0), dtype=torch.bool, device=logits.device
            )
        num_masked = frame_mask.sum().float()  # 0-dim N, stays on the device
        divisor = num_masked.clamp(min=1.0)
        num_codevectors = self.quantizer.num_codevectors
        targets = logits.new_zeros(logits.size(0), dtype=torch.long)
        per_frame = F.cross_entropy(logits, targets, reduction="none")  # (M,)
        contrastive = torch.where(frame_mask, per_frame, 0.0).sum()
        diversity = (num_codevectors - prob_perplexity) / num_codevectors
        penalty = features_penalty.float()
        total = (
            contrastive
            + self.diversity_weight * diversity * num_masked
            + self.feature_penalty_weight * penalty * num_masked
        )
        stats = {
            "loss_contrastive": contrastive.detach() / divisor,
            "loss_diversity": diversity.detach(),
            "loss_feature_penalty": penalty.detach(),
            "contrastive_accuracy": _accuracy(logits.detach(), frame_mask),
            **quantizer_stats,
            "num_masked_frames": num_masked,
            "sample_size": num_masked,
        }
        return total / divisor, stats

    def _empty_batch_result(
        self,
        leaves: torch.Tensor,
        features_penalty: torch.Tensor,
        quantizer_stats: Dict[str, torch.Tensor],
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Zero loss that keeps every parameter in the graph, for N == 0 on the
        gathered path.

        Per-frame stats are 0; with ``sample_size`` 0 they carry no weight in
        ESPnet's averages.
        """
        zero = torch.zeros((), device=leaves.device)
        stats = {
            "loss_contrastive": zero,
            "loss_diversity": zero,
            "loss_feature_penalty": features_penalty.detach().float(),
            "contrastive_accuracy": zero,
            **quantizer_stats,
            "num_masked_frames": zero,
            "sample_size": zero,
        }
        return 0.0 * leaves.float(), stats


def _unit(v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, F) vectors -> (N, F) unit vectors and (N,) norms (floored at 1e-8 for
    the division, as torch's cosine similarity floors them)."""
    norm = v.norm(dim=-1)
    return v / norm.clamp(min=1e-8)[:, None], norm


def _gathered_dots(
    x_unit: torch.Tensor, y_unit: torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """(N, F), (N, F), (N, K) long -> (N, K): ``x_unit[n] . y_unit[index[n, k]]``."""
    return torch.einsum("nf,nkf->nk", x_unit, y_unit[index])


def _valid_mask(mask_m: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, T) bool mask of masked frames, restricted to the first lengths[b]."""
    if lengths is None:
        return mask_m.bool()
    frames = torch.arange(mask_m.size(1), device=mask_m.device)  # (T,)
    return mask_m.bool() & (frames[None, :] < lengths.to(mask_m.device)[:, None])


def _draw_others(
    pool_size: torch.Tensor,
    own_index: torch.Tensor,
    num_draws: int,
    generator: Optional[torch.Generator],
) -> torch.Tensor:
    """Uniform draws with replacement from a pool, skipping one's own index.

    Args:
        pool_size: (N,) long, size n_i of each frame's pool.
        own_index: (N,) long, the frame's own index within its pool.
        num_draws: Draws per frame.
        generator: Source of one (N, num_draws) float64 uniform draw.

    Returns:
        (N, num_draws) long indices within the pool, in [0, n_i) and never
        ``own_index``; -1 where the pool holds nothing but the frame itself.
    """
    others = (pool_size - 1)[:, None]  # (N, 1)
    uniform = torch.rand(
        (own_index.numel(), num_draws),
        generator=generator,
        device=own_index.device,
        dtype=torch.float64,
    )
    draw = torch.floor(uniform * others).long()  # in [0, n_i - 2]
    draw = torch.minimum(draw, (others - 1).clamp(min=0))  # guard against rounding
    draw = draw + (draw >= own_index[:, None]).long()
    return torch.where(others > 0, draw, torch.full_like(draw, INVALID_NEGATIVE))


def _ranks_to_frames(ranks: torch.Tensor, flat_mask: torch.Tensor) -> torch.Tensor:
    """Masked-frame ranks -> frame indices, without a host read.

    Args:
        ranks: (M, K) long ranks among the masked frames in row-major order, or -1.
        flat_mask: (M,) bool, the masked frames of the flattened (B * T) batch.

    Returns:
        (M, K) long indices into the M frames (-1 kept).
    """
    # stable sort: the masked frames first, in order, so order[r] is the r-th one
    order = torch.argsort((~flat_mask).to(torch.uint8), stable=True)  # (M,)
    frames = order[ranks.clamp(min=0)]  # (M, K)
    return torch.where(ranks >= 0, frames, INVALID_NEGATIVE)


def _accuracy(
    logits: torch.Tensor, frame_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Share of rows whose logit 0 is the strict maximum, as a 0-dim tensor.

    A tie between the positive and a negative counts as wrong (fairseq counts
    ``argmax == 0`` unless all logits tie). A row without a valid negative counts
    as right. Only rows in ``frame_mask`` (M,) bool count (all when None); 0 when
    none does.
    """
    padding = logits.new_full((logits.size(0), 1), float("-inf"))
    best_negative = torch.cat([logits[:, 1:], padding], dim=1).amax(dim=1)  # (M,)
    right = logits[:, 0] > best_negative  # (M,)
    if frame_mask is None:
        return right.float().mean()
    return (right & frame_mask).sum().float() / frame_mask.sum().clamp(min=1)
