#!/usr/bin/env python3
"""Dump MFCC, SSL-layer or ASR-encoder features of a wav.scp for HuBERT k-means.

Usage::

    python -m espnet2.bin.ssl_dump_feats --feature_type mfcc \\
        --wav_scp data/train/wav.scp --out_dir dump/mfcc/train --nj 4

    python -m espnet2.bin.ssl_dump_feats --feature_type ssl --layer 6 \\
        --ssl_model_file exp/ssl_hubert_it1/valid.loss.best.pth \\
        --wav_scp data/train/wav.scp --out_dir dump/ssl_l6/train --nj 4 --shard 2

    python -m espnet2.bin.ssl_dump_feats --feature_type asr \\
        --asr_packed_model asr_model.zip \\
        --wav_scp data/train/wav.scp --out_dir dump/asr/train --nj 1

Writes ``feats.{i}.ark/scp`` per shard and, once all shards are done,
``feats.scp``, ``utt2num_frames`` and ``feats.yaml`` (see
``espnet2/ssl/targets/dump.py``). Re-running skips finished shards. A bad input
prints one message naming the file, the utterance and the fix, and exits with 1.
"""

import argparse
import logging
from typing import Dict, Optional, Sequence

from espnet2.fileio.kaldi_data_dir import DataDirError
from espnet2.ssl.targets.dump import dump_features
from espnet2.ssl.targets.dumpers import DUMPERS, FeatureDumpError, get_dumper
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)
from espnet2.utils.types import str2bool, str_or_none

TOOL = "ssl_dump_feats"


def _add_model_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """``--<kind>_config``, ``--<kind>_model_file``, ``--<kind>_packed_model``."""
    trainer = f"espnet2.bin.{kind}_train"
    group = parser.add_argument_group(f"{kind} model (--feature_type {kind})")
    group.add_argument(
        f"--{kind}_config",
        type=str_or_none,
        default=None,
        help=f"config.yaml written by {trainer}; default: the config.yaml next to "
        f"--{kind}_model_file.",
    )
    group.add_argument(
        f"--{kind}_model_file",
        type=str_or_none,
        default=None,
        help=f"Model weights (.pth) written by {trainer}, e.g. valid.loss.best.pth.",
    )
    group.add_argument(
        f"--{kind}_packed_model",
        type=str_or_none,
        default=None,
        help=f"Instead of the two above: an archive from `python -m "
        f"espnet2.bin.pack {kind} ...`.",
    )


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wav_scp``, ``--out_dir``, ``--nj`` and ``--shard``."""
    parser.add_argument(
        "--wav_scp", required=True, help="<utt> <16 kHz mono audio file> per line."
    )
    parser.add_argument("--out_dir", required=True, help="Output directory.")
    parser.add_argument(
        "--nj", type=int, default=1, help="Number of shards (contiguous, in order)."
    )
    parser.add_argument(
        "--shard",
        type=int,
        default=None,
        help="Run only this shard, 1..nj (e.g. JOB of run.pl JOB=1:nj); default: "
        "all unfinished shards. The last shard to finish merges the outputs.",
    )


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_dump_feats``.
    """
    parser = argparse.ArgumentParser(
        description="Dump frame features (MFCC, an SSL model layer, or an ASR "
        "encoder) of every utterance of a wav.scp to Kaldi archives, in "
        "resumable shards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--feature_type",
        required=True,
        choices=sorted(DUMPERS),
        help="mfcc: 39-d MFCC+deltas at 100 Hz; ssl: hidden states of an SSLTask "
        "model (50 Hz with the wav2vec 2.0 CNN); asr: encoder states of an ASRTask "
        "model (frame rate from its subsampling, e.g. 25 Hz).",
    )
    _add_data_arguments(parser)
    parser.add_argument(
        "--layer",
        type=int,
        default=None,
        help="ssl/asr: encoder block whose output to dump, 1..num_blocks (HuBERT "
        "BASE iteration 2: 6); default: the encoder's final output.",
    )
    _add_model_arguments(parser, "ssl")
    _add_model_arguments(parser, "asr")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if available), cpu, cuda or cuda:N. mfcc runs on the CPU "
        "unless a device is named.",
    )
    parser.add_argument(
        "--batch_seconds",
        type=float,
        default=100.0,
        help="Padded audio per batch, in seconds; lower it on GPU out-of-memory.",
    )
    parser.add_argument(
        "--show_progress",
        type=str2bool,
        default=None,
        help="Progress bar per shard; default: only when stderr is a terminal.",
    )
    add_log_level_argument(parser)
    return parser


def dumper_options(args: argparse.Namespace) -> Dict:
    """The ``get_dumper`` options of the chosen feature type.

    Raises:
        FeatureDumpError: Options given for another feature type.
    """
    kind = args.feature_type
    others = [k for k in DUMPERS if k not in ("mfcc", kind)]
    stray = [
        f"--{other}_{name}"
        for other in others
        for name in ("config", "model_file", "packed_model")
        if getattr(args, f"{other}_{name}") is not None
    ]
    if kind == "mfcc" and args.layer is not None:
        stray.append("--layer")
    if stray:
        raise FeatureDumpError(
            f"--feature_type {kind} takes no {', '.join(stray)}. Fix: drop "
            f"{', '.join(stray)}, or choose the matching --feature_type."
        )
    if kind == "mfcc":
        return {} if args.device == "auto" else {"device": args.device}
    return {
        "config_file": getattr(args, f"{kind}_config"),
        "model_file": getattr(args, f"{kind}_model_file"),
        "packed_model": getattr(args, f"{kind}_packed_model"),
        "layer": args.layer,
        "device": args.device,
    }


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Dump the features; exit with status 1 and a message on a bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        dumper = get_dumper(args.feature_type, **dumper_options(args))
        logging.info(f"features: {dumper.describe()}")
        summary = dump_features(
            args.wav_scp,
            args.out_dir,
            dumper,
            nj=args.nj,
            shard=args.shard,
            batch_seconds=args.batch_seconds,
            show_progress=args.show_progress,
        )
    except (FeatureDumpError, DataDirError) as err:
        exit_with_error(TOOL, str(err))
    if summary is not None:
        logging.info(
            f"{summary.feats_scp}: {summary.num_utterances} utterances, "
            f"{summary.num_frames} frames of {dumper.dim} dims"
        )


if __name__ == "__main__":
    main()
