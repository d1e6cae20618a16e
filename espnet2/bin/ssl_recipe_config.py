#!/usr/bin/env python3
"""Facts the SSL recipe reads from its configs, and the configs it trains with.

Usage::

    python -m espnet2.bin.ssl_recipe_config needs_labels CONFIG      # prints true|false
    python -m espnet2.bin.ssl_recipe_config num_blocks CONFIG        # prints N
    python -m espnet2.bin.ssl_recipe_config set_num_classes CONFIG K OUT
    python -m espnet2.bin.ssl_recipe_config set_frontend_model ASR_CFG MODEL OUT
    python -m espnet2.bin.ssl_recipe_config untrained_model CFG|ZIP OUT_DIR [--seed N]

See :mod:`espnet2.ssl.recipe.pretrain_config` and
:mod:`espnet2.ssl.recipe.finetune_config`. A config
the recipe cannot use stops with the file and the fix, and exit status 1.
"""

import argparse
from typing import Optional, Sequence

from espnet2.ssl.recipe.finetune_config import (
    write_untrained_model,
    write_with_frontend_model,
)
from espnet2.ssl.recipe.pretrain_config import (
    RecipeConfigError,
    needs_labels,
    num_blocks,
    write_with_num_classes,
)
from espnet2.utils.tool_logging import exit_with_error, start_tool_logging

TOOL = "ssl_recipe_config"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser with one subcommand per fact."""
    parser = argparse.ArgumentParser(
        description="Read facts from, or set values in, the configs of the SSL recipe."
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
    frontend = sub.add_parser(
        "set_frontend_model",
        help="write an espnet_ssl ASR config with path_or_url set to MODEL (a packed "
        "zip is unpacked into OUT's folder, ssl_model/, and its .pth named)",
    )
    frontend.add_argument("config")
    frontend.add_argument("model")
    frontend.add_argument("output")
    untrained = sub.add_parser(
        "untrained_model",
        help="write OUT_DIR/{config.yaml,untrained.pth}: the model, untrained",
    )
    untrained.add_argument(
        "train_config",
        help="the config.yaml of a trained model, or a packed zip (its config is "
        "read once unpacked into OUT_DIR/ssl_model/)",
    )
    untrained.add_argument("out_dir")
    untrained.add_argument("--seed", type=int, default=0)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run the tool on ``cmd`` (default: ``sys.argv[1:]``)."""
    args = get_parser().parse_args(cmd)
    if args.command in ("set_frontend_model", "untrained_model"):
        start_tool_logging(TOOL, args)  # the queries print only their answer
    try:
        if args.command == "needs_labels":
            print("true" if needs_labels(args.config) else "false")
        elif args.command == "num_blocks":
            print(num_blocks(args.config))
        elif args.command == "set_num_classes":
            write_with_num_classes(args.config, args.num_classes, args.output)
        elif args.command == "set_frontend_model":
            write_with_frontend_model(args.config, args.model, args.output)
        else:
            write_untrained_model(args.train_config, args.out_dir, args.seed)
    except RecipeConfigError as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
