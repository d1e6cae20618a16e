# A Conformer encoder whose self-attention is replaced by SummaryMixing.
#
# Papers:
#   T. Parcollet, R. van Dalen, S. Zhang, S. Bhattacharya, "SummaryMixing: A Linear-
#     Complexity Alternative to Self-Attention for Speech Recognition and
#     Understanding", Interspeech 2024, https://arxiv.org/abs/2307.07421;
#   T. Parcollet, R. van Dalen, S. Zhang, S. Bhattacharya, "Linear-Complexity Self-
#     Supervised Learning for Speech Processing", Interspeech 2024,
#     https://arxiv.org/abs/2407.13377;
#   A. Gulati et al., "Conformer: Convolution-augmented Transformer for Speech
#     Recognition", Interspeech 2020, https://arxiv.org/abs/2005.08100.
# Reference implementations, read for facts only (no code copied):
#   SamsungLabs/SummaryMixing branch IS24_PR (non-commercial licence),
#     speechbrain/lobes/models/transformer/Conformer.py (ConformerEncoderLayer with
#     attention_type "SummaryMixing": block order, masked convolution module);
#   ESPnet 202511 espnet2/asr/encoder/conformer_encoder.py and
#     espnet/nets/pytorch_backend/conformer/encoder_layer.py (option names).
"""SummaryMixing Conformer encoder (``encoder: summary_mixing``).

Each block is a pre-LN Conformer block (ESPnet's ``normalize_before: true`` order):

    x = x + 1/2 FFN(LN(x))                    macaron feed-forward
    x = x + Mixer(LN(x), padding)             SummaryMixing (or self-attention)
    x = x + Conv(LN(x), padding)              convolution module, padding masked
    x = LN(x + 1/2 FFN(LN(x)))

``mixer`` picks SummaryMixing (linear in the number of frames), SummaryMixing-lite
(summary only), or ESPnet's multi-head self-attention, so the same block with the
mixer swapped is the reference a comparison needs. Unlike ESPnet's
``ConvolutionModule``, the convolution module zeroes padded frames before its
depthwise convolution, and its default normalisation is a LayerNorm (SpeechBrain),
so that an utterance's output does not depend on its batch neighbours or padding
(with ``cnn_module_norm: batch_norm`` this holds in eval mode only).

A Branchformer variant is not provided: ESPnet's cgMLP branch does not mask padded
frames either, and would need the same masked rewrite.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
from espnet.nets.pytorch_backend.transformer.attention import (
    MultiHeadedAttention,
    RelPositionMultiHeadedAttention,
)
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)
from typeguard import typechecked

from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.encoder.building_blocks import (
    build_input_layer,
    build_positional_encoding,
    embed_input,
    kept_layers,
    padding_mask,
)
from espnet2.asr.layers.activation import build_activation
from espnet2.asr.layers.summary_mixing import SummaryMixing

MIXERS = ("summary_mixing", "summary_mixing_lite", "self_attention")
CNN_MODULE_NORMS = ("layer_norm", "batch_norm")


class MaskedConvolutionModule(torch.nn.Module):
    """Conformer convolution module that never reads padded frames.

    Pointwise conv (D -> 2D), GLU, padded frames set to 0, depthwise conv over time
    ("same" padding), LayerNorm or BatchNorm, activation, pointwise conv (D -> D).
    """

    @typechecked
    def __init__(
        self, size: int, kernel_size: int, norm: str, activation: str, eps: float
    ):
        """Builds the convolutions.

        Args:
            size: Channels D.
            kernel_size: Depthwise kernel in frames, odd. ESPnet
                ``cnn_module_kernel``; 31 in ESPnet and SpeechBrain Conformers.
            norm: "layer_norm" (SpeechBrain; batch-independent) or "batch_norm"
                (ESPnet's ConvolutionModule).
            activation: Activation after the norm (``build_activation`` names).
            eps: LayerNorm epsilon.
        """
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"cnn_module_kernel must be odd, got {kernel_size}")
        if norm not in CNN_MODULE_NORMS:
            raise ValueError(f"cnn_module_norm must be one of {CNN_MODULE_NORMS}")
        self.pointwise_in = torch.nn.Conv1d(size, 2 * size, kernel_size=1)
        self.depthwise = torch.nn.Conv1d(
            size, size, kernel_size, padding=kernel_size // 2, groups=size
        )
        self.norm_type = norm
        self.norm = (
            torch.nn.LayerNorm(size, eps=eps)
            if norm == "layer_norm"
            else torch.nn.BatchNorm1d(size)
        )
        self.activation = build_activation(activation)
        self.pointwise_out = torch.nn.Conv1d(size, size, kernel_size=1)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Convolve valid frames only: (B, T, D), (B, T) True on padding -> (B, T, D).

        Values on padded output frames are unspecified.
        """
        if x.shape[1] == 0:  # no frames (a batch of empty utterances)
            return x
        x = x.transpose(1, 2)  # (B, T, D) -> (B, D, T)
        x = torch.nn.functional.glu(self.pointwise_in(x), dim=1)  # (B, D, T)
        x = x.masked_fill(pad_mask.unsqueeze(1), 0.0)  # nothing leaks from padding
        x = self.depthwise(x)
        if self.norm_type == "layer_norm":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)  # LN over D
        else:
            x = self.norm(x)
        x = self.pointwise_out(self.activation(x))
        return x.transpose(1, 2)  # (B, D, T) -> (B, T, D)


class SelfAttentionMixer(torch.nn.Module):
    """ESPnet's multi-head self-attention behind the mixer interface.

    Relative-position attention (ESPnet ``rel_selfattn``, "latest") with
    ``pos_enc_layer_type: rel_pos``, always on ESPnet's exact path; otherwise plain
    scaled dot-product attention, through torch's SDPA (``use_sdpa``, default) or
    ESPnet's exact softmax. Never flash attention.
    """

    @typechecked
    def __init__(
        self,
        size: int,
        heads: int,
        dropout_rate: float,
        relative: bool,
        use_sdpa: bool = True,
    ):
        """Builds ESPnet's attention module.

        Args:
            size: Model width D (divisible by ``heads``).
            heads: Number of attention heads.
            dropout_rate: Dropout on the attention weights (training only).
            relative: Use relative-position attention (``pos_enc_layer_type:
                rel_pos``); ``forward`` then needs ``pos_emb``.
            use_sdpa: Plain attention through
                ``torch.nn.functional.scaled_dot_product_attention`` (ESPnet's
                ``MultiHeadedAttention.use_sdpa``): bool padding mask, dropout in
                training only, no (B, H, T, T) probabilities kept in ``attn``.
                False keeps ESPnet's exact matmul -> softmax -> dropout path.
                Ignored with ``relative``: SDPA cannot add the relative-position
                term without materialising it as a (B, H, T, T) bias, so that
                attention keeps ESPnet's exact path (and its ``attn``).
        """
        super().__init__()
        self.relative = relative
        if relative:
            self.attention = RelPositionMultiHeadedAttention(heads, size, dropout_rate)
        else:
            self.attention = MultiHeadedAttention(
                heads, size, dropout_rate, use_sdpa=use_sdpa
            )

    def forward(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor,
        pos_emb: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Attend over valid frames: (B, T, D), (B, T), PE (1, 2T-1, D) -> (B, T, D)."""
        if x.shape[1] == 0:  # no frames: ESPnet's SDPA path cannot reshape (B, 0)
            return x
        keep = ~pad_mask.unsqueeze(1)  # (B, T) -> (B, 1, T), True = valid
        if self.relative:
            return self.attention(x, x, x, pos_emb, keep)
        return self.attention(x, x, x, keep)


class MixerConformerLayer(torch.nn.Module):
    """One pre-LN Conformer block with a pluggable mixer (see the module docstring)."""

    @typechecked
    def __init__(
        self,
        size: int,
        mixer: torch.nn.Module,
        feed_forward: torch.nn.Module,
        feed_forward_macaron: Optional[torch.nn.Module],
        conv_module: Optional[torch.nn.Module],
        dropout_rate: float,
        eps: float,
    ):
        """Takes built submodules (None leaves the macaron FFN or conv module out)."""
        super().__init__()
        self.mixer = mixer
        self.feed_forward = feed_forward
        self.feed_forward_macaron = feed_forward_macaron
        self.conv_module = conv_module
        self.norm_ff = torch.nn.LayerNorm(size, eps=eps)
        self.norm_mixer = torch.nn.LayerNorm(size, eps=eps)
        if feed_forward_macaron is not None:
            self.norm_ff_macaron = torch.nn.LayerNorm(size, eps=eps)
        if conv_module is not None:
            self.norm_conv = torch.nn.LayerNorm(size, eps=eps)
        self.norm_final = torch.nn.LayerNorm(size, eps=eps)
        self.ff_scale = 0.5 if feed_forward_macaron is not None else 1.0
        self.dropout = torch.nn.Dropout(dropout_rate)

    def forward(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor,
        pos_emb: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """One block: (B, T, D), (B, T) True on padding -> (B, T, D).

        ``pos_emb`` (relative positions) reaches a self-attention mixer only.
        """
        if self.feed_forward_macaron is not None:
            ff = self.feed_forward_macaron(self.norm_ff_macaron(x))
            x = x + self.ff_scale * self.dropout(ff)
        x = x + self.dropout(self._mix(self.norm_mixer(x), pad_mask, pos_emb))
        if self.conv_module is not None:
            x = x + self.dropout(self.conv_module(self.norm_conv(x), pad_mask))
        x = x + self.ff_scale * self.dropout(self.feed_forward(self.norm_ff(x)))
        return self.norm_final(x)

    def _mix(
        self, x: torch.Tensor, pad_mask: torch.Tensor, pos_emb: Optional[torch.Tensor]
    ) -> torch.Tensor:
        if isinstance(self.mixer, SelfAttentionMixer):
            return self.mixer(x, pad_mask, pos_emb)
        return self.mixer(x, pad_mask)


def feed_forward(size: int, units: int, dropout_rate: float, activation: str):
    """ESPnet's position-wise feed-forward D -> units -> D."""
    return PositionwiseFeedForward(
        size, units, dropout_rate, build_activation(activation)
    )


def build_mixer(
    mixer: str,
    size: int,
    heads: int,
    local_units: Tuple[int, ...],
    summary_units: Tuple[int, ...],
    mixer_layer_norm: bool,
    relative: bool,
    activation: str,
    dropout_rate: float,
    attention_dropout_rate: float,
    use_sdpa: bool,
) -> torch.nn.Module:
    """The mixer of one block: SummaryMixing, SummaryMixing-lite or self-attention.

    ``use_sdpa`` reaches plain (not relative) self-attention only.
    """
    if mixer == "self_attention":
        return SelfAttentionMixer(
            size, heads, attention_dropout_rate, relative, use_sdpa=use_sdpa
        )
    return SummaryMixing(
        size,
        size,
        local_units=local_units,
        summary_units=summary_units,
        num_heads=heads,
        activation=activation,
        dropout_rate=dropout_rate,
        use_layer_norm=mixer_layer_norm,
        mode=mixer,
    )


def build_block(
    size: int,
    linear_units: int,
    macaron_style: bool,
    cnn_module_kernel: Optional[int],
    cnn_module_norm: str,
    eps: float,
    **mixer_options,
) -> MixerConformerLayer:
    """One block from the encoder's options (``cnn_module_kernel`` None: no conv).

    ``mixer_options`` are ``build_mixer``'s arguments except ``size``.
    """
    activation = mixer_options["activation"]
    dropout_rate = mixer_options["dropout_rate"]
    conv = None
    if cnn_module_kernel is not None:
        conv = MaskedConvolutionModule(
            size, cnn_module_kernel, cnn_module_norm, activation, eps
        )
    return MixerConformerLayer(
        size,
        build_mixer(size=size, **mixer_options),
        feed_forward(size, linear_units, dropout_rate, activation),
        (
            feed_forward(size, linear_units, dropout_rate, activation)
            if macaron_style
            else None
        ),
        conv,
        dropout_rate,
        eps,
    )


class SummaryMixingEncoder(AbsEncoder):
    """Conformer encoder with SummaryMixing blocks (ESPnet ``AbsEncoder``).

    Option names follow ESPnet's ``ConformerEncoder`` where they mean the same, so a
    Conformer config becomes a SummaryMixing one by changing ``encoder:`` and adding
    the SummaryMixing options. ``attention_heads`` are the heads of the mixer: the
    diagonal blocks of SummaryMixing's projections, or the attention heads.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: Optional[str] = "conv2d",
        pos_enc_layer_type: str = "none",
        max_pos_emb_len: int = 5000,
        normalize_before: bool = True,
        macaron_style: bool = True,
        activation_type: str = "swish",
        use_cnn_module: bool = True,
        cnn_module_kernel: int = 31,
        cnn_module_norm: str = "layer_norm",
        mixer: str = "summary_mixing",
        local_units: Optional[Sequence[int]] = None,
        summary_units: Optional[Sequence[int]] = None,
        mixer_layer_norm: bool = True,
        layer_drop_rate: float = 0.0,
        layer_norm_eps: float = 1e-5,
        use_sdpa: bool = True,
    ):
        """Builds the input layer, ``num_blocks`` blocks and the final LayerNorm.

        Args:
            input_size: Input feature size.
            output_size: Model width D. SummaryMixing SSL BASE 768.
            attention_heads: Mixer heads (D divisible by them). SSL BASE 8.
            linear_units: Hidden units of each feed-forward. SSL BASE 3072.
            num_blocks: Number of blocks. SSL BASE 12.
            dropout_rate: Dropout on every residual branch, in the feed-forwards,
                the input layer and before SummaryMixing's combiner. SSL BASE 0.1.
            positional_dropout_rate: Dropout of the positional encoding.
            attention_dropout_rate: Attention-weight dropout (self_attention only).
            input_layer: "linear", "conv2d" / "conv2d1" / "conv2d2" / "conv2d6" /
                "conv2d8" (ESPnet subsampling) or None (input already D wide, e.g.
                after the SSL preencoder).
            pos_enc_layer_type: "none" (SummaryMixing Conformers use none: the
                convolution module gives positions), "abs_pos", "scaled_abs_pos"
                (x + alpha * sinusoid, the SSL recipe's sinusoidal encoding) or
                "rel_pos" (self_attention only).
            max_pos_emb_len: Longest input the positional encoding precomputes.
            normalize_before: Must be True: blocks are pre-LN (ESPnet's option name
                is accepted so that Conformer configs load).
            macaron_style: Two half-step feed-forwards around the mixer and the
                convolution (Conformer); False keeps one full-step feed-forward.
            activation_type: "swish" (Conformer default), "gelu" or "relu"; used in
                the feed-forwards, the convolution module and SummaryMixing.
            use_cnn_module: Include the convolution module.
            cnn_module_kernel: Depthwise kernel in frames (odd). SSL BASE 31.
            cnn_module_norm: "layer_norm" (default) or "batch_norm" (ESPnet).
            mixer: "summary_mixing", "summary_mixing_lite" or "self_attention".
            local_units: Output size of every layer of SummaryMixing's local
                transform, the last being its output; None = [D, D]. The
                reference's ``local_proj_hid_dim`` + [``local_proj_out_dim``]:
                SSL BASE [768] + 768 = [768, 768].
            summary_units: The same for the summary function; None = [D, D]
                (``summary_hid_dim`` + [``summary_out_dim``]; SSL BASE [768, 768]).
            mixer_layer_norm: LayerNorm on SummaryMixing's local and summary
                vectors (the SSL variant, IS24_PR ``use_layernorm``).
            layer_drop_rate: Probability of skipping each block in training.
                SSL BASE 0.05. DDP then needs ``unused_parameters: true``.
            layer_norm_eps: Epsilon of every LayerNorm.
            use_sdpa: ``mixer: self_attention`` with plain positions attends
                through torch's SDPA (no (B, H, T, T) kept; attention plots need
                ``num_att_plot: 0``); False = ESPnet's exact softmax path. No
                effect on SummaryMixing or on ``rel_pos`` attention (always exact;
                see ``SelfAttentionMixer``).
        """
        super().__init__()
        if not normalize_before:
            raise ValueError("summary_mixing blocks are pre-LN: normalize_before: true")
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
        if pos_enc_layer_type == "rel_pos" and mixer != "self_attention":
            raise ValueError("pos_enc_layer_type 'rel_pos' only serves self_attention")
        self._output_size = output_size
        self.layer_drop_rate = layer_drop_rate
        pos_enc = build_positional_encoding(
            pos_enc_layer_type, output_size, positional_dropout_rate, max_pos_emb_len
        )
        self.embed = build_input_layer(
            input_layer, input_size, output_size, dropout_rate, pos_enc
        )
        block = dict(
            size=output_size,
            mixer=mixer,
            heads=attention_heads,
            linear_units=linear_units,
            local_units=tuple(local_units or (output_size, output_size)),
            summary_units=tuple(summary_units or (output_size, output_size)),
            mixer_layer_norm=mixer_layer_norm,
            relative=pos_enc_layer_type == "rel_pos",
            activation=activation_type,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            use_sdpa=use_sdpa,
            macaron_style=macaron_style,
            cnn_module_kernel=cnn_module_kernel if use_cnn_module else None,
            cnn_module_norm=cnn_module_norm,
            eps=layer_norm_eps,
        )
        self.encoders = torch.nn.ModuleList(
            build_block(**block) for _ in range(num_blocks)
        )
        self.after_norm = torch.nn.LayerNorm(output_size, eps=layer_norm_eps)

    def output_size(self) -> int:
        """Returns the width D of every block's output (``output_size``)."""
        return self._output_size

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
        masks: Optional[torch.Tensor] = None,
        return_all_hs: bool = False,
    ) -> Tuple[
        Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]],
        torch.Tensor,
        None,
    ]:
        """Encode a padded batch.

        Args:
            xs_pad: Input features (B, T, input_size); padded frames may hold any
                finite value.
            ilens: Valid frames per utterance (B,); ignored when ``masks`` is given.
            prev_states: Unused (ESPnet interface).
            masks: Padding mask (B, T), True on padded frames (``make_pad_mask``, as
                ESPnet's SSL model passes it); None derives it from ``ilens``.
            return_all_hs: Also return every block's output.

        Returns:
            ``(out, olens, None)``: ``out`` is the final output (B, T', D) after the
            last LayerNorm, or with ``return_all_hs`` the pair ``(final, layers)``
            where ``layers`` holds num_blocks tensors (B, T', D), each block's
            output before the final LayerNorm (a block skipped by layer drop
            repeats its input). ``olens`` (B,) counts valid output frames; values
            on padded frames are unspecified.
        """
        if masks is None:
            masks = padding_mask(ilens, xs_pad.size(1))
        keep_masks = ~masks.to(xs_pad.device).unsqueeze(1)  # (B, 1, T), True = valid
        xs, keep_masks = embed_input(self.embed, xs_pad, keep_masks)
        xs, pos_emb = xs if isinstance(xs, tuple) else (xs, None)
        pad_mask = ~keep_masks.squeeze(1)  # (B, 1, T') -> (B, T'), True on padding
        layers = []
        kept = kept_layers(len(self.encoders), self.layer_drop_rate, self.training)
        for keep, layer in zip(kept, self.encoders):
            if keep:
                xs = layer(xs, pad_mask, pos_emb)
            layers.append(xs)
        olens = keep_masks.squeeze(1).sum(dim=1)  # (B,)
        final = self.after_norm(xs)
        if return_all_hs:
            return (final, layers), olens, None
        return final, olens, None
