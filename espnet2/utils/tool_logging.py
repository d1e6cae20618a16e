"""Start-up and error reporting shared by the command-line tools of this project.

Every tool (``espnet2/bin/*.py``, ``egs2/*/ssl2/local/*.py``) logs in ESPnet's format,
logs its arguments at start-up, and reports a bad input as one readable message on
stderr with exit status 1, never as a traceback.
"""

import argparse
import logging
import sys
from typing import NoReturn

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--log_level`` (a ``logging`` level name, default INFO) to ``parser``."""
    parser.add_argument(
        "--log_level",
        type=lambda x: x.upper(),
        default="INFO",
        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"),
        help="The verbosity of logging.",
    )


def start_tool_logging(
    tool: str, args: argparse.Namespace, level: str = "INFO"
) -> None:
    """Configure logging in ESPnet's format and log the tool's arguments.

    Args:
        tool: The tool's name as the user typed it, e.g. ``synth_corpus.py``.
        args: The parsed command line.
        level: A ``logging`` level name.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.info(f"{tool} arguments: {vars(args)}")


def exit_with_error(tool: str, message: str) -> NoReturn:
    """Print ``<tool>: error: <message>`` to stderr and exit with status 1.

    Args:
        tool: The tool's name, e.g. ``validate_data_dir``.
        message: What is wrong and how to fix it.
    """
    print(f"{tool}: error: {message}", file=sys.stderr)
    sys.exit(1)
