"""Study sweeps: several pretraining runs of a recipe, fine-tuned, scored, tabulated.

A sweep is a YAML file (``egs2/<corpus>/ssl1/conf/sweeps/*.yaml``)::

    name: crop                     # runs: <expdir>/ssl_<name>_<tag>, asr_<name>_<tag>
    metric: cer                    # of result.json: cer or wer
    args: [--ssl_config, conf/tuning/train_ssl_wav2vec2_tiny.yaml]  # run.sh, every run
    ssl_args: --max_seen_hours 1   # espnet2.bin.ssl_train, every run
    asr_args: --max_epoch 15       # espnet2.bin.asr_train, every run
    runs:
      - tag: crop1s
        ssl_args: --collate_fn_conf crop_seconds=1
      - tag: crop4s
        ssl_args: --collate_fn_conf crop_seconds=4
        args: []                   # more run.sh options (e.g. --train_hours 0.2
                                   # --dumpdir dump_0.2h for a data-size sweep)

Each run is ``./run.sh`` from stage 1 to 8 (finished stages are skipped by their
``.done`` markers, so an interrupted sweep resumes where it stopped), with its own
``--ssl_tag``/``--asr_tag`` and no scratch baseline. The report reads every run's
exact hours seen and updates (``seen_audio.jsonl``), batch options (``config.yaml``),
last validation statistics (``checkpoint.pth``) and scores (``result.json``), and
writes ``results.csv``, ``results.md`` and plots of the metric against hours seen.

References: arXiv:2402.13723 (equal seen data; batch size); arXiv:2209.15575
(sequence length); arXiv:2409.16295 (model size vs data size).
"""

import csv
import dataclasses
import json
import logging
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import yaml

from espnet2.ssl.training_curves import read_epochs

PathLike = Union[str, Path]
METRICS = ("cer", "wer")
TOP_KEYS = {"name", "metric", "args", "ssl_args", "asr_args", "runs", "description"}
RUN_KEYS = {"tag", "args", "ssl_args", "asr_args"}


@dataclasses.dataclass
class SweepRun:
    """One point of a sweep, with the sweep-wide options already merged in.

    Attributes:
        tag: The run's name, unique in the sweep (in its experiment dirs' names).
        args: ``run.sh`` options: the sweep's ``args``, then the run's.
        ssl_args: ``--ssl_args`` for ``espnet2.bin.ssl_train`` (sweep's, then
            run's, joined by a space; empty for none).
        asr_args: ``--asr_args`` for ``espnet2.bin.asr_train``, merged the same way.
    """

    tag: str
    args: List[str]
    ssl_args: str
    asr_args: str


@dataclasses.dataclass
class Sweep:
    """A sweep as ``load_sweep`` reads it.

    Attributes:
        name: The sweep's name (``sweep_<name>`` output dir, experiment tags).
        metric: The score reported and plotted: ``cer`` or ``wer``.
        runs: The points, in the YAML's order.
    """

    name: str
    metric: str
    runs: List[SweepRun]

    def ssl_tag(self, run: SweepRun) -> str:
        """``--ssl_tag`` of ``run``: its pretraining dir is ``<expdir>/<ssl_tag>``."""
        return f"ssl_{self.name}_{run.tag}"

    def asr_tag(self, run: SweepRun) -> str:
        """``--asr_tag`` of ``run``: its fine-tuning dir is ``<expdir>/<asr_tag>``."""
        return f"asr_{self.name}_{run.tag}"


def _check_keys(where: str, found: Dict, allowed: set) -> None:
    unknown = set(found) - allowed
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}"
        )


def _joined(*options: Optional[str]) -> str:
    return " ".join(x for x in options if x)


def load_sweep(path: PathLike) -> Sweep:
    """Reads and checks a sweep YAML (unknown keys, duplicate tags, bad metric)."""
    with open(path, encoding="utf-8") as f:
        conf = yaml.safe_load(f) or {}
    _check_keys(str(path), conf, TOP_KEYS)
    if not conf.get("name") or not conf.get("runs"):
        raise ValueError(f"{path}: a sweep needs a name and at least one run")
    metric = conf.get("metric", "cer")
    if metric not in METRICS:
        raise ValueError(f"{path}: metric must be one of {METRICS}, got {metric!r}")
    runs, tags = [], set()
    for i, run in enumerate(conf["runs"]):
        _check_keys(f"{path}: runs[{i}]", run, RUN_KEYS)
        tag = str(run.get("tag", ""))
        if not tag or tag in tags or "/" in tag:
            raise ValueError(
                f"{path}: runs[{i}] needs a unique tag without '/', got {tag!r}"
            )
        tags.add(tag)
        runs.append(
            SweepRun(
                tag=tag,
                args=[str(a) for a in [*conf.get("args", []), *run.get("args", [])]],
                ssl_args=_joined(conf.get("ssl_args"), run.get("ssl_args")),
                asr_args=_joined(conf.get("asr_args"), run.get("asr_args")),
            )
        )
    return Sweep(conf["name"], metric, runs)


def run_command(sweep: Sweep, run: SweepRun, stage: int = 1) -> List[str]:
    """The ``./run.sh`` command line of one run."""
    cmd = ["./run.sh", *run.args, "--stage", str(stage), "--stop_stage", "8"]
    cmd += ["--ssl_tag", sweep.ssl_tag(run), "--asr_tag", sweep.asr_tag(run)]
    cmd += ["--asr_baseline", "false"]
    if run.ssl_args:
        cmd += ["--ssl_args", run.ssl_args]
    if run.asr_args:
        cmd += ["--asr_args", run.asr_args]
    return cmd


def _option(args: Sequence[str], name: str, default: str) -> str:
    """The last value of ``--name`` in a run.sh argument list (last one wins)."""
    value = default
    for flag, arg in zip(args, args[1:]):
        if flag == f"--{name}":
            value = arg
    return value


def collect_run(sweep: Sweep, run: SweepRun, expdir: PathLike) -> Dict:
    """One results row: batch, crop, hours seen, updates, valid stats, scores."""
    expdir = Path(expdir)
    ssl_dir, asr_dir = expdir / sweep.ssl_tag(run), expdir / sweep.asr_tag(run)
    epochs = read_epochs(ssl_dir)
    if not epochs:
        raise ValueError(f"{ssl_dir}: no finished epoch")
    with open(ssl_dir / "config.yaml", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    last = epochs[-1]
    row = dict(
        tag=run.tag,
        crop_seconds=config.get("collate_fn_conf", {}).get("crop_seconds"),
        update_seconds=last["train"].get("update_seconds"),
        batch_seconds=config.get("batch_seconds"),
        accum_grad=config.get("accum_grad"),
        train_hours=_option(run.args, "train_hours", "") or None,
        epochs=last["epoch"],
        updates=last["num_updates"],
        seen_hours=last["seen_hours"],
        valid_loss=last["valid"].get("loss"),
    )
    for key in ("contrastive_accuracy", "hubert_acc_m", "acc"):
        if key in last["valid"]:
            row[f"valid_{key}"] = last["valid"][key]
    row.update(_scores(asr_dir))
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
    """``results.csv`` and ``results.md`` with one row per run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
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


def plot_sweep(
    sweep: Sweep, rows: List[Dict], expdir: PathLike, out_dir: PathLike
) -> List[Path]:
    """The metric of every scored set against hours seen (one point per run), and
    every run's validation loss against hours seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    metric_keys = sorted(k for k in rows[0] if k.startswith(f"{sweep.metric}_"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in metric_keys:
        ax.plot([r["seen_hours"] for r in rows], [r[key] for r in rows], "o", label=key)
        for row in rows:
            ax.annotate(row["tag"], (row["seen_hours"], row[key]), fontsize=7)
    ax.set_xlabel("hours seen in pretraining")
    ax.set_ylabel(f"{sweep.metric.upper()} % after fine-tuning")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out_dir / f"{sweep.metric}_vs_seen_hours.png")
    fig.savefig(written[-1], dpi=80)
    plt.close(fig)
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


def report(sweep: Sweep, expdir: PathLike, out_dir: Optional[PathLike] = None) -> Dict:
    """Collects every run and writes the table and plots; returns rows and files."""
    out_dir = Path(out_dir or Path(expdir) / f"sweep_{sweep.name}")
    rows = [collect_run(sweep, run, expdir) for run in sweep.runs]
    files = write_table(rows, out_dir)
    plots = plot_sweep(sweep, rows, expdir, out_dir)
    logging.info(f"sweep {sweep.name}: {len(rows)} runs; table and plots in {out_dir}")
    return {"rows": rows, "files": files, "plots": plots}


def describe(sweep: Sweep) -> str:
    """The runs' command lines, one per line (``--dry_run``)."""
    return "\n".join(shlex.join(run_command(sweep, run)) for run in sweep.runs)
