#!/usr/bin/env python3
"""Synthesise the mini_synth corpus and write its Kaldi-style data directories.

Usage::

    python local/synth_corpus.py --out_dir data --audio_dir downloads/mini_synth \\
        [--seed 0] [--train_minutes 20] [--labeled_minutes 5] \\
        [--dev_minutes 2] [--test_minutes 2]

Writes ``<out_dir>/{train,train_labeled,dev,test}`` (wav.scp, text, utt2spk, spk2utt,
utt2dur, phones.ctm) and 16 kHz FLAC files plus ``corpus.json`` under ``<audio_dir>``.
A rerun with the same options and complete outputs returns at once. On a bad option or
a synthesis failure it prints one error paragraph and exits with status 1. The corpus
itself is described in :mod:`espnet2.ssl.synth.corpus`.
"""

import argparse
from typing import Optional, Sequence

from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus
from espnet2.ssl.synth.espeak import EspeakError
from espnet2.utils.tool_logging import exit_with_error, start_tool_logging

TOOL = "synth_corpus.py"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``synth_corpus.py``.
    """
    parser = argparse.ArgumentParser(
        description="Synthesise the mini_synth corpus with espeak-ng and write "
        "Kaldi-style data dirs train, train_labeled, dev and test.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out_dir",
        required=True,
        help="Parent of the data dirs, e.g. data (gets data/train, ...).",
    )
    parser.add_argument(
        "--audio_dir",
        required=True,
        help="Where the audio files and corpus.json go, e.g. downloads/mini_synth.",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Random seed of sentences and voices."
    )
    parser.add_argument(
        "--train_minutes",
        type=float,
        default=20.0,
        help="Minutes of audio in train (the unlabeled pretraining set).",
    )
    parser.add_argument(
        "--labeled_minutes",
        type=float,
        default=5.0,
        help="Minutes of audio in train_labeled, a subset of train.",
    )
    parser.add_argument(
        "--dev_minutes", type=float, default=2.0, help="Minutes of audio in dev."
    )
    parser.add_argument(
        "--test_minutes", type=float, default=2.0, help="Minutes of audio in test."
    )
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Build the corpus; exit with status 1 on a bad option or a synthesis error.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args)
    try:
        config = SynthCorpusConfig(
            seed=args.seed,
            train_minutes=args.train_minutes,
            labeled_minutes=args.labeled_minutes,
            dev_minutes=args.dev_minutes,
            test_minutes=args.test_minutes,
        )
    except (TypeError, ValueError) as error:
        exit_with_error(TOOL, f"bad arguments: {error}")
    try:
        build_corpus(config, args.out_dir, args.audio_dir)
    except EspeakError as error:
        exit_with_error(
            TOOL,
            f"speech synthesis failed: {error}. Check that the espeakng-loader wheel "
            "is installed in tools/venv (make -C tools).",
        )


if __name__ == "__main__":
    main()
