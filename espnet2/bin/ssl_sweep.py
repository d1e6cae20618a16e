#!/usr/bin/env python3
"""Run a study sweep of a recipe (pretrain, fine-tune, score each point) and report it.

Usage, from a recipe directory (egs2/<corpus>/ssl1)::

    python -m espnet2.bin.ssl_sweep run conf/sweeps/crop.yaml      # runs, then report
    python -m espnet2.bin.ssl_sweep run conf/sweeps/crop.yaml --dry_run
    python -m espnet2.bin.ssl_sweep report conf/sweeps/crop.yaml   # table and plots

Each run's output goes to ``<expdir>/sweep_<name>/logs/<tag>.log``; the table
(``results.csv``, ``results.md``) and plots to ``<expdir>/sweep_<name>/``. A failed
run stops the sweep with its log's name; running the same command again resumes
(finished recipe stages are skipped). See ``espnet2/ssl/sweep.py`` for the YAML.
"""

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from espnet2.ssl.sweep import describe, load_sweep, report, run_command
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)

TOOL = "ssl_sweep"


def get_parser() -> argparse.ArgumentParser:
    """The command line of ``ssl_sweep`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("sweep", type=Path, help="The sweep YAML")
    parser.add_argument(
        "--expdir",
        type=Path,
        default=Path("exp"),
        help="run.sh's --expdir (the same for every run)",
    )
    parser.add_argument("--stage", type=int, default=1, help="First run.sh stage")
    parser.add_argument(
        "--dry_run", action="store_true", help="Print the run.sh commands only"
    )
    add_log_level_argument(parser)
    return parser  # fmt: skip


def run_all(sweep, args: argparse.Namespace) -> None:
    """Runs every point in order; stops at the first failure, naming its log."""
    logs = args.expdir / f"sweep_{sweep.name}" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for run in tqdm(sweep.runs, desc=f"sweep {sweep.name}", unit="run"):
        log = logs / f"{run.tag}.log"
        with open(log, "w", encoding="utf-8") as f:
            code = subprocess.call(
                run_command(sweep, run, args.stage), stdout=f, stderr=subprocess.STDOUT
            )
        if code != 0:
            exit_with_error(
                TOOL,
                f"run {run.tag} failed (exit {code}); see {log}. Fix it and run the "
                "same command again: finished stages and runs are skipped",
            )


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Runs a sweep (``run``) and prints its markdown table (``run``, ``report``).

    With ``--dry_run`` only the ``run.sh`` command lines are printed. A bad sweep
    YAML, a missing ``./run.sh``, a failed run or a run that cannot be reported is
    one error line and exit status 1.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        sweep = load_sweep(args.sweep)
    except (OSError, ValueError) as err:
        exit_with_error(TOOL, str(err))
    if args.dry_run:
        print(describe(sweep))
        return
    if args.command == "run":
        if not Path("run.sh").is_file():
            exit_with_error(TOOL, "no ./run.sh here: run from egs2/<corpus>/ssl1")
        run_all(sweep, args)
    try:
        result = report(sweep, args.expdir)
    except (OSError, ValueError) as err:
        exit_with_error(TOOL, f"cannot report sweep {sweep.name}: {err}")
    print(result["files"]["md"].read_text(), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
