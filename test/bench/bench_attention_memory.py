"""Activation memory saved for backward by one wav2vec 2.0 BASE encoder layer,
``use_sdpa`` true vs false (ESPnet's exact matmul -> softmax -> dropout path).

Builds ``Wav2Vec2TransformerEncoder``
(``espnet2/asr/encoder/wav2vec2_transformer_encoder.py``) with BASE's layer
(768 / 3072 / 12 heads, post-LN, GELU) and one block, runs the
block forward in training mode on a (B, T, D) input that requires grad, and sums the
bytes of the distinct storages that autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``), parameters left out, the input
counted. One JSON line per (attention dropout, use_sdpa), for the whole layer and
for its attention module alone, then a summary line of ratios. No timing: the
numbers are exact for a given torch build and device.

Method: the measurement of the issue's GPU reference (fp32, B = 8, T = 749 frames =
15 s, d = 768, H = 12, one layer). On a CPU, torch's fused SDPA kernel has no
dropout, so with attention dropout > 0 SDPA falls back to the math path there;
CUDA's fused kernels have dropout.

Usage (repository root)::

    tools/venv/bin/python test/bench/bench_attention_memory.py
    tools/venv/bin/python test/bench/bench_attention_memory.py --device cuda
"""

import argparse
import json
import logging
from typing import Dict, Sequence

import torch

from espnet2.asr.encoder.building_blocks import padding_mask
from espnet2.asr.encoder.wav2vec2_transformer_encoder import Wav2Vec2TransformerEncoder

MIB = 2**20


def get_parser() -> argparse.ArgumentParser:
    """Command-line options (sizes default to the issue's measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=749, help="T (20 ms frames)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--linear_units", type=int, default=3072)
    parser.add_argument(
        "--attention_dropout", type=float, nargs="+", default=[0.0, 0.1]
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser


def build_layer(args: argparse.Namespace, use_sdpa: bool, attention_dropout: float):
    """One BASE encoder block (``EncoderLayer``) in training mode on the device."""
    torch.manual_seed(0)
    encoder = Wav2Vec2TransformerEncoder(
        args.dim,
        output_size=args.dim,
        attention_heads=args.heads,
        linear_units=args.linear_units,
        num_blocks=1,
        dropout_rate=0.1,
        attention_dropout_rate=attention_dropout,
        input_layer="wav2vec",
        pos_enc_layer_type="conv",
        normalize_before=False,
        ffn_activation="gelu",
        activation_dropout_rate=0.0,
        use_flash_attn=False,
        use_sdpa=use_sdpa,
    )
    return encoder.encoders[0].to(args.device).train()


def saved_bytes(layer: torch.nn.Module, x: torch.Tensor, keep: torch.Tensor) -> Dict:
    """Bytes saved for backward by ``layer(x, keep)`` and by its attention alone.

    Args:
        layer: ESPnet ``EncoderLayer``.
        x: Input (B, T, D) that requires grad.
        keep: Mask (B, 1, T), True on valid frames.

    Returns:
        ``{"layer": bytes, "attention": bytes}``: distinct storages, parameters
        excluded, the input included.
    """
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    found = {"layer": {}, "attention": {}}
    inside = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            found["layer"][storage.data_ptr()] = storage.nbytes()
            if inside:
                found["attention"][storage.data_ptr()] = storage.nbytes()
        return tensor

    def enter(*_) -> None:
        inside.append(True)

    def leave(*_) -> None:  # a forward hook's return value would replace the output
        inside.pop()

    attention = layer.self_attn
    hooks = [
        attention.register_forward_pre_hook(enter),
        attention.register_forward_hook(leave),
    ]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x, keep)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: sum(storages.values()) for key, storages in found.items()}


def measure(args: argparse.Namespace, use_sdpa: bool, attention_dropout: float):
    """One result dict (MiB) for one setting."""
    layer = build_layer(args, use_sdpa, attention_dropout)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, args.frames, args.dim, generator=generator)
    x = x.to(args.device).requires_grad_(True)
    lengths = torch.full((args.batch_size,), args.frames, device=args.device)
    keep = ~padding_mask(lengths, args.frames).unsqueeze(1)  # (B, 1, T)
    saved = saved_bytes(layer, x, keep)
    return dict(
        use_sdpa=use_sdpa,
        attention_dropout=attention_dropout,
        layer_saved_mib=round(saved["layer"] / MIB, 1),
        attention_saved_mib=round(saved["attention"] / MIB, 1),
    )


def main(argv: Sequence[str] = None) -> None:
    """Prints one JSON line per setting and a summary of exact/SDPA ratios."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.info(f"args: {vars(args)}; torch {torch.__version__}")
    summary = {}
    for dropout in args.attention_dropout:
        results = {sdpa: measure(args, sdpa, dropout) for sdpa in (False, True)}
        for result in results.values():
            print(json.dumps(dict(result, device=args.device)))
        summary[f"exact_over_sdpa_layer_dropout_{dropout}"] = round(
            results[False]["layer_saved_mib"] / results[True]["layer_saved_mib"], 2
        )
    print(json.dumps(dict(summary=summary)))


if __name__ == "__main__":
    main()
