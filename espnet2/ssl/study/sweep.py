"""Study sweeps: several pretraining runs of a recipe, fine-tuned, scored, tabulated.

A sweep is a YAML file (``egs2/<corpus>/ssl2/conf/sweeps/*.yaml``)::

    name: crop                     # runs: <expdir>/ssl_<name>_<tag>, asr_<name>_<tag>
    metric: cer                    # of result.json: cer or wer
    args: [--ssl_config, conf/tuning/train_ssl_wav2vec2_tiny.yaml]  # run.sh, every run
    ssl_args: --max_seen_hours 1   # espnet2.bin.ssl_train, every run
    asr_args: --max_epoch 15 --num_iters_per_epoch none  # asr_train, every run
    baseline: false                # true: also fine-tune each run's architecture
                                   # from scratch (<asr_tag>_scratch, columns
                                   # scratch_<metric>_<set>)
    runs:
      - tag: crop1s
        ssl_args: --collate_fn_conf crop_seconds=1
      - tag: crop4s
        ssl_args: --collate_fn_conf crop_seconds=4
        args: []                   # more run.sh options (e.g. --train_hours 0.2
                                   # --dumpdir dump_0.2h for a data-size sweep)

A study crosses axes instead of listing runs: ``grid`` maps each axis name to its
values (each a ``tag`` with ``args``/``ssl_args``/``asr_args`` like a run), and the
runs are every combination, in order, tagged with the value tags joined by ``_``
(``hubert_slim_20min_aug``); ``runs`` may add more. ``budget`` gives every run the
same training compute, measured by the planner (``espnet2/ssl/study/planner.py``: FLOPs
of
one real training step of the run's model per second of audio)::

    budget:
      seen_hours: 1.5              # the compute of the reference run at 1.5 h seen
      reference: hubert            # (a run tag; without it: 1.5 h for every run)
      # training_pflop: 20         # or the compute itself, in PFLOP
      crop_seconds: 4              # utterance length the FLOPs are measured on

Each run then trains until its ``--max_seen_hours`` = budget / its FLOPs per hour of
audio (appended to its ``ssl_args``; a run with a cheaper model sees more audio).
The runs' ``args`` must name their ``--ssl_config``.

Each run is ``./run.sh`` from stage 1 to 8 (finished stages are skipped by their
``.done`` markers, so an interrupted sweep resumes where it stopped, and a run
already finished with the same options is reused, not redone), with its own
``--ssl_tag``/``--asr_tag``, and the recipe's scratch baseline only with
``baseline: true`` (the same fine-tuning of an untrained model of the run's
architecture: what pretraining buys, per architecture). The report reads every run's
exact hours seen and updates (``seen_audio.jsonl``), batch options (``config.yaml``),
last validation statistics and pretraining wall time (``checkpoint.pth``: ESPnet's
time of every training and validation epoch), the planner's parameters and FLOPs,
and the scores (``result.json`` of the fine-tuning, and the phone error rate of the
frozen-encoder phone probe, ``<asr_tag>_phones``, where the recipe ran it), and
writes ``results.csv``, ``results.md`` and plots of the metric against hours seen
and training compute.

References: arXiv:2402.13723 (equal seen data; batch size); arXiv:2209.15575
(sequence length); arXiv:2409.16295 (objectives, model size vs data size and
augmentation at a fixed compute budget).
"""

import csv
import dataclasses
import itertools
import json
import logging
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import yaml

from espnet2.ssl.study.training_curves import read_epochs

PathLike = Union[str, Path]
METRICS = ("cer", "wer")
TOP_KEYS = {
    "name", "metric", "args", "ssl_args", "asr_args", "runs", "grid", "budget",
    "description", "baseline",
}  # fmt: skip
RUN_KEYS = {"tag", "args", "ssl_args", "asr_args"}
BUDGET_KEYS = {"seen_hours", "training_pflop", "reference", "crop_seconds"}
PROBE_SUFFIX = "_phones"  # the recipe's phone probe: <expdir>/<asr_tag>_phones
SCRATCH_SUFFIX = "_scratch"  # the recipe's baseline: <expdir>/<asr_tag>_scratch
# validation statistics tabulated when a run's objective reports them
VALID_STATS = ("contrastive_accuracy", "hubert_acc_m", "acc", "loss_reconstruction")


@dataclasses.dataclass
class SweepRun:
    """One point of a sweep, with the sweep-wide options already merged in.

    Attributes:
        tag: The run's name, unique in the sweep (in its experiment dirs' names).
        args: ``run.sh`` options: the sweep's ``args``, then the run's.
        ssl_args: ``--ssl_args`` for ``espnet2.bin.ssl_train`` (sweep's, then
            run's, joined by a space; empty for none).
        asr_args: ``--asr_args`` for ``espnet2.bin.asr_train``, merged the same way.
        axes: For a run of the ``grid``: axis name -> the tag of its value there.
    """

    tag: str
    args: List[str]
    ssl_args: str
    asr_args: str
    axes: Dict[str, str] = dataclasses.field(default_factory=dict)

    def ssl_config(self) -> Optional[str]:
        """The ``--ssl_config`` of its ``run.sh`` options (the last one), or None."""
        return _option(self.args, "ssl_config", None)


@dataclasses.dataclass
class Budget:
    """The training compute every run of a sweep gets (``budget:`` of the YAML).

    Attributes:
        seen_hours: Hours of audio seen: by every run (no ``reference``), or by the
            ``reference`` run, whose compute then every run gets.
        training_pflop: The compute itself (forward + backward, PFLOP), instead.
        reference: Tag of the run whose compute at ``seen_hours`` is the budget.
        crop_seconds: Utterance length (s) the planner measures FLOPs on.
    """

    seen_hours: Optional[float] = None
    training_pflop: Optional[float] = None
    reference: Optional[str] = None
    crop_seconds: float = 4.0


@dataclasses.dataclass
class Sweep:
    """A sweep as ``load_sweep`` reads it.

    Attributes:
        name: The sweep's name (``sweep_<name>`` output dir, experiment tags).
        metric: The score reported and plotted: ``cer`` or ``wer``.
        runs: The points: the grid's combinations, then the listed runs.
        budget: Equal training compute for every run, or None (the runs' own
            ``--max_seen_hours``/``--max_epoch``).
        axes: The grid's axis names, in order (table columns).
        baseline: Whether every run also fine-tunes an untrained model of its
            architecture (``--asr_baseline true``; ``scratch_<metric>_<set>``).
    """

    name: str
    metric: str
    runs: List[SweepRun]
    budget: Optional[Budget] = None
    axes: List[str] = dataclasses.field(default_factory=list)
    baseline: bool = False

    def ssl_tag(self, run: SweepRun) -> str:
        """``--ssl_tag`` of ``run``: its pretraining dir is ``<expdir>/<ssl_tag>``."""
        return f"ssl_{self.name}_{run.tag}"

    def asr_tag(self, run: SweepRun) -> str:
        """``--asr_tag`` of ``run``: its fine-tuning dir is ``<expdir>/<asr_tag>``."""
        return f"asr_{self.name}_{run.tag}"

    def experiment_tags(self, run: SweepRun) -> Dict[str, str]:
        """The dirs under ``<expdir>`` that ``run`` writes: ``ssl`` (pretraining),
        ``asr`` (fine-tuning), ``probe`` (phone probe) and, with ``baseline``,
        ``scratch`` (fine-tuning of an untrained model)."""
        asr = self.asr_tag(run)
        tags = dict(ssl=self.ssl_tag(run), asr=asr, probe=asr + PROBE_SUFFIX)
        if self.baseline:
            tags["scratch"] = asr + SCRATCH_SUFFIX
        return tags

    def out_dir(self, expdir: PathLike) -> Path:
        """Where the sweep's logs, plans, table and plots go."""
        return Path(expdir) / f"sweep_{self.name}"


def _check_keys(where: str, found: Dict, allowed: set) -> None:
    if not isinstance(found, dict):
        raise ValueError(f"{where}: expected a mapping, got {found!r}")
    unknown = set(found) - allowed
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}"
        )


def _joined(*options: Optional[str]) -> str:
    return " ".join(x for x in options if x)


def _merged(conf: Dict, parts: Sequence[Dict], tag: str, axes: Dict) -> SweepRun:
    """A run from the sweep-wide options and its parts (a run, or grid values)."""
    return SweepRun(
        tag=tag,
        args=[str(a) for part in (conf, *parts) for a in part.get("args", [])],
        ssl_args=_joined(conf.get("ssl_args"), *(p.get("ssl_args") for p in parts)),
        asr_args=_joined(conf.get("asr_args"), *(p.get("asr_args") for p in parts)),
        axes=axes,
    )


def _grid_runs(conf: Dict, path: PathLike) -> Tuple[List[str], List[SweepRun]]:
    """The axis names and every combination of the ``grid``'s values."""
    grid = conf.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: grid must map axis names to lists of values")
    if not grid:
        return [], []
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid.{axis} needs a list of values")
        for i, value in enumerate(values):
            _check_keys(f"{path}: grid.{axis}[{i}]", value, RUN_KEYS)
            if not value.get("tag"):
                raise ValueError(f"{path}: grid.{axis}[{i}] needs a tag")
    runs = []
    for combination in itertools.product(*grid.values()):
        tag = "_".join(str(value["tag"]) for value in combination)
        axes = {axis: str(v["tag"]) for axis, v in zip(grid, combination)}
        runs.append(_merged(conf, combination, tag, axes))
    return list(grid), runs


def _load_budget(conf: Dict, path: PathLike, tags: Sequence[str]) -> Optional[Budget]:
    if conf.get("budget") is None:
        return None
    _check_keys(f"{path}: budget", conf["budget"], BUDGET_KEYS)
    budget = Budget(**conf["budget"])
    if budget.reference is not None and budget.seen_hours is None:
        raise ValueError(f"{path}: budget.reference needs budget.seen_hours")
    if (budget.seen_hours is None) == (budget.training_pflop is None):
        raise ValueError(f"{path}: budget needs one of seen_hours, training_pflop")
    if budget.reference is not None and budget.reference not in tags:
        raise ValueError(
            f"{path}: budget.reference {budget.reference!r} is not a run; "
            f"runs: {', '.join(tags)}"
        )
    if min(budget.seen_hours or 1, budget.training_pflop or 1) <= 0:
        raise ValueError(f"{path}: the budget must be positive")
    return budget


def load_sweep(path: PathLike) -> Sweep:
    """Reads and checks a sweep YAML (unknown keys, duplicate tags, bad metric,
    budget, grid)."""
    with open(path, encoding="utf-8") as f:
        conf = yaml.safe_load(f) or {}
    _check_keys(str(path), conf, TOP_KEYS)
    if not conf.get("name") or not (conf.get("runs") or conf.get("grid")):
        raise ValueError(f"{path}: a sweep needs a name and at least one run")
    metric = conf.get("metric", "cer")
    if metric not in METRICS:
        raise ValueError(f"{path}: metric must be one of {METRICS}, got {metric!r}")
    axes, runs = _grid_runs(conf, path)
    for i, run in enumerate(conf.get("runs") or []):
        _check_keys(f"{path}: runs[{i}]", run, RUN_KEYS)
        runs.append(_merged(conf, [run], str(run.get("tag", "")), {}))
    tags = set()
    for i, run in enumerate(runs):
        if not run.tag or run.tag in tags or "/" in run.tag:
            raise ValueError(
                f"{path}: run {i} needs a unique tag without '/', got {run.tag!r}"
            )
        tags.add(run.tag)
    baseline = conf.get("baseline", False)
    if not isinstance(baseline, bool):
        raise ValueError(f"{path}: baseline must be true or false, got {baseline!r}")
    budget = _load_budget(conf, path, [run.tag for run in runs])
    if budget is not None:
        for run in runs:
            if run.ssl_config() is None:
                raise ValueError(
                    f"{path}: run {run.tag} has no --ssl_config in its args; a "
                    "budget needs each run's config for the planner"
                )
    return Sweep(conf["name"], metric, runs, budget, axes, baseline)


def run_command(
    sweep: Sweep, run: SweepRun, stage: int = 1, seen_hours: Optional[float] = None
) -> List[str]:
    """The ``./run.sh`` command line of one run.

    Args:
        sweep: The sweep.
        run: One of its runs.
        stage: The first recipe stage.
        seen_hours: The run's budget in hours of audio (``--max_seen_hours``,
            appended to its ``ssl_args`` so that it wins), or None.
    """
    cmd = ["./run.sh", *run.args, "--stage", str(stage), "--stop_stage", "8"]
    cmd += ["--ssl_tag", sweep.ssl_tag(run), "--asr_tag", sweep.asr_tag(run)]
    cmd += ["--asr_baseline", "true" if sweep.baseline else "false"]
    ssl_args = run.ssl_args
    if seen_hours is not None:
        ssl_args = _joined(ssl_args, f"--max_seen_hours {seen_hours:g}")
    if ssl_args:
        cmd += ["--ssl_args", ssl_args]
    if run.asr_args:
        cmd += ["--asr_args", run.asr_args]
    return cmd


def _option(args: Sequence[str], name: str, default: Optional[str]) -> Optional[str]:
    """The last value of ``--name`` in a run.sh argument list (last one wins)."""
    value = default
    for flag, arg in zip(args, args[1:]):
        if flag == f"--{name}":
            value = arg
    return value


def collect_run(
    sweep: Sweep, run: SweepRun, expdir: PathLike, plan: Optional[Dict] = None
) -> Dict:
    """One results row: axes, size and compute, batch, crop, hours seen, updates,
    pretraining wall time, valid stats, scores (the phone probe's PER, and the
    scratch baseline's scores with ``baseline: true``).

    Args:
        sweep: The sweep.
        run: The run.
        expdir: The recipe's ``--expdir``.
        plan: The run's planner measurement (``sweep_budget.plan_runs``), or None.
    """
    dirs = {key: Path(expdir) / tag for key, tag in sweep.experiment_tags(run).items()}
    ssl_dir, asr_dir = dirs["ssl"], dirs["asr"]
    epochs = read_epochs(ssl_dir)
    if not epochs:
        raise ValueError(f"{ssl_dir}: no finished epoch")
    with open(ssl_dir / "config.yaml", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    last = epochs[-1]
    row = dict(tag=run.tag, **run.axes)
    if plan is not None:
        flops = plan["training_flops_per_audio_s"]
        row.update(
            params_m=plan["parameters"] / 1e6,
            train_gflop_per_audio_s=flops / 1e9,
            train_pflop=flops * last["seen_hours"] * 3600 / 1e15,
        )
    row.update(
        crop_seconds=config.get("collate_fn_conf", {}).get("crop_seconds"),
        update_seconds=last["train"].get("update_seconds"),
        batch_seconds=config.get("batch_seconds"),
        accum_grad=config.get("accum_grad"),
        train_hours=_option(run.args, "train_hours", "") or None,
        epochs=last["epoch"],
        updates=last["num_updates"],
        seen_hours=last["seen_hours"],
        pretrain_minutes=sum(e["train_seconds"] + e["valid_seconds"] for e in epochs)
        / 60,
        valid_loss=last["valid"].get("loss"),
    )
    for key in VALID_STATS:
        if key in last["valid"]:
            row[f"valid_{key}"] = last["valid"][key]
    if "aug_share" in last["train"]:
        row["aug_share"] = last["train"]["aug_share"]
    row.update(_scores(asr_dir))
    if dirs["probe"].is_dir():
        probe = _scores(dirs["probe"])
        row.update({f"per_{k[4:]}": v for k, v in probe.items() if k[:4] == "wer_"})
    if "scratch" in dirs:
        row.update({f"scratch_{k}": v for k, v in _scores(dirs["scratch"]).items()})
    return row


def _scores(asr_dir: Path) -> Dict[str, float]:
    """``<metric>_<set>`` of every scored set of a fine-tuning experiment."""
    scores = {}
    for result in sorted(asr_dir.glob("decode_*/score/result.json")):
        dset = result.parent.parent.name[len("decode_") :]
        data = json.loads(result.read_text())
        for metric in METRICS:
            scores[f"{metric}_{dset}"] = data[metric]["error_rate"]
    if not scores:
        raise ValueError(f"{asr_dir}: no decode_*/score/result.json (stage 8 not run?)")
    return scores


def write_table(rows: List[Dict], out_dir: PathLike) -> Dict[str, Path]:
    """``results.csv`` and ``results.md`` with one row per run (a column no run
    has a value for, such as ``crop_seconds`` of a sweep without crops, is left
    out)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [
        key
        for key in dict.fromkeys(k for row in rows for k in row)
        if any(row.get(key) not in (None, "") for row in rows)
    ]
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows
    ]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"csv": out_dir / "results.csv", "md": out_dir / "results.md"}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _scatter(rows: List[Dict], x_key: str, y_keys: List[str], labels, path: Path):
    """One point per run and score key, each annotated with the run's tag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in y_keys:
        points = [r for r in rows if r.get(key) is not None]
        ax.plot([r[x_key] for r in points], [r[key] for r in points], "o", label=key)
        for row in points:
            ax.annotate(row["tag"], (row[x_key], row[key]), fontsize=6)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_sweep(
    sweep: Sweep, rows: List[Dict], expdir: PathLike, out_dir: PathLike
) -> List[Path]:
    """The metric (and the phone probe's PER) of every scored set against hours
    seen and, with the planner's numbers, against training compute (one point per
    run); every run's validation loss against hours seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    metric_keys = sorted(k for k in keys if k.startswith(f"{sweep.metric}_"))
    per_keys = sorted(k for k in keys if k.startswith("per_"))
    ylabel = f"{sweep.metric.upper()} % after fine-tuning"
    written = [
        _scatter(rows, "seen_hours", metric_keys, ("hours seen in pretraining", ylabel),
                 out_dir / f"{sweep.metric}_vs_seen_hours.png")
    ]  # fmt: skip
    if per_keys:
        written.append(_scatter(
            rows, "seen_hours", per_keys, ("hours seen in pretraining",
                                           "PER % of the frozen-encoder probe"),
            out_dir / "per_vs_seen_hours.png"))  # fmt: skip
    if "train_pflop" in keys:
        written.append(_scatter(
            rows, "train_pflop", metric_keys + per_keys,
            ("training PFLOP (planner)", "error rate %"),
            out_dir / f"{sweep.metric}_vs_train_pflop.png"))  # fmt: skip
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for run in sweep.runs:
        epochs = read_epochs(Path(expdir) / sweep.ssl_tag(run))
        hours = [e["seen_hours"] for e in epochs]
        losses = [e["valid"].get("loss") for e in epochs]
        ax.plot(hours, losses, marker=".", label=run.tag)
    ax.set_xlabel("hours seen")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out_dir / "valid_loss_vs_seen_hours.png")
    fig.savefig(written[-1], dpi=80)
    plt.close(fig)
    return written


def report(
    sweep: Sweep,
    expdir: PathLike,
    out_dir: Optional[PathLike] = None,
    plans: Optional[Dict[str, Dict]] = None,
) -> Dict:
    """Collects every run and writes the table and plots; returns rows and files.

    Args:
        sweep: The sweep.
        expdir: The recipe's ``--expdir``.
        out_dir: Where to write (default ``<expdir>/sweep_<name>``).
        plans: Run tag -> planner measurement (parameter and FLOP columns), or None.
    """
    out_dir = Path(out_dir or sweep.out_dir(expdir))
    plans = plans or {}
    rows = [collect_run(sweep, run, expdir, plans.get(run.tag)) for run in sweep.runs]
    files = write_table(rows, out_dir)
    plots = plot_sweep(sweep, rows, expdir, out_dir)
    logging.info(f"sweep {sweep.name}: {len(rows)} runs; table and plots in {out_dir}")
    return {"rows": rows, "files": files, "plots": plots}


def describe(sweep: Sweep, hours: Optional[Dict[str, float]] = None) -> str:
    """The runs' command lines, one per line (``--dry_run``)."""
    hours = hours or {}
    return "\n".join(
        shlex.join(run_command(sweep, run, seen_hours=hours.get(run.tag)))
        for run in sweep.runs
    )
