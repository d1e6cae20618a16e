# SummaryMixing: a linear-time replacement for multi-head self-attention.
#
# Papers:
#   T. Parcollet, R. van Dalen, S. Zhang, S. Bhattacharya, "SummaryMixing: A Linear-
#     Complexity Alternative to Self-Attention for Speech Recognition and
#     Understanding", Interspeech 2024, https://arxiv.org/abs/2307.07421
#     (Eq. 1-2: local transform, mean summary, combiner);
#   T. Parcollet, R. van Dalen, S. Zhang, S. Bhattacharya, "Linear-Complexity Self-
#     Supervised Learning for Speech Processing", Interspeech 2024,
#     https://arxiv.org/abs/2407.13377 (the SSL variant with layer norms).
# Reference implementation, read for facts only (non-commercial licence; no code
#   copied): SamsungLabs/SummaryMixing (SpeechBrain fork) @ c6c98f9 and branch
#   IS24_PR, speechbrain/nnet/summary_mixing.py and lobes/models/VanillaNN.py
#   (@ 144eee0: branch = hidden layers + one output layer, ParallelLinear's
#   initialisation, layer norms in full mode only) and the SSL BASE hparams
#   recipes/Libri-Light/self-supervised-learning/wav2vec2/hparams/
#   summarymixing_wav2vec2.yaml (@ 98dc9fc).
"""SummaryMixing: every frame mixes with one masked mean over the utterance.

For input frames x_t (t < T valid frames of an utterance), SummaryMixing computes

    f_t = local(x_t)                       local transform (Eq. 1b)
    s   = 1/T * sum_{t < T} summary(x_t)   the summary, a mean over VALID frames only
    y_t = act(W_c [f_t ; s] + b_c)         combiner (Eq. 1c)

where ``local`` and ``summary`` are stacks of [linear -> activation] (the activation
follows every layer, the last included). With ``num_heads = H`` each of their linear
layers is block-diagonal: the D features split into H groups of D/H that are
projected separately (the "heads"), costing D^2 / H multiply-adds per frame instead
of D^2. ``use_layer_norm`` adds a LayerNorm on f_t and on s before the combiner (the
SSL variant, IS24_PR). ``mode = "summary_mixing_lite"`` drops f and the combiner:
y_t = s for every t.

The cost is linear in T: no T x T matrix exists. Padded frames never reach s, and
nothing on a valid frame depends on them.
"""

import math
from typing import Sequence

import torch
from typeguard import typechecked

from espnet2.asr.layers.activation import build_activation

MODES = ("summary_mixing", "summary_mixing_lite")


class BlockDiagonalLinear(torch.nn.Module):
    """A linear layer whose weight is block-diagonal: H independent projections.

    The input features split into ``num_heads`` contiguous groups of
    ``in_features / num_heads``; group h is projected by its own weight to
    ``out_features / num_heads`` outputs, and the outputs are concatenated in
    group order. With one head this is ``torch.nn.Linear``.

    Corresponds to ``ParallelLinear`` (``n_split``) in the reference VanillaNN.
    """

    @typechecked
    def __init__(self, in_features: int, out_features: int, num_heads: int = 1):
        """Builds the weight (H, in/H, out/H) and bias (out,).

        Args:
            in_features: Input size D_in, divisible by ``num_heads``.
            out_features: Output size D_out, divisible by ``num_heads``.
            num_heads: Number of diagonal blocks H.
        """
        super().__init__()
        if num_heads < 1 or in_features % num_heads or out_features % num_heads:
            raise ValueError(
                f"in_features ({in_features}) and out_features ({out_features}) "
                f"must be divisible by num_heads ({num_heads} >= 1)"
            )
        self.num_heads = num_heads
        self.weight = torch.nn.Parameter(
            torch.empty(num_heads, in_features // num_heads, out_features // num_heads)
        )
        self.bias = torch.nn.Parameter(torch.zeros(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation (``ParallelLinear`` / ``nn.Linear``).

        With H > 1 the reference initialises its (H, in/H, out/H) weight with
        ``kaiming_uniform_(a=sqrt(5))``, whose fan-in for a 3-D tensor is
        (in/H) * (out/H), and its (H, out/H) bias the same way (fan-in out/H):
        weight ~ U(+-1/sqrt((in/H)(out/H))), bias ~ U(+-1/sqrt(out/H)). With H = 1
        it uses ``nn.Linear`` (weight ~ U(+-1/sqrt(in))) and zeroes the bias.
        """
        heads, group_in, group_out = self.weight.shape
        if heads == 1:
            bound = 1.0 / math.sqrt(group_in)
            torch.nn.init.uniform_(self.weight, -bound, bound)
            torch.nn.init.zeros_(self.bias)
            return
        bound = 1.0 / math.sqrt(group_in * group_out)
        torch.nn.init.uniform_(self.weight, -bound, bound)
        bias_bound = 1.0 / math.sqrt(group_out)
        torch.nn.init.uniform_(self.bias, -bias_bound, bias_bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project (..., D_in) -> (..., D_out)."""
        heads, group_in, _ = self.weight.shape
        x = x.reshape(*x.shape[:-1], heads, group_in)  # (..., D_in) -> (..., H, D_in/H)
        y = torch.einsum("...hi,hio->...ho", x, self.weight)  # (..., H, D_out/H)
        return y.flatten(-2) + self.bias  # (..., H, D_out/H) -> (..., D_out)


class PointwiseMLP(torch.nn.Sequential):
    """[BlockDiagonalLinear -> activation] per layer, applied to every frame alone."""

    @typechecked
    def __init__(
        self, input_size: int, units: Sequence[int], num_heads: int, activation: str
    ):
        """Builds one layer per entry of ``units``.

        Args:
            input_size: Input size D_in.
            units: Output size of each layer; the last is the MLP's output size.
            num_heads: Diagonal blocks of every linear layer.
            activation: Name of the activation after every layer (ACTIVATIONS).
        """
        if len(units) == 0:
            raise ValueError("an MLP needs at least one layer (units is empty)")
        layers = []
        for size_in, size_out in zip((input_size, *units[:-1]), units):
            layers.append(BlockDiagonalLinear(size_in, size_out, num_heads))
            layers.append(build_activation(activation))
        super().__init__(*layers)
        self.output_size = units[-1]


def masked_mean(x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of each utterance.

    Args:
        x: Frames (B, T, D); padded frames may hold anything, even inf or NaN.
        pad_mask: (B, T) bool, True on padded frames.

    Returns:
        (B, 1, D): the mean of x over the valid frames; zeros for an utterance
        without valid frames.
    """
    x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)  # (B, T, D), padding exactly 0
    count = (~pad_mask).sum(dim=1).clamp(min=1)  # (B,)
    return x.sum(dim=1, keepdim=True) / count.to(x.dtype)[:, None, None]


class SummaryMixing(torch.nn.Module):
    """SummaryMixing (or SummaryMixing-lite) over a padded batch.

    ``forward(x, pad_mask)`` maps (B, T, input_size) to (B, T, output_size). The
    output on a valid frame depends only on the valid frames of its own utterance.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int,
        local_units: Sequence[int] = (512, 512),
        summary_units: Sequence[int] = (1024, 1024),
        num_heads: int = 1,
        activation: str = "gelu",
        dropout_rate: float = 0.1,
        use_layer_norm: bool = False,
        mode: str = "summary_mixing",
    ):
        """Builds the local, summary and combiner networks.

        Args:
            input_size: Input size D.
            output_size: Output size. Corresponds to ``summary_out_dim`` in the
                reference; d_model inside a Conformer block.
            local_units: Output size of every layer of the local transform f, the
                last being its output. The reference builds ``local_proj_hid_dim``
                followed by ``local_proj_out_dim``: its default [512] + 512 is
                [512, 512] here, the SSL BASE [768] + 768 is [768, 768].
            summary_units: Output size of every layer of the summary function, the
                last being its output: the reference's ``summary_hid_dim`` followed
                by ``summary_out_dim`` (default [1024] + 1024 = [1024, 1024]; SSL
                BASE [768, 768]). In the lite mode the last must equal
                ``output_size``.
            num_heads: Diagonal blocks of the local and summary linears.
                Corresponds to ``nhead`` (``n_split``); SSL BASE 8.
            activation: Activation after every linear (ACTIVATIONS). The reference
                uses the Conformer's activation (swish) inside a Conformer.
            dropout_rate: Dropout on [f ; s] before the combiner. Corresponds to
                ``global_dropout``; reference 0.1.
            use_layer_norm: LayerNorm on f (after masking) and on s (after the
                mean) in full SummaryMixing; the lite mode, as in the reference,
                normalises nothing. The SSL variant (IS24_PR): True.
            mode: "summary_mixing" or "summary_mixing_lite" (summary only).
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.summary = PointwiseMLP(input_size, summary_units, num_heads, activation)
        if mode == "summary_mixing_lite":  # the reference normalises in full mode only
            self.summary_norm = torch.nn.Identity()
            if summary_units[-1] != output_size:
                raise ValueError(
                    f"summary_mixing_lite outputs the summary itself: the last of "
                    f"summary_units ({summary_units[-1]}) must equal output_size "
                    f"({output_size})"
                )
            return
        self.summary_norm = self._norm(use_layer_norm, summary_units[-1])
        self.local = PointwiseMLP(input_size, local_units, num_heads, activation)
        self.local_norm = self._norm(use_layer_norm, local_units[-1])
        self.dropout = torch.nn.Dropout(dropout_rate)
        self.combiner = torch.nn.Linear(
            local_units[-1] + summary_units[-1], output_size
        )
        torch.nn.init.zeros_(self.combiner.bias)
        self.combiner_activation = build_activation(activation)

    @staticmethod
    def _norm(use_layer_norm: bool, size: int) -> torch.nn.Module:
        return torch.nn.LayerNorm(size) if use_layer_norm else torch.nn.Identity()

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Mix every frame with the summary of its utterance.

        Args:
            x: Frames (B, T, input_size); padded frames may hold anything finite.
            pad_mask: (B, T) bool, True on padded frames (``make_pad_mask``).

        Returns:
            (B, T, output_size). Values on padded frames are unspecified.
        """
        summary = self.summary_norm(masked_mean(self.summary(x), pad_mask))  # (B, 1, S)
        if self.mode == "summary_mixing_lite":
            return summary.expand(-1, x.shape[1], -1)  # (B, 1, S) -> (B, T, S)
        local = self.local(x).masked_fill(pad_mask.unsqueeze(-1), 0.0)  # (B, T, L)
        local = self.local_norm(local)
        both = torch.cat([local, summary.expand(-1, x.shape[1], -1)], dim=-1)
        return self.combiner_activation(self.combiner(self.dropout(both)))
