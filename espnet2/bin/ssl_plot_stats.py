#!/usr/bin/env python3
"""Plot an SSL experiment's statistics against updates and against hours seen.

Usage::

    python -m espnet2.bin.ssl_plot_stats exp/ssl_wav2vec2_tiny
    # -> exp/ssl_wav2vec2_tiny/images_budget/{train,valid}_<statistic>.png

Reads ``checkpoint.pth`` (ESPnet's per-epoch statistics) and ``seen_audio.jsonl``
(exact hours seen and updates per epoch); see ``espnet2/ssl/study/training_curves.py``.
Recipe stage 4 runs it after each pretraining.
"""

import argparse
from pathlib import Path
from typing import Optional, Sequence

from espnet2.ssl.study.training_curves import plot_epochs, read_epochs
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)

TOOL = "ssl_plot_stats"


def get_parser() -> argparse.ArgumentParser:
    """The command line of ``ssl_plot_stats`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("exp_dir", type=Path, help="An ssl_train output dir")
    parser.add_argument(
        "--out_dir", type=Path, default=None, help="Default: <exp_dir>/images_budget"
    )
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Writes one PNG per statistic of ``exp_dir`` into ``--out_dir``.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.

    A missing ``checkpoint.pth`` / ``seen_audio.jsonl`` or an experiment without a
    finished epoch is reported as one error line and exit status 1.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        records = read_epochs(args.exp_dir)
    except FileNotFoundError as err:
        exit_with_error(TOOL, str(err))
    if not records:
        exit_with_error(TOOL, f"{args.exp_dir}: no finished epoch to plot")
    plot_epochs(
        records, args.out_dir or args.exp_dir / "images_budget", str(args.exp_dir)
    )


if __name__ == "__main__":
    main()
