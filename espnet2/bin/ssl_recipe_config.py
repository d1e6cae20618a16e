#!/usr/bin/env python3
"""Facts the SSL recipe reads from a pretraining config, and the config it trains with.

Usage::

    python -m espnet2.bin.ssl_recipe_config needs_labels CONFIG      # prints true|false
    python -m espnet2.bin.ssl_recipe_config num_blocks CONFIG        # prints N
    python -m espnet2.bin.ssl_recipe_config set_num_classes CONFIG K OUT

See :mod:`espnet2.ssl.recipe_config`. A config the recipe cannot use stops with the
file and the fix, and exit status 1.
"""

import argparse
from typing import Optional, Sequence

from espnet2.ssl.recipe_config import (
    RecipeConfigError,
    needs_labels,
    num_blocks,
    write_with_num_classes,
)
from espnet2.utils.tool_logging import exit_with_error

TOOL = "ssl_recipe_config"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser with one subcommand per fact."""
    parser = argparse.ArgumentParser(
        description="Read facts from, or set num_classes in, an SSL pretraining config."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    labels = sub.add_parser("needs_labels", help="print true if a loss needs labels")
    labels.add_argument("config")
    blocks = sub.add_parser("num_blocks", help="print encoder_conf.num_blocks")
    blocks.add_argument("config")
    classes = sub.add_parser(
        "set_num_classes", help="write the config with the label losses' num_classes"
    )
    classes.add_argument("config")
    classes.add_argument("num_classes", type=int)
    classes.add_argument("output")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run the tool on ``cmd`` (default: ``sys.argv[1:]``)."""
    args = get_parser().parse_args(cmd)
    try:
        if args.command == "needs_labels":
            print("true" if needs_labels(args.config) else "false")
        elif args.command == "num_blocks":
            print(num_blocks(args.config))
        else:
            write_with_num_classes(args.config, args.num_classes, args.output)
    except RecipeConfigError as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
