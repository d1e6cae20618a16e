"""Benchmark: the embedded main job, stage by stage and process by process.

Runs a recipe's ``run.sh`` (default: ``egs2/mini_synth/ssl2``, stages 1-9) in a fresh
clone of this repository's HEAD, with the project's environment already installed (the
clone links ``tools/venv`` of this checkout), and writes where the time goes:

* the wall time of every stage, from the ``Stage N`` lines of the run's log, stamped
  as they are printed;
* every Python process the run starts: its command, wall time and CPU time, logged at
  its exit by a ``sitecustomize`` module that the clone's ``PYTHONPATH`` puts first
  (the run's code is not changed; a process killed by a signal is not logged);
* the import cost of every tool the run started: ``python -m TOOL --help`` (or
  ``python SCRIPT --help``) timed after the run, median of ``--import_repeats``, on the
  same environment. It is what a process pays before its first line of work: the
  ``import seconds`` of a stage is the sum of it over the stage's processes.

``--env KEY=VALUE`` sets variables for the run only (for example an allocator setting),
so two runs of this script compare a change of environment; two commits compare by
running it in each checkout. Run it on an idle machine: it flags a run whose load
average before the start was above 0.5.

Run from the repository root::

    tools/venv/bin/python test/bench/bench_main_job.py --workdir /tmp/main_job
    tools/venv/bin/python test/bench/bench_main_job.py --workdir /tmp/mj --stop_stage 4

Writes ``bench/results/main_job.json`` (``--output``) and prints the tables as
markdown (``--markdown FILE`` to keep them).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
STAGE_LINE = re.compile(r"\[ssl\.sh:\d+\] Stage (\d+)")
TOOLS_PREREQUISITES = ("requirements.lock", "requirements.txt", "install.sh")
SITECUSTOMIZE = """\
# Written by test/bench/bench_main_job.py: logs this Python process at its exit.
import atexit
import json
import os
import sys
import time

_LOG = os.environ.get("BENCH_PROC_LOG")
_PID = os.getpid()
_START = time.time()


def _bench_log_process():
    if os.getpid() != _PID:  # a forked child (data-loader worker) is not the tool
        return
    times = os.times()
    record = {
        "pid": _PID,
        "argv": list(getattr(sys, "orig_argv", sys.argv)),
        "start": _START,
        "end": time.time(),
        "cpu_s": times.user + times.system,
        "children_cpu_s": times.children_user + times.children_system,
    }
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\\n")


if _LOG:
    atexit.register(_bench_log_process)
"""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        required=True,
        help="fresh folder for the clone (removed first if it exists)",
    )
    parser.add_argument("--recipe", default="egs2/mini_synth/ssl2")
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--stop_stage", type=int, default=9)
    parser.add_argument("--run_args", default="", help="more options for run.sh")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the run (repeatable)",
    )
    parser.add_argument("--import_repeats", type=int, default=3)
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench/results/main_job.json"
    )
    parser.add_argument("--markdown", type=Path, default=None)
    return parser


def fresh_clone(workdir: Path) -> Path:
    """A clone of HEAD in WORKDIR/repo whose tools/venv is this checkout's.

    The tools' prerequisites get an old time stamp, so ``make -q -C tools`` in
    ``path.sh`` finds the linked environment up to date and installs nothing.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    clone = workdir / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = REPO / "tools" / "venv"
    if not (venv / ".installed").is_file():
        sys.exit(f"{venv} is not installed: run `make -C {REPO / 'tools'}` first")
    (clone / "tools" / "venv").symlink_to(venv)
    for name in TOOLS_PREREQUISITES:
        os.utime(clone / "tools" / name, (0, 0))
    return clone


def run_recipe(
    clone: Path, args, proc_log: Path, shim: Path
) -> Tuple[List, float, int]:
    """Runs run.sh; returns [(seconds since start, line)], the wall time and the rc."""
    # REPO on the path keeps the linked venv's .pth from putting REPO first; path.sh
    # puts the clone before both
    env = dict(os.environ, BENCH_PROC_LOG=str(proc_log), PYTHONPATH=f"{shim}:{REPO}")
    env.pop("VIRTUAL_ENV", None)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    command = [
        "./run.sh",
        "--stage",
        str(args.stage),
        "--stop_stage",
        str(args.stop_stage),
    ]
    command += args.run_args.split()
    lines: List[Tuple[float, str]] = []
    start = time.time()
    with subprocess.Popen(
        command,
        cwd=clone / args.recipe,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        for line in proc.stdout:
            lines.append((time.time() - start, line.rstrip("\n")))
            print(line, end="", flush=True)
    return lines, time.time() - start, proc.returncode


def stage_windows(lines, wall: float) -> Dict[int, Tuple[float, float]]:
    """Stage -> (start, end) in seconds since the run started, from its log lines."""
    firsts: Dict[int, float] = {}
    for at, line in lines:
        match = STAGE_LINE.search(line)
        if match:
            firsts.setdefault(int(match.group(1)), at)
    order = sorted(firsts.items(), key=lambda item: item[1])
    return {
        stage: (at, order[i + 1][1] if i + 1 < len(order) else wall)
        for i, (stage, at) in enumerate(order)
    }


def tool_name(argv: Sequence[str]) -> str:
    """``espnet2.bin.asr_train`` for ``python -m espnet2.bin.asr_train ...``, the
    script's path for ``python local/x.py``, ``python -c`` for inline code."""
    args = list(argv[1:])
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args.pop(0)
    if not args:
        return "python"
    if args[0] == "-m":
        return args[1]
    if args[0] == "-c":
        return "python -c"
    return args[0]


def import_seconds(
    tool: str, cwd: Path, env: Dict[str, str], repeats: int
) -> Optional[float]:
    """Median wall time of ``python [-m] TOOL --help``: the imports of a process."""
    if tool in ("python", "python -c"):
        command = [sys.executable, "-c", "pass"]
    elif tool.endswith(".py"):
        command = [sys.executable, tool, "--help"]
    else:
        command = [sys.executable, "-m", tool, "--help"]
    times = []
    for _ in range(repeats):
        start = time.time()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
        times.append(time.time() - start)
        if done.returncode != 0:
            return None
    return statistics.median(times)


def breakdown(records, windows, imports) -> Dict[str, Dict]:
    """Per stage: wall, processes, their wall and CPU seconds, import seconds."""
    stages = {}
    for stage, (begin, end) in sorted(windows.items()):
        inside = [r for r in records if begin <= r["start_rel"] < end]
        stages[str(stage)] = {
            "wall_s": end - begin,
            "processes": len(inside),
            "process_wall_s": sum(r["end"] - r["start"] for r in inside),
            "process_cpu_s": sum(r["cpu_s"] for r in inside),
            "import_s": sum(imports.get(r["tool"]) or 0.0 for r in inside),
        }
    return stages


def markdown(result: Dict) -> str:
    """The stage table and the tool table."""
    out = [
        "| stage | wall | processes | process wall s | process CPU s | import s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage, row in result["stages"].items():
        out.append(
            f"| {stage} | {row['wall_s']:.0f} s | {row['processes']} | "
            f"{row['process_wall_s']:.0f} | {row['process_cpu_s']:.0f} | "
            f"{row['import_s']:.0f} |"
        )
    total = result["total"]
    out.append(
        f"| all | {total['wall_s']:.0f} s | {total['processes']} | "
        f"{total['process_wall_s']:.0f} | {total['process_cpu_s']:.0f} | "
        f"{total['import_s']:.0f} |"
    )
    out += [
        "",
        "| tool | processes | import s each | wall s (all) |",
        "|---|---:|---:|---:|",
    ]
    for tool, row in sorted(
        result["tools"].items(), key=lambda item: -item[1]["wall_s"]
    ):
        each = "-" if row["import_s"] is None else f"{row['import_s']:.1f}"
        out.append(f"| `{tool}` | {row['processes']} | {each} | {row['wall_s']:.0f} |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    load_before = os.getloadavg()
    clone = fresh_clone(args.workdir.resolve())
    shim = args.workdir.resolve() / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    proc_log = args.workdir.resolve() / "processes.jsonl"
    lines, wall, rc = run_recipe(clone, args, proc_log, shim)
    start = time.time() - wall
    records = (
        [json.loads(x) for x in proc_log.read_text().splitlines()]
        if proc_log.exists()
        else []
    )
    for record in records:
        record["tool"] = tool_name(record["argv"])
        record["start_rel"] = record["start"] - start
    env = dict(os.environ, PYTHONPATH=f"{clone}:{REPO}")
    recipe_dir = clone / args.recipe
    tools = sorted({r["tool"] for r in records})
    imports = {
        t: import_seconds(t, recipe_dir, env, args.import_repeats) for t in tools
    }
    windows = stage_windows(lines, wall)
    stages = breakdown(records, windows, imports)
    result = {
        "bench": "main_job",
        "recipe": args.recipe,
        "rc": rc,
        "wall_s": wall,
        "env": args.env,
        "run_args": args.run_args,
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=clone, text=True, capture_output=True
        ).stdout.strip(),
        "loadavg_before": load_before,
        "contended": load_before[0] > 0.5,
        "loadavg_after": os.getloadavg(),
        "stages": stages,
        "total": {
            "wall_s": wall,
            "processes": len(records),
            "process_wall_s": sum(r["end"] - r["start"] for r in records),
            "process_cpu_s": sum(r["cpu_s"] for r in records),
            "import_s": sum(imports.get(r["tool"]) or 0.0 for r in records),
        },
        "tools": {
            t: {
                "processes": sum(r["tool"] == t for r in records),
                "import_s": imports[t],
                "wall_s": sum(r["end"] - r["start"] for r in records if r["tool"] == t),
            }
            for t in tools
        },
        "processes": records,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1), encoding="utf-8")
    table = markdown(result)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    print(f"rc {rc}, wall {wall:.0f} s, written {args.output}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
