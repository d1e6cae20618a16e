# wav2vec 2.0 BASE architecture options for ESPnet's TransformerEncoder.
#
# Paper: A. Baevski, H. Zhou, A. Mohamed, M. Auli, "wav2vec 2.0: A Framework for
#   Self-Supervised Learning of Speech Representations", NeurIPS 2020,
#   https://arxiv.org/abs/2006.11477
# Reference implementations (read for facts only; no code copied):
#   fairseq @ 3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99,
#     fairseq/models/wav2vec/wav2vec2.py: Wav2Vec2Config, make_conv_pos,
#     TransformerEncoder.extract_features, TransformerSentenceEncoderLayer;
#   Hugging Face transformers 4.57.6 (pinned; also read at 5.23.0),
#     src/transformers/models/wav2vec2/modeling_wav2vec2.py: Wav2Vec2Encoder,
#     Wav2Vec2PositionalConvEmbedding, Wav2Vec2EncoderLayer, Wav2Vec2FeedForward.
"""ESPnet's TransformerEncoder with the options that make it wav2vec 2.0 exactly.

``Wav2Vec2TransformerEncoder`` accepts every argument of ESPnet's
``espnet2.asr.encoder.transformer_encoder.TransformerEncoder`` with the same name and
default, plus the options below. With every new option at its default, the module
tree and the state_dict keys are those of ESPnet's encoder, and so are the outputs
of ESPnet's encoder once its attention modules have ESPnet's own ``use_sdpa`` set
(with ``use_sdpa: false``, those of ESPnet's default exact attention bit for bit),
so old configs keep working when this class is registered as ``transformer``.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` by
default (``use_sdpa``, ESPnet's MultiHeadedAttention option): padded keys masked,
dropout in training only, no (B, H, T, T) probabilities kept (ESPnet's exact path
keeps the last ones in ``self.attn``). ``use_sdpa`` wins over ``use_flash_attn``.

The options, each but ``use_sdpa`` defaulting to ESPnet 202511's behaviour:

- ``ffn_activation``: ReLU (ESPnet) or exact erf GELU (fairseq / HF) in the FFN;
- ``activation_dropout_rate``: dropout after the FFN activation;
- ``pos_conv_residual``: ``x + gelu(conv(x))`` instead of ``gelu(conv(x))``;
- ``pos_conv_kernel_size`` / ``pos_conv_groups``: the positional convolution;
- ``embed_layer_norm``: LayerNorm after the positional embedding (fairseq / HF
  post-LN do it; ESPnet only with ``normalize_before``);
- ``layer_norm_eps``: eps of every LayerNorm (fairseq / HF 1e-5);
- ``zero_padded_frames``: zero padded input frames before the positional conv, so
  that outputs do not depend on batch neighbours;
- ``apply_layer_drop``: ESPnet 202511's ``TransformerEncoder.forward`` calls each
  layer itself, so ``layer_drop_rate`` never takes effect there; this turns it on;
- ``use_sdpa``: torch's fused attention (default) or ESPnet's exact path.

wav2vec 2.0 BASE (fairseq ``wav2vec2_base_librispeech.yaml``) as ``encoder_conf``;
the encoder's input must already be 768-dimensional (the frontend's 512-dim features
projected by a preencoder, fairseq ``post_extract_proj``)::

    encoder: transformer
    encoder_conf:
        output_size: 768
        attention_heads: 12
        linear_units: 3072
        num_blocks: 12
        dropout_rate: 0.1
        attention_dropout_rate: 0.1
        positional_dropout_rate: 0.0    # unused by the conv positional embedding
        input_layer: wav2vec             # no input projection; pos conv first
        pos_enc_layer_type: conv
        normalize_before: false          # post-LN, fairseq layer_norm_first=False
        layer_drop_rate: 0.05            # fairseq encoder_layerdrop
        apply_layer_drop: true           # else ESPnet ignores layer_drop_rate
        use_flash_attn: false            # flash_attn never (use_sdpa wins anyway)
        use_sdpa: true                   # torch SDPA; false = exact softmax path
        ffn_activation: gelu             # fairseq activation_fn
        activation_dropout_rate: 0.0     # fairseq activation_dropout
        pos_conv_residual: true          # x + pos_conv(x)
        pos_conv_kernel_size: 128        # fairseq conv_pos
        pos_conv_groups: 16              # fairseq conv_pos_groups
        embed_layer_norm: true           # LayerNorm before the first layer
        layer_norm_eps: 1.0e-5           # "1e-5" would be read as a string
        zero_padded_frames: true         # fairseq x[padding_mask] = 0

Weight initialisation is not covered: fairseq applies ``init_bert_params``
(N(0, 0.02) linears) to the whole encoder; ESPnet's ``init`` option decides here.
"""

import logging
from typing import List, Optional, Sequence, Tuple, Union

import torch
from espnet.nets.pytorch_backend.transformer.embedding import (
    ConvolutionalPositionalEmbedding,
    PositionalEncoding,
)
from typeguard import typechecked

from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.building_blocks import (
    embed_input,
    kept_layers,
    padding_mask,
)
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet2.asr.layers.activation import ACTIVATIONS as FFN_ACTIVATIONS

ESPNET_POS_CONV_KERNEL_SIZE = 128
ESPNET_POS_CONV_GROUPS = 16

IntermediateOuts = Union[List[torch.Tensor], List[Tuple[int, torch.Tensor]]]


def _cpu_bf16_autocast(x: torch.Tensor) -> bool:
    """True when ``x`` is on the CPU and CPU autocast to bfloat16 is on."""
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


class Wav2Vec2TransformerEncoder(TransformerEncoder):
    """ESPnet's TransformerEncoder plus the options that express wav2vec 2.0.

    The arguments of ESPnet's ``TransformerEncoder`` keep their names, defaults and
    meaning (see its docstring); ``interctc_layer_idx`` takes any sequence. The new
    options follow.

    Args:
        ffn_activation: Activation inside the position-wise FFN: "relu" (ESPnet),
            "gelu" (exact erf GELU) or "swish". Corresponds to `activation_fn` in
            fairseq / `hidden_act` in Hugging Face Wav2Vec2Config; BASE = "gelu".
            Needs ``positionwise_layer_type: linear`` unless "relu".
        activation_dropout_rate: Dropout after the FFN activation; None keeps
            ESPnet's ``dropout_rate``. Corresponds to `activation_dropout` in
            fairseq / `activation_dropout` in Hugging Face Wav2Vec2Config;
            BASE = 0.0.
        pos_conv_residual: Add the input to the convolutional positional embedding,
            ``x + gelu(conv(x))``; False returns ``gelu(conv(x))`` (ESPnet).
            Corresponds to `x = x + x_conv` in fairseq
            `TransformerEncoder.extract_features` / `hidden_states +
            position_embeddings` in Hugging Face `Wav2Vec2Encoder`; BASE = True.
        pos_conv_kernel_size: Kernel size of the positional convolution, in frames.
            An even kernel drops the last output frame ("same" padding), as fairseq
            `SamePad` and ESPnet do. Corresponds to `conv_pos` in fairseq /
            `num_conv_pos_embeddings` in Hugging Face Wav2Vec2Config; BASE = 128.
        pos_conv_groups: Groups of the positional convolution. Corresponds to
            `conv_pos_groups` in fairseq / `num_conv_pos_embedding_groups` in
            Hugging Face Wav2Vec2Config; BASE = 16.
        embed_layer_norm: LayerNorm after the positional embedding, before the
            first layer (``input_layer: wav2vec`` only). None = ESPnet (only when
            ``normalize_before``), True = always, False = never. Corresponds to
            `layer_norm` applied when `layer_norm_first=False` in fairseq /
            `Wav2Vec2Encoder.layer_norm` (`do_stable_layer_norm=False`) in
            Hugging Face; BASE = True.
        layer_norm_eps: eps of every LayerNorm of the encoder; None keeps ESPnet's
            (1e-12 in the layers and ``after_norm``, PyTorch's 1e-5 in the input
            layer). Corresponds to fairseq `LayerNorm`'s eps / `layer_norm_eps` in
            Hugging Face Wav2Vec2Config; BASE = 1e-5.
        zero_padded_frames: Set the padded frames of the input to 0 before the
            input layer, so that the positional convolution sees zeros past the
            end of each utterance and outputs on valid frames do not depend on the
            batch. Corresponds to `x = index_put(x, padding_mask, 0)` in fairseq /
            `hidden_states[~expand_attention_mask] = 0` in Hugging Face
            `Wav2Vec2Encoder`; BASE = True.
        apply_layer_drop: Skip each layer with probability ``layer_drop_rate`` in
            training, without rescaling; False = ESPnet 202511, whose forward
            ignores ``layer_drop_rate``. A skipped layer's entry in the per-layer
            outputs is its input. Corresponds to `encoder_layerdrop` in fairseq /
            `layerdrop` in Hugging Face Wav2Vec2Config; BASE = True with
            ``layer_drop_rate: 0.05``. DDP then needs ``unused_parameters: true``.
        use_sdpa: Attend with ``torch.nn.functional.scaled_dot_product_attention``
            (ESPnet's ``MultiHeadedAttention.use_sdpa``, set on every layer): the
            padding mask (B, 1, 1, T) as a bool mask, ``attention_dropout_rate``
            in training only, no (B, H, T, T) probabilities kept in ``attn``
            (attention plots need ``num_att_plot: 0``). On a GPU, torch picks a
            fused kernel that takes a mask (memory-efficient, or cuDNN in bf16;
            read from torch's ``sdp_utils``, not measured here). The mask is
            always passed, even for a batch without padding: dropping it would let
            CUDA pick flash, but knowing that no frame is padded takes a host
            read of the mask (a device sync per forward). False keeps ESPnet's
            exact matmul -> softmax -> dropout path (for parity checks). True
            wins over ``use_flash_attn``, which is then turned off (logged):
            ESPnet's flash path replaces attention dropout by a no-op, keeps it
            so when a call fails and turns flash off for good (the first fp32
            call, e.g. rank 0's attention plot), and reads the mask on the host
            in every layer.
            Corresponds to `attn_implementation="sdpa"` in Hugging Face (its
            default); fairseq uses `F.multi_head_attention_forward`.
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
        pos_enc_class: type = PositionalEncoding,
        pos_enc_layer_type: str = "abs_pos",
        normalize_before: bool = True,
        concat_after: bool = False,
        positionwise_layer_type: str = "linear",
        positionwise_conv_kernel_size: int = 1,
        padding_idx: int = -1,
        interctc_layer_idx: Sequence[int] = (),
        interctc_use_conditioning: bool = False,
        layer_drop_rate: float = 0.0,
        qk_norm: bool = False,
        use_flash_attn: bool = True,
        ffn_activation: str = "relu",
        activation_dropout_rate: Optional[float] = None,
        pos_conv_residual: bool = False,
        pos_conv_kernel_size: int = ESPNET_POS_CONV_KERNEL_SIZE,
        pos_conv_groups: int = ESPNET_POS_CONV_GROUPS,
        embed_layer_norm: Optional[bool] = None,
        layer_norm_eps: Optional[float] = None,
        zero_padded_frames: bool = False,
        apply_layer_drop: bool = False,
        use_sdpa: bool = True,
    ):
        if use_sdpa and use_flash_attn:
            logging.info("use_sdpa: true turns use_flash_attn off (SDPA wins)")
            use_flash_attn = False
        super().__init__(
            input_size,
            output_size=output_size,
            attention_heads=attention_heads,
            linear_units=linear_units,
            num_blocks=num_blocks,
            dropout_rate=dropout_rate,
            positional_dropout_rate=positional_dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            input_layer=input_layer,
            pos_enc_class=pos_enc_class,
            pos_enc_layer_type=pos_enc_layer_type,
            normalize_before=normalize_before,
            concat_after=concat_after,
            positionwise_layer_type=positionwise_layer_type,
            positionwise_conv_kernel_size=positionwise_conv_kernel_size,
            padding_idx=padding_idx,
            interctc_layer_idx=list(interctc_layer_idx),
            interctc_use_conditioning=interctc_use_conditioning,
            layer_drop_rate=layer_drop_rate,
            qk_norm=qk_norm,
            use_flash_attn=use_flash_attn,
        )
        self._set_ffn(ffn_activation, activation_dropout_rate, positionwise_layer_type)
        self._set_pos_conv(pos_conv_kernel_size, pos_conv_groups, pos_conv_residual)
        self._set_embed_layer_norm(embed_layer_norm, input_layer, output_size)
        self._set_layer_norm_eps(layer_norm_eps)
        for layer in self.encoders:
            layer.self_attn.use_sdpa = use_sdpa  # read by ESPnet's forward
        self.zero_padded_frames = zero_padded_frames
        self.apply_layer_drop = apply_layer_drop
        if layer_drop_rate > 0 and not apply_layer_drop:
            logging.warning(
                f"layer_drop_rate={layer_drop_rate} has no effect (as in ESPnet's "
                "TransformerEncoder); set apply_layer_drop: true to drop layers"
            )

    def _set_ffn(
        self,
        activation: str,
        activation_dropout_rate: Optional[float],
        positionwise_layer_type: str,
    ) -> None:
        """Replace the FFN activation and its inner dropout where asked."""
        if activation not in FFN_ACTIVATIONS:
            raise ValueError(
                f"ffn_activation must be one of {sorted(FFN_ACTIVATIONS)}, "
                f"got {activation!r}"
            )
        if activation != "relu" and positionwise_layer_type != "linear":
            raise ValueError(
                f"ffn_activation={activation!r} needs positionwise_layer_type "
                f"'linear' (ESPnet's {positionwise_layer_type!r} is ReLU only)"
            )
        for layer in self.encoders:
            if activation != "relu":
                layer.feed_forward.activation = FFN_ACTIVATIONS[activation]()
            if activation_dropout_rate is not None:
                layer.feed_forward.dropout = torch.nn.Dropout(activation_dropout_rate)

    def _find_pos_conv(self) -> Optional[Tuple[torch.nn.Module, str]]:
        """Return (parent module, attribute name) of the conv positional embedding."""
        if self.embed is None:
            return None
        for parent in self.embed.modules():
            for name, child in parent.named_children():
                if isinstance(child, ConvolutionalPositionalEmbedding):
                    return parent, name
        return None

    def _set_pos_conv(self, kernel_size: int, groups: int, residual: bool) -> None:
        """Rebuild the conv positional embedding if its shape or residual differ."""
        same_shape = (kernel_size, groups) == (
            ESPNET_POS_CONV_KERNEL_SIZE,
            ESPNET_POS_CONV_GROUPS,
        )
        if same_shape and not residual:
            return
        found = self._find_pos_conv()
        if found is None:
            raise ValueError(
                "pos_conv_residual, pos_conv_kernel_size and pos_conv_groups need "
                "pos_enc_layer_type 'conv' with an input_layer that uses it "
                "(e.g. 'wav2vec')"
            )
        parent, name = found
        if not same_shape:
            old = getattr(parent, name)
            new = ConvolutionalPositionalEmbedding(
                old.embed_dim, 0.0, kernel_size=kernel_size, groups=groups
            )
            setattr(parent, name, new)
        getattr(parent, name).use_residual = residual

    def _set_embed_layer_norm(
        self, embed_layer_norm: Optional[bool], input_layer: Optional[str], size: int
    ) -> None:
        """Put a LayerNorm (True) or nothing (False) after the wav2vec pos embed."""
        if embed_layer_norm is None:
            return
        if input_layer != "wav2vec":
            raise ValueError(
                f"embed_layer_norm needs input_layer 'wav2vec', got {input_layer!r}"
            )
        # self.embed = Sequential(pos_enc, LayerNorm or Identity, Dropout)
        self.embed[1] = (
            torch.nn.LayerNorm(size) if embed_layer_norm else torch.nn.Identity()
        )

    def _set_layer_norm_eps(self, eps: Optional[float]) -> None:
        """Set the eps of every LayerNorm (ESPnet's LayerNorm subclasses torch's)."""
        if eps is None:
            return
        for module in self.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = eps

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
        masks: torch.Tensor = None,
        ctc: CTC = None,
        return_all_hs: bool = False,
    ) -> Tuple[
        Union[torch.Tensor, Tuple[torch.Tensor, IntermediateOuts]],
        torch.Tensor,
        None,
    ]:
        """Encode a padded batch, as ESPnet's TransformerEncoder does.

        Args:
            xs_pad: Input features (B, T, D_in); padded frames may hold anything
                (zeroed first when ``zero_padded_frames``). The tensor is not
                modified.
            ilens: Valid frames per utterance (B,); ignored when ``masks`` is given.
            prev_states: Unused (ESPnet interface).
            masks: Padding mask (B, T), True on padded frames, as ESPnet's SSL
                model passes ``make_pad_mask(lengths)``; None derives it from
                ``ilens``.
            ctc: CTC module, needed for ``interctc_use_conditioning``.
            return_all_hs: Also return every layer's output.

        Returns:
            A tuple ``(out, olens, None)``. ``out`` is the output (B, T', D), or
            ``(output, intermediate_outs)`` when intermediate outputs exist:
            with ``interctc_layer_idx`` a list of ``(layer number, (B, T', D))``,
            else with ``return_all_hs`` a list of num_blocks tensors (B, T', D).
            ``olens`` (B,) counts the valid output frames. Values on padded
            frames are unspecified.
        """
        pad_mask = self._padding_mask(xs_pad, ilens, masks)  # (B, T)
        if self.zero_padded_frames:
            xs_pad = xs_pad.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        keep_masks = ~pad_mask.unsqueeze(1)  # (B, T) -> (B, 1, T), True = valid
        xs_pad, keep_masks = self._embed(xs_pad, keep_masks)
        xs_pad, keep_masks, intermediate_outs = self._encode_layers(
            xs_pad, keep_masks, ctc, return_all_hs
        )
        if self.normalize_before:
            xs_pad = self.after_norm(xs_pad)
        olens = keep_masks.squeeze(1).sum(1)
        if len(intermediate_outs) > 0:
            return (xs_pad, intermediate_outs), olens, None
        return xs_pad, olens, None

    def _embed(
        self, xs_pad: torch.Tensor, keep_masks: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Input layer (B, T, D), (B, 1, T) -> (B, T', D), (B, 1, T'); in float32
        under CPU bf16 autocast.

        oneDNN's bf16 grouped conv1d forward gives wrong outputs on some CPUs and
        shapes (torch 2.12.1 on an AMX Xeon: relative error ~1 with 8 channels per
        group and kernel 8, the tiny test config, or 4 and 16; the recipes' 24 or
        48 channels per group with kernel 32 or 128 are right, and so are fp16
        and the backward; torch 2.8.0 on an AMD EPYC without AMX: right), the
        class of bug of
        https://github.com/pytorch/pytorch/issues/163347. The input layer is one
        conv, so float32 costs little; other devices are left as they are.
        """
        if not _cpu_bf16_autocast(xs_pad):
            return embed_input(self.embed, xs_pad, keep_masks)
        with torch.autocast(device_type="cpu", enabled=False):
            return embed_input(self.embed, xs_pad.float(), keep_masks)

    @staticmethod
    def _padding_mask(
        xs_pad: torch.Tensor, ilens: torch.Tensor, masks: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Return the padding mask (B, T), True on padded frames."""
        if masks is not None:
            return masks.to(xs_pad.device)
        return padding_mask(ilens, xs_pad.size(1)).to(xs_pad.device)

    def _encode_layers(
        self,
        xs_pad: torch.Tensor,
        keep_masks: torch.Tensor,
        ctc: Optional[CTC],
        return_all_hs: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor, IntermediateOuts]:
        """Run the layers, collecting per-layer or intermediate-CTC outputs."""
        intermediate_outs = []
        rate = self.encoders.layer_drop_rate if self.apply_layer_drop else 0.0
        kept = kept_layers(len(self.encoders), rate, self.training)
        if xs_pad.size(1) == 0:  # no frames: ESPnet's SDPA path cannot reshape them
            kept = [False] * len(self.encoders)
        for layer_idx, encoder_layer in enumerate(self.encoders):
            if kept[layer_idx]:
                xs_pad, keep_masks = encoder_layer(xs_pad, keep_masks)
            if len(self.interctc_layer_idx) == 0:
                if return_all_hs:
                    intermediate_outs.append(xs_pad)
            elif layer_idx + 1 in self.interctc_layer_idx:
                xs_pad, encoder_out = self._intermediate_ctc(xs_pad, ctc)
                intermediate_outs.append((layer_idx + 1, encoder_out))
        return xs_pad, keep_masks, intermediate_outs

    def _intermediate_ctc(
        self, xs_pad: torch.Tensor, ctc: Optional[CTC]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return (hidden (B, T, D), normalised intermediate output (B, T, D))."""
        encoder_out = self.after_norm(xs_pad) if self.normalize_before else xs_pad
        if self.interctc_use_conditioning:
            xs_pad = xs_pad + self.conditioning_layer(ctc.softmax(encoder_out))
        return xs_pad, encoder_out
