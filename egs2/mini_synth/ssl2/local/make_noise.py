#!/usr/bin/env python3
"""Generate mini_synth's noise data dir for augmentation (babble, coloured noise, hum).

Usage::

    python local/make_noise.py --out_dir data/noise \\
        --audio_dir downloads/mini_synth/noise [--seed 0]

Writes ``<out_dir>`` (wav.scp, utt2spk, spk2utt, utt2dur; the noise kind is the
speaker) and 16 kHz mono FLAC files plus ``noise.json`` under ``<audio_dir>``: about
2.3 minutes in a few seconds. A rerun with the same options and complete outputs
returns at once. On a bad option or a synthesis failure it prints one error
paragraph and exits with status 1. The noise is described in
:mod:`espnet2.ssl.synth.noise`; pretraining uses it through
``collate_fn_conf.augmentation.noise_scp`` (``espnet2/ssl/data/augment.py``).
"""

import argparse
from typing import Optional, Sequence

from espnet2.ssl.synth.espeak import EspeakError
from espnet2.ssl.synth.noise import NoiseConfig, build_noise_dir
from espnet2.utils.tool_logging import exit_with_error, start_tool_logging

TOOL = "make_noise.py"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``make_noise.py``.
    """
    parser = argparse.ArgumentParser(
        description="Generate a Kaldi-style noise data dir (babble of espeak voices, "
        "white/pink/brown noise, 50/60 Hz hum) for waveform augmentation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out_dir", required=True, help="The data dir to write, e.g. data/noise."
    )
    parser.add_argument(
        "--audio_dir",
        required=True,
        help="Where the FLAC files and noise.json go (noise only), e.g. "
        "downloads/mini_synth/noise.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the babble sentences, voices and mixing and of the noise (a "
        "stream of its own: the corpus's sets do not change).",
    )
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Build the noise data dir; exit with status 1 on a bad option or error.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args)
    try:
        config = NoiseConfig(seed=args.seed)
    except (TypeError, ValueError) as error:
        exit_with_error(TOOL, f"bad arguments: {error}")
    try:
        build_noise_dir(config, args.out_dir, args.audio_dir)
    except EspeakError as error:
        exit_with_error(
            TOOL,
            f"babble synthesis failed: {error}. Check that the espeakng-loader wheel "
            "is installed in tools/venv (make -C tools).",
        )


if __name__ == "__main__":
    main()
