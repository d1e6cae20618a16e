#!/usr/bin/env python3
"""Check Kaldi-style data directories before a recipe uses them.

Usage::

    python -m espnet2.bin.validate_data_dir [--sample_rate 16000] [--nj 4] \\
        [--check_audio full|header|none] [--require_text true|false] DIR [DIR ...]

Prints one summary line per valid directory, e.g.
``data/train: 412 utterances, 9 speakers, 20.3 min (1.2-6.1 s)``. At the first problem
it prints the error (file, line, utterance, problem and fix) to stderr and exits with
status 1; the remaining directories are not checked. The checks are listed in
:func:`espnet2.fileio.kaldi_data_dir.validate_data_dir`; ``--check_audio header``
and ``--nj`` are described in :mod:`espnet2.fileio.data_dir_audio`.
"""

import argparse
from typing import Optional, Sequence

from espnet2.fileio.data_dir_audio import audio_check_mode
from espnet2.fileio.kaldi_data_dir import DataDirError, validate_data_dir
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)
from espnet2.utils.types import str2bool


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``validate_data_dir``.
    """
    parser = argparse.ArgumentParser(
        description="Check Kaldi-style data directories (wav.scp, utt2spk, spk2utt, "
        "text, utt2dur) and their audio.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data_dirs", nargs="+", help="Data directories to check.")
    parser.add_argument(
        "--sample_rate", type=int, default=16000, help="Expected sample rate in Hz."
    )
    parser.add_argument(
        "--check_audio",
        type=audio_check_mode,
        default="full",
        metavar="{full,header,none}",
        help="full (or true): open every audio file and decode compressed ones "
        "whole (reads all the audio; finds corrupt payloads and NaN samples); "
        "header: read the headers only (rate, channels, length, a WAV's size; "
        "misses a corrupt FLAC payload and NaN samples, which training then finds "
        "one at a time: for very large corpora from a trusted conversion); "
        "none (or false): no audio check.",
    )
    parser.add_argument(
        "--nj",
        type=int,
        default=1,
        help="Processes checking the audio files of a directory; the first problem "
        "in file order is reported, as with one.",
    )
    parser.add_argument(
        "--require_text",
        type=str2bool,
        default=True,
        help="Require a text file (false for audio-only SSL data).",
    )
    parser.add_argument(
        "--duration_tolerance",
        type=float,
        default=0.01,
        help="Allowed difference between utt2dur and the audio, in seconds.",
    )
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Check each directory in turn; exit with status 1 at the first invalid one.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging("validate_data_dir", args, args.log_level)
    for data_dir in args.data_dirs:
        try:
            summary = validate_data_dir(
                data_dir,
                sample_rate=args.sample_rate,
                check_audio=args.check_audio,
                require_text=args.require_text,
                duration_tolerance=args.duration_tolerance,
                nj=args.nj,
            )
        except DataDirError as err:
            exit_with_error("validate_data_dir", str(err))
        print(summary.describe(data_dir))


if __name__ == "__main__":
    main()
