#!/usr/bin/env python3
"""Run a study sweep of a recipe (pretrain, fine-tune, score each point) and report it.

Usage, from a recipe directory (egs2/<corpus>/ssl2)::

    python -m espnet2.bin.ssl_sweep run conf/sweeps/crop.yaml      # runs, then report
    python -m espnet2.bin.ssl_sweep run conf/sweeps/crop.yaml --dry_run
    python -m espnet2.bin.ssl_sweep report conf/sweeps/crop.yaml   # table and plots

Each run's output goes to ``<expdir>/sweep_<name>/logs/<tag>.log``; the table
(``results.csv``, ``results.md``) and plots to ``<expdir>/sweep_<name>/``. A failed
run stops the sweep with its log's name; running the same command again resumes
(finished recipe stages are skipped, finished runs reused). With a ``budget:`` the
planner first measures every run's model (``espnet2/ssl/study/sweep_budget.py``) and
each
run trains until the hours of audio the budget buys it. See
``espnet2/ssl/study/sweep.py`` for the YAML (``runs``, ``grid``, ``budget``).
"""

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from tqdm import tqdm

from espnet2.ssl.study.sweep import Sweep, describe, load_sweep, report, run_command
from espnet2.ssl.study.sweep_budget import plan_runs, seen_hours
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


def _done_stamps(sweep: Sweep, run, expdir: Path) -> Dict[str, str]:
    """The ``.done`` markers of a run's experiments (unchanged: nothing was redone)."""
    stamps = {}
    for name in sweep.experiment_tags(run).values():
        marker = expdir / name / ".done"
        stamps[name] = marker.read_text() if marker.is_file() else ""
    return stamps


def run_all(sweep: Sweep, args: argparse.Namespace, hours: Dict[str, float]) -> None:
    """Runs every point in order; stops at the first failure, naming its log.

    Args:
        sweep: The sweep.
        args: The command line (``expdir``, ``stage``).
        hours: Run tag -> its ``--max_seen_hours`` under the budget (may be empty).
    """
    logs = sweep.out_dir(args.expdir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for run in tqdm(sweep.runs, desc=f"sweep {sweep.name}", unit="run"):
        log = logs / f"{run.tag}.log"
        before, start = _done_stamps(sweep, run, args.expdir), time.time()
        cmd = run_command(sweep, run, args.stage, hours.get(run.tag))
        with open(log, "w", encoding="utf-8") as f:
            code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
        if code != 0:
            exit_with_error(
                TOOL,
                f"run {run.tag} failed (exit {code}); see {log}. Fix it and run the "
                "same command again: finished stages and runs are skipped",
            )
        reused = before == _done_stamps(sweep, run, args.expdir) and all(
            before.values()
        )
        state = "reused (finished before)" if reused else "done"
        logging.info(f"run {run.tag}: {state} in {time.time() - start:.0f} s")


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
        plans = _plans(sweep, args.expdir) if sweep.budget else {}
        hours = seen_hours(sweep, plans) if sweep.budget else {}
    except (OSError, ValueError) as err:
        exit_with_error(TOOL, str(err))
    if hours:
        logging.info(f"budget: hours of audio per run {hours}")
    if args.dry_run:
        print(describe(sweep, hours))
        return
    if args.command == "run":
        if not Path("run.sh").is_file():
            exit_with_error(TOOL, "no ./run.sh here: run from egs2/<corpus>/ssl2")
        run_all(sweep, args, hours)
    try:
        plans = plans or _optional_plans(sweep, args.expdir)
        result = report(sweep, args.expdir, plans=plans)
    except (OSError, ValueError) as err:
        exit_with_error(TOOL, f"cannot report sweep {sweep.name}: {err}")
    print(result["files"]["md"].read_text(), end="")


def _plans(sweep: Sweep, expdir: Path) -> Dict[str, Dict]:
    """The planner's measurement of every run (``sweep_budget.plan_runs``)."""
    crop = sweep.budget.crop_seconds if sweep.budget else 4.0
    return plan_runs(sweep, expdir, crop)


def _optional_plans(sweep: Sweep, expdir: Path) -> Dict[str, Dict]:
    """``_plans`` for the table's parameter and FLOP columns of a sweep without a
    budget: none (with a warning) when a run's config cannot be measured."""
    try:
        return _plans(sweep, expdir)
    except (OSError, ValueError) as err:
        logging.warning(f"no parameter and FLOP columns: {err}")
        return {}


if __name__ == "__main__":
    main(sys.argv[1:])
