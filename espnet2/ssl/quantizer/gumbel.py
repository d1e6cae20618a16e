"""Gumbel-softmax product quantizer of wav2vec 2.0.

The quantizer maps each frame of CNN features to the concatenation of ``G`` codebook
entries, one per group, each chosen among ``V`` learned entries by a hard
Gumbel-softmax (straight-through) in training and by argmax in evaluation.

References:
    A. Baevski, H. Zhou, A. Mohamed, M. Auli, "wav2vec 2.0: A Framework for
    Self-Supervised Learning of Speech Representations", NeurIPS 2020,
    arXiv:2006.11477, section 2 ("Quantization module") and section 3.2.
    E. Jang, S. Gu, B. Poole, "Categorical Reparameterization with Gumbel-Softmax",
    ICLR 2017, arXiv:1611.01144.
    Reference implementation: facebookresearch/fairseq at commit 3d262bb2,
    ``fairseq/modules/gumbel_vector_quantizer.py`` (MIT licence). This file is
    written from the maths; only the facts (initialisation, temperature schedule,
    perplexity formulas and their 1e-7 smoothing) follow fairseq.
"""

from typing import Dict, Optional, Tuple

import torch
from typeguard import typechecked

PERPLEXITY_EPS = 1e-7  # fairseq's smoothing inside the log of the perplexities


def group_perplexity(
    probs: torch.Tensor, frame_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Perplexity of the frame-averaged distribution of each group.

    ``exp(H(p_g))`` with ``p_g`` the mean of ``probs[:, g]`` over the frames and
    ``H(p) = -sum_v p_v log(p_v + 1e-7)`` (fairseq's smoothing). Each value lies in
    ``[1, V]`` up to that smoothing (a one-hot average gives ``1 - 1.2e-7``, a
    uniform one ``V / (1 + 1e-7 V)``). With zero frames the average is taken as all
    zeros, which gives 1 per group.

    Args:
        probs: (N, G, V) float, a distribution over the V entries per frame and group.
        frame_mask: Optional (N,) bool, the frames to average over (the others are
            left out, whatever they hold); None = every frame.

    Returns:
        (G,) float, the perplexity of each group, differentiable w.r.t. ``probs``.
    """
    if frame_mask is None:
        count = max(probs.size(0), 1)
    else:
        probs = torch.where(frame_mask[:, None, None], probs, 0.0)
        count = frame_mask.sum().clamp(min=1)  # 0-dim: no host read
    mean_probs = probs.sum(dim=0) / count  # (G, V)
    entropy = -(mean_probs * torch.log(mean_probs + PERPLEXITY_EPS)).sum(dim=-1)
    return torch.exp(entropy)


class GumbelVectorQuantizer(torch.nn.Module):
    """Product quantizer with G groups of V entries, trained by hard Gumbel-softmax."""

    @typechecked
    def __init__(
        self,
        input_size: int,
        num_groups: int = 2,
        num_entries: int = 320,
        output_size: int = 256,
        max_temperature: float = 2.0,
        min_temperature: float = 0.5,
        temperature_decay: float = 0.999995,
    ):
        """Build the logit projection and the codebook.

        Args:
            input_size: Size C of the input features. Corresponds to ``dim`` of
                fairseq's ``GumbelVectorQuantizer`` (the CNN's last channel count);
                BASE = 512.
            num_groups: Number G of groups (codebooks). Corresponds to
                ``latent_groups`` in fairseq; BASE = 2.
            num_entries: Number V of entries per group. Corresponds to
                ``latent_vars`` in fairseq; BASE = 320.
            output_size: Size of the quantized vector; each entry has
                ``output_size // num_groups`` dims. Corresponds to ``vq_dim`` in
                fairseq (= ``final_dim`` when ``latent_dim`` is 0); BASE = 256.
            max_temperature: Gumbel-softmax temperature at update 0. Corresponds to
                ``latent_temp[0]`` in fairseq; BASE = 2.0.
            min_temperature: Floor of the temperature. Corresponds to
                ``latent_temp[1]`` in fairseq; BASE = 0.5.
            temperature_decay: Factor applied per optimizer update. Corresponds to
                ``latent_temp[2]`` in fairseq; BASE = 0.999995 (the floor 0.5 is
                reached after about 277k updates).

        Raises:
            ValueError: If a size is not positive, ``output_size`` is not a multiple
                of ``num_groups``, or the temperatures are not
                ``0 < min_temperature <= max_temperature`` with a decay in (0, 1].
        """
        super().__init__()
        if min(input_size, num_groups, num_entries, output_size) <= 0:
            raise ValueError("input_size, num_groups, num_entries, output_size > 0")
        if output_size % num_groups != 0:
            raise ValueError(f"output_size {output_size} % num_groups {num_groups}")
        if not 0.0 < min_temperature <= max_temperature:
            raise ValueError("need 0 < min_temperature <= max_temperature")
        if not 0.0 < temperature_decay <= 1.0:
            raise ValueError("temperature_decay must be in (0, 1]")
        self.num_groups = num_groups
        self.num_entries = num_entries
        self.output_size = output_size
        self.max_temperature = max_temperature
        self.min_temperature = min_temperature
        self.temperature_decay = temperature_decay
        self.temperature = max_temperature
        self.weight_proj = torch.nn.Linear(input_size, num_groups * num_entries)
        torch.nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        torch.nn.init.zeros_(self.weight_proj.bias)
        entry_size = output_size // num_groups
        self.codevectors = torch.nn.Parameter(
            torch.empty(1, num_groups * num_entries, entry_size)
        )
        torch.nn.init.uniform_(self.codevectors)

    @property
    def num_codevectors(self) -> int:
        """Total number of codebook entries, G * V."""
        return self.num_groups * self.num_entries

    def step(self, num_updates: int) -> None:
        """Set the temperature to ``max(max_t * decay**num_updates, min_t)``.

        Args:
            num_updates: Number of optimizer updates done so far (fairseq's
                ``set_num_updates``). ESPnet's SSL model passes its ``global_step``,
                a one-element tensor counting training forwards, which equals the
                number of updates only with ``accum_grad == 1``.
        """
        decayed = self.max_temperature * self.temperature_decay ** int(num_updates)
        self.temperature = max(decayed, self.min_temperature)

    def forward(
        self,
        x: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        frame_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Quantize frames.

        Runs in float32 with autocast disabled, like fairseq's float logits.

        Args:
            x: (N, C) float frames. N may be 0.
            generator: Source of the Gumbel noise in training, on ``x``'s device;
                ``None`` uses torch's global generator. Unused in eval mode.
            frame_mask: Optional (N,) bool, the frames the perplexities and the
                usage are computed over (e.g. the masked frames when ``x`` holds
                every frame of a batch, to avoid a variable-size gather); every
                frame is still quantized. None = all N frames.

        Returns:
            A tuple ``(q, prob_perplexity, stats)``:

            - q: (N, output_size) float32. In training the hard one-hot of the
              Gumbel-perturbed logits picks one entry per group (forward value),
              with the gradient of the soft Gumbel-softmax (straight-through). In
              eval mode the argmax of the logits picks the entries.
            - prob_perplexity: 0-dim float32 with gradient, the sum over groups of
              :func:`group_perplexity` of the softmax probabilities, in [G, G*V].
            - stats: 0-dim detached tensors (no host read) ``code_perplexity``
              (the same sum for the
              one-hot argmax of the noise-free logits, in [G, G*V]),
              ``prob_perplexity`` (detached), ``gumbel_temperature`` and
              ``codebook_usage`` (share of the G*V entries that are the argmax of
              at least one frame, in [0, 1]). With N == 0, q is (0, output_size),
              both perplexities are G (see :func:`group_perplexity`) and the usage
              is 0, so a loss built on them stays finite.
        """
        if x.dim() != 2:
            raise ValueError(f"expected (N, C) frames, got shape {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = self._group_logits(x)
            argmax_one_hot = _one_hot_argmax(logits)
            if self.training:
                one_hot = self._gumbel_one_hot(logits, generator)
            else:
                one_hot = argmax_one_hot
            q = self._lookup(one_hot)
            probs = logits.softmax(dim=-1)  # (N, G, V)
            prob_perplexity = group_perplexity(probs, frame_mask).sum()
        stats = self._stats(argmax_one_hot, prob_perplexity, frame_mask)
        return q, prob_perplexity, stats

    def _group_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) features -> (N, G, V) float32 logits."""
        logits = self.weight_proj(x.to(self.weight_proj.weight.dtype)).float()
        # (N, G * V) -> (N, G, V)
        return logits.view(x.size(0), self.num_groups, self.num_entries)

    def _gumbel_one_hot(
        self, logits: torch.Tensor, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        """Hard Gumbel-softmax sample with the soft sample's gradient.

        Args:
            logits: (N, G, V) float32.
            generator: Source of the uniform noise.

        Returns:
            (N, G, V) float32 whose value is exactly one-hot along V.
        """
        uniform = torch.rand(
            logits.shape, generator=generator, device=logits.device
        ).clamp(min=torch.finfo(torch.float32).tiny)
        gumbel = -torch.log(-torch.log(uniform))
        soft = ((logits + gumbel) / self.temperature).softmax(dim=-1)
        hard = _one_hot_argmax(soft)
        # soft - soft.detach() is exactly 0, so the value stays one-hot
        return hard + (soft - soft.detach())

    def _lookup(self, one_hot: torch.Tensor) -> torch.Tensor:
        """(N, G, V) one-hot selection -> (N, output_size) concatenated entries."""
        # (1, G * V, d) -> (G, V, d)
        entries = self.codevectors.view(self.num_groups, self.num_entries, -1)
        selected = torch.einsum("ngv,gvd->ngd", one_hot.to(entries.dtype), entries)
        # (N, G, d) -> (N, G * d); explicit size so that N == 0 works
        return selected.reshape(one_hot.size(0), self.output_size)

    def _stats(
        self,
        argmax_one_hot: torch.Tensor,
        prob_perplexity: torch.Tensor,
        frame_mask: Optional[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Monitoring values as 0-dim tensors on the frames' device; see
        :meth:`forward`."""
        argmax_one_hot = argmax_one_hot.detach()
        code_perplexity = group_perplexity(argmax_one_hot, frame_mask).sum()
        if frame_mask is not None:  # (N, G, V): frames left out count nothing
            argmax_one_hot = torch.where(frame_mask[:, None, None], argmax_one_hot, 0)
        counts = argmax_one_hot.sum(dim=0)  # (G, V)
        device = argmax_one_hot.device
        return {
            "code_perplexity": code_perplexity,
            "prob_perplexity": prob_perplexity.detach(),
            # a fill on the device (a Python float would be copied host-to-device)
            "gumbel_temperature": torch.full((), self.temperature, device=device),
            "codebook_usage": (counts > 0).float().mean(),
        }


def _one_hot_argmax(scores: torch.Tensor) -> torch.Tensor:
    """(..., V) scores -> (..., V) float32 one-hot of the argmax along V."""
    index = scores.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(scores, dtype=torch.float32).scatter_(-1, index, 1.0)
