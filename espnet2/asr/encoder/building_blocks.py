"""Pieces shared by our encoders: input layers, padding masks, layer drop.

ESPnet's encoders each build their input layer (``input_layer`` + positional
encoding) with the same if-chain; ``build_input_layer`` is that chain once, for the
layers our encoders accept, and ``embed_input`` applies it with ESPnet's
too-short-for-subsampling error.
"""

from typing import List, Optional, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.embedding import (
    PositionalEncoding,
    RelPositionalEncoding,
    ScaledPositionalEncoding,
)
from espnet.nets.pytorch_backend.transformer.subsampling import (
    Conv1dSubsampling2,
    Conv2dSubsampling,
    Conv2dSubsampling1,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
    TooShortUttError,
    check_short_utt,
)

SUBSAMPLING_LAYERS = (
    Conv2dSubsampling,
    Conv1dSubsampling2,
    Conv2dSubsampling1,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
)
# input_layer name -> ESPnet subsampling class (time reduction 1, 2, 4, 6, 8)
SUBSAMPLING = {
    "conv2d": Conv2dSubsampling,
    "conv2d1": Conv2dSubsampling1,
    "conv2d2": Conv2dSubsampling2,
    "conv2d6": Conv2dSubsampling6,
    "conv2d8": Conv2dSubsampling8,
}
INPUT_LAYERS = ("linear", *SUBSAMPLING, None)
POSITIONAL_ENCODINGS = ("none", "abs_pos", "scaled_abs_pos", "rel_pos")


def build_positional_encoding(
    kind: str, size: int, dropout_rate: float, max_len: int
) -> torch.nn.Module:
    """ESPnet's positional encoding ``kind`` (POSITIONAL_ENCODINGS) of width ``size``.

    "none" is a dropout only; "abs_pos" is x * sqrt(D) + PE; "scaled_abs_pos" is
    x + alpha * PE with a learned alpha (1 at start); "rel_pos" returns
    ``(x * sqrt(D), PE)`` for relative-position self-attention (ESPnet "latest").
    """
    if kind == "none":
        return torch.nn.Dropout(dropout_rate)
    classes = dict(
        abs_pos=PositionalEncoding,
        scaled_abs_pos=ScaledPositionalEncoding,
        rel_pos=RelPositionalEncoding,
    )
    if kind not in classes:
        raise ValueError(
            f"pos_enc_layer_type must be one of {POSITIONAL_ENCODINGS}, got {kind!r}"
        )
    return classes[kind](size, dropout_rate, max_len)


def build_input_layer(
    input_layer: Optional[str],
    input_size: int,
    output_size: int,
    dropout_rate: float,
    pos_enc: torch.nn.Module,
) -> torch.nn.Module:
    """ESPnet's input layer ``input_layer`` followed by ``pos_enc``.

    Args:
        input_layer: "linear" (Linear, LayerNorm, dropout), "conv2d" / "conv2d1" /
            "conv2d2" / "conv2d6" / "conv2d8" (ESPnet's 2-D convolution
            subsampling by 4 / 1 / 2 / 6 / 8), or None (the input must already be
            ``output_size`` wide).
        input_size: Input feature size.
        output_size: Encoder width D.
        dropout_rate: Dropout of the linear and subsampling layers.
        pos_enc: Positional encoding module applied last.
    """
    if input_layer == "linear":
        return torch.nn.Sequential(
            torch.nn.Linear(input_size, output_size),
            torch.nn.LayerNorm(output_size),
            torch.nn.Dropout(dropout_rate),
            pos_enc,
        )
    if input_layer in SUBSAMPLING:
        return SUBSAMPLING[input_layer](input_size, output_size, dropout_rate, pos_enc)
    if input_layer is None:
        if input_size != output_size:
            raise ValueError(
                f"input_layer null needs input_size ({input_size}) == output_size "
                f"({output_size}); use input_layer 'linear' or a preencoder"
            )
        return torch.nn.Sequential(pos_enc)
    raise ValueError(f"input_layer must be one of {INPUT_LAYERS}, got {input_layer!r}")


def embed_input(
    embed: Optional[torch.nn.Module], xs_pad: torch.Tensor, keep_masks: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Apply an input layer: (B, T, D_in), (B, 1, T) -> (B, T', D), (B, 1, T').

    ``keep_masks`` is True on valid frames. The output may be a tuple
    ``(x, pos_emb)`` when the positional encoding is relative. Raises ESPnet's
    ``TooShortUttError`` when the input is too short for the subsampling.
    """
    if embed is None:
        return xs_pad, keep_masks
    if isinstance(embed, SUBSAMPLING_LAYERS):
        too_short, limit_size = check_short_utt(embed, xs_pad.size(1))
        if too_short:
            raise TooShortUttError(
                f"has {xs_pad.size(1)} frames and is too short for subsampling "
                f"(it needs more than {limit_size} frames), return empty results",
                xs_pad.size(1),
                limit_size,
            )
        return embed(xs_pad, keep_masks)
    return embed(xs_pad), keep_masks


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) bool, True on padded frames, from valid lengths (B,).

    ESPnet's ``make_pad_mask`` marks nothing as padding for a length of 0 (its
    traceable version indexes row ``length - 1``); here a length of 0 pads the
    whole row.
    """
    frames = torch.arange(max_len, device=lengths.device)  # (T,)
    return frames.unsqueeze(0) >= lengths.unsqueeze(1)  # (1, T) vs (B, 1) -> (B, T)


def kept_layers(num_layers: int, layer_drop_rate: float, training: bool) -> List[bool]:
    """Draw which of ``num_layers`` layers run (all unless training with layer drop).

    Each layer is skipped with probability ``layer_drop_rate``, independently, from
    torch's global generator (seeded by the trainer).
    """
    if not (training and layer_drop_rate > 0):
        return [True] * num_layers
    return (torch.rand(num_layers) >= layer_drop_rate).tolist()
