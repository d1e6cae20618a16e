#!/usr/bin/env python3
"""Decode several test sets with several ASR models in one process (recipe stage 8).

Usage::

    python -m espnet2.bin.ssl_decode --nj 2 \\
        --job exp/asr_x/config.yaml exp/asr_x/valid.loss.best.pth \\
              dump/raw/dev/wav.scp exp/asr_x/decode_dev \\
        --job exp/asr_x/config.yaml exp/asr_x/valid.loss.best.pth \\
              dump/raw/test/wav.scp exp/asr_x/decode_test \\
        -- --batch_size 1 --beam_size 10 --ctc_weight 1.0 --lm_weight 0.0

Every ``--job CONFIG MODEL WAV_SCP OUT_DIR`` is decoded by ESPnet's own
``espnet2.bin.asr_inference.inference`` with the options after ``--`` (any option of
``asr_inference``), in ``--nj`` forked workers of this one process: ESPnet is imported
once, instead of once per set and job. Each job writes what a run of ``asr_inference``
per shard would (``OUT_DIR/logdir/output.<n>/1best_recog/``, logs
``OUT_DIR/logdir/decode.<n>.log``) and ``OUT_DIR/text``, the 1-best texts sorted by id
(:mod:`espnet2.ssl.recipe.decode`). A failed shard stops the tool with its log named
and exit status 1.
"""

import argparse
import logging
import sys
from typing import List, Optional, Sequence, Tuple

from espnet2.ssl.recipe.decode import (
    DecodeError,
    DecodeJob,
    decode_jobs,
    decode_options,
)
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)

TOOL = "ssl_decode"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_decode`` (the options before ``--``).
    """
    parser = argparse.ArgumentParser(
        description="Decode test sets with ASR models in one process (ESPnet's "
        "asr_inference in forked workers).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--job",
        nargs=4,
        action="append",
        required=True,
        metavar=("CONFIG", "MODEL", "WAV_SCP", "OUT_DIR"),
        help="An ASR training config, its model file, a set's wav.scp and the "
        "output dir (repeatable).",
    )
    parser.add_argument(
        "--nj", type=int, default=2, help="Shards per job and worker processes."
    )
    parser.add_argument(
        "--gpus", type=int, default=0, help="GPUs, a worker each in turn (0: CPU)."
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker."
    )
    add_log_level_argument(parser)
    return parser


def split_arguments(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """The tool's own arguments and asr_inference's (those after ``--``)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Decode every ``--job``; exit status 1 with the failed shard's log named.

    Args:
        argv: The command line without the program name (default: ``sys.argv``).
    """
    own, inference_args = split_arguments(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(own)
    start_tool_logging(TOOL, args, args.log_level)
    if args.nj < 1 or args.threads < 1 or args.gpus < 0:
        exit_with_error(
            TOOL, "--nj and --threads must be at least 1, --gpus at least 0"
        )
    options = decode_options(inference_args + ["--log_level", args.log_level])
    jobs = [DecodeJob(*job) for job in args.job]
    try:
        texts = decode_jobs(jobs, options, args.nj, args.gpus, args.threads)
    except DecodeError as e:
        exit_with_error(TOOL, str(e))
    for text in texts:
        logging.info(f"written {text}")


if __name__ == "__main__":
    main()
