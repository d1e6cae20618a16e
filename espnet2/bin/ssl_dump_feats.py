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

    python -m espnet2.bin.ssl_dump_feats --feature_type ssl --layer 6 \\
        --ssl_model_file exp/ssl_hubert_it1/valid.loss.best.pth \\
        --wav_scp data/train/wav.scp --out_dir dump/ssl_l6/train --nj 8 --ngpu 8

Writes ``feats.{i}.ark/scp`` per shard and, once all shards are done,
``feats.scp``, ``utt2num_frames`` and ``feats.yaml`` (see
``espnet2/ssl/targets/dump.py``). Re-running skips finished shards. A bad input
prints one message naming the file, the utterance and the fix, and exits with 1.

Without ``--shard``, ``--nj N`` > 1 runs the N shards in N parallel processes on
the CPU, or with ``--ngpu G`` one process per GPU (shard j on GPU (j-1) mod G),
logs in ``<out_dir>/log/dump.<j>.log`` (``espnet2/ssl/targets/launch.py``); a
failed shard fails the command, naming its log. ``--nj 1`` runs in this process.
Model features run under bf16 autocast on GPUs (``--bf16``), checked against
float32 on each shard's first batch (``espnet2/ssl/targets/precision.py``).
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from espnet2.fileio.kaldi_data_dir import DataDirError, read_two_column_file
from espnet2.ssl.model_files import ModelFileError
from espnet2.ssl.targets.dump import (
    dump_features,
    merge_finished,
    shard_ranges,
)
from espnet2.ssl.targets.dumpers import DUMPERS, FeatureDumpError, get_dumper
from espnet2.ssl.targets.launch import launch_shards
from espnet2.ssl.targets.precision import DEFAULT_TOLERANCE, resolve_bf16
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
        "--nj",
        type=int,
        default=1,
        help="Number of shards (contiguous, in order). Without --shard, > 1 runs "
        "them in parallel processes: all at once on the CPU, each with "
        "OMP_NUM_THREADS = cores / nj, or one per GPU with --ngpu; logs in "
        "<out_dir>/log/dump.<j>.log.",
    )
    parser.add_argument(
        "--shard",
        type=int,
        default=None,
        help="Run only this shard, 1..nj, in this process (e.g. JOB of run.pl "
        "JOB=1:nj); default: all unfinished shards. The last shard to finish "
        "merges the outputs.",
    )
    parser.add_argument(
        "--ngpu",
        type=int,
        default=0,
        help="ssl/asr: GPUs to spread the shards over: shard j on GPU (j-1) mod "
        "ngpu, one process per GPU at a time. 0: --device decides. mfcc always "
        "runs on the CPU.",
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
        "--bf16",
        type=str2bool,
        default=None,
        help="ssl/asr: run the model under bf16 autocast; default: on for CUDA, off "
        "on the CPU. Each shard's first batch is also run in float32 and compared.",
    )
    parser.add_argument(
        "--bf16_tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="Largest relative error (Frobenius norm over the first batch's "
        "frames) of bf16 features against float32; beyond it the dump stops.",
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


def shard_device(device: str, ngpu: int, shard: Optional[int]) -> str:
    """The device of a process that runs ``shard`` (or every shard).

    Args:
        device: ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        ngpu: ``--ngpu``; 0 lets ``device`` decide.
        shard: ``--shard`` (1..nj), or None for shard 1 onwards.

    Returns:
        ``device`` for ``ngpu`` 0, else ``cuda:<(shard - 1) mod ngpu>``.

    Raises:
        FeatureDumpError: ``--ngpu`` with a device other than auto or cuda.
    """
    if ngpu < 0:
        raise FeatureDumpError(f"--ngpu must be >= 0, got {ngpu}.")
    if ngpu == 0:
        return device
    if device not in ("auto", "cuda"):
        raise FeatureDumpError(
            f"--ngpu {ngpu} puts the shards on GPUs but --device is {device}. Fix: "
            "leave --device out, or use --ngpu 0 with --device."
        )
    return f"cuda:{((shard or 1) - 1) % ngpu}"


def build_dumper(args: argparse.Namespace):
    """The dumper of ``args``, on its device and in its precision.

    Args:
        args: The parsed command line.

    Returns:
        The ``FeatureDumper``.
    """
    options = dumper_options(args)
    if args.feature_type != "mfcc":
        options["device"] = shard_device(args.device, args.ngpu, args.shard)
    elif args.bf16:
        raise FeatureDumpError(
            "MFCCs are computed in float32 on the CPU. Fix: drop --bf16 true."
        )
    dumper = get_dumper(args.feature_type, **options)
    if args.feature_type != "mfcc":
        dumper.bf16 = resolve_bf16(args.bf16, dumper.device)
    logging.info(
        f"features: {dumper.describe()} on {dumper.device}"
        f"{' under bf16 autocast' if dumper.bf16 else ' in float32'}"
    )
    return dumper


def _dump_here(args: argparse.Namespace) -> None:
    """Dump ``--shard`` (or every shard, one after the other) in this process."""
    dumper = build_dumper(args)
    summary = dump_features(
        args.wav_scp,
        args.out_dir,
        dumper,
        nj=args.nj,
        shard=args.shard,
        batch_seconds=args.batch_seconds,
        show_progress=args.show_progress,
        bf16_tolerance=args.bf16_tolerance,
    )
    if summary is not None:
        logging.info(
            f"{summary.feats_scp}: {summary.num_utterances} utterances, "
            f"{summary.num_frames} frames of {dumper.dim} dims"
        )


def _dump_in_processes(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Check the options, run every shard in its own process, then merge."""
    dumper_options(args)  # option errors once here, not once per process
    if args.batch_seconds <= 0:
        raise FeatureDumpError(f"batch_seconds must be > 0, got {args.batch_seconds}.")
    lines = read_two_column_file(args.wav_scp)
    shard_ranges(len(lines), args.nj)  # --nj vs the number of utterances
    ngpu = 0 if args.feature_type == "mfcc" else args.ngpu
    if ngpu != args.ngpu:
        logging.info(f"mfcc runs on the CPU: --ngpu {args.ngpu} is not used")
    shard_device(args.device, ngpu, None)
    launch_shards(argv, args.nj, ngpu, Path(args.out_dir))
    summary = merge_finished(args.wav_scp, args.out_dir, args.nj)
    logging.info(
        f"{summary.feats_scp}: {summary.num_utterances} utterances, "
        f"{summary.num_frames} frames"
    )


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Dump the features; exit with status 1 and a message on a bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        if args.shard is None and args.nj > 1:
            _dump_in_processes(args, sys.argv[1:] if cmd is None else list(cmd))
        else:
            _dump_here(args)
    except (FeatureDumpError, ModelFileError, DataDirError) as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
