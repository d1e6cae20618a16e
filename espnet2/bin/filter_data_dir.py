#!/usr/bin/env python3
"""Copy a data dir without the utterances outside a duration range (recipe stage 2).

Usage::

    python -m espnet2.bin.filter_data_dir --min_seconds 0.1 --max_seconds 20 \\
        --sample_rate 16000 data/train dump/raw/train

Writes the filtered Kaldi files, ``utt2num_samples``, ``utt2dur`` and
``filtered_utts`` (``utt seconds reason`` for every removed utterance); see
:func:`espnet2.fileio.filter_data_dir.filter_data_dir`. A bad data dir stops with
the file, line, utterance and fix, and exit status 1.
"""

import argparse
from typing import Optional, Sequence

from espnet2.fileio.filter_data_dir import filter_data_dir
from espnet2.fileio.kaldi_data_dir import DataDirError
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)
from espnet2.utils.types import float_or_none

TOOL = "filter_data_dir"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(
        description="Copy a Kaldi-style data dir without too short or too long "
        "utterances, listing every removed one.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("src", help="The data dir to read, e.g. data/train.")
    parser.add_argument("dst", help="The output dir, e.g. dump/raw/train (replaced).")
    parser.add_argument(
        "--min_seconds", type=float, default=0.1, help="Shortest kept utterance."
    )
    parser.add_argument(
        "--max_seconds",
        type=float_or_none,
        default=20.0,
        help="Longest kept utterance ('none' for no limit).",
    )
    parser.add_argument(
        "--sample_rate", type=int, default=16000, help="Sample rate of the audio."
    )
    parser.add_argument(
        "--max_hours",
        type=float_or_none,
        default=None,
        help="Keep a seeded random subset of at most this many hours ('none': all).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of that subset.")
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run the tool on ``cmd`` (default: ``sys.argv[1:]``)."""
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        filter_data_dir(
            args.src,
            args.dst,
            args.min_seconds,
            args.max_seconds,
            args.sample_rate,
            args.max_hours,
            args.seed,
        )
    except DataDirError as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
