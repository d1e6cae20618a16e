"""Training statistics per epoch, against optimizer updates and hours of audio seen.

Reads what an ``espnet2.bin.ssl_train`` experiment leaves: ESPnet's reporter state in
``checkpoint.pth`` (every train and valid statistic, averaged per epoch) and our
trainer's ``seen_audio.jsonl`` (exact hours seen and updates at the end of each
epoch), and draws each statistic against updates and against hours seen (the x axis
of the batch-size study, arXiv:2402.13723, where runs of different batch sizes
compare at equal seen data).
"""

import json
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Union

import torch

from espnet2.ssl.train.seen_audio import SEEN_AUDIO_LOG

PathLike = Union[str, Path]
# timing statistics, not training curves
SKIPPED = ("time", "iter_time", "forward_time", "backward_time", "optim_step_time",
           "train_time", "total_count", "loss_scale")  # fmt: skip


def read_epochs(exp_dir: PathLike) -> List[Dict]:
    """One record per finished epoch: ``epoch``, ``seen_hours``, ``num_updates``,
    ``train`` and ``valid`` (statistic -> value), and ``train_seconds`` /
    ``valid_seconds`` (the wall time ESPnet's reporter measured for the epoch's
    training and validation; 0 when it holds none).

    Raises:
        FileNotFoundError: When ``checkpoint.pth`` or ``seen_audio.jsonl`` is missing
            (not an SSL experiment of this toolkit, or not trained yet).
    """
    exp_dir = Path(exp_dir)
    for name in ("checkpoint.pth", SEEN_AUDIO_LOG):
        if not (exp_dir / name).is_file():
            raise FileNotFoundError(
                f"{exp_dir / name} is missing: train {exp_dir} with "
                "espnet2.bin.ssl_train first"
            )
    state = torch.load(
        exp_dir / "checkpoint.pth", map_location="cpu", weights_only=False
    )
    stats = state["reporter"]["stats"]
    seen = {}
    for line in (exp_dir / SEEN_AUDIO_LOG).read_text().splitlines():
        record = json.loads(line)
        seen[record["epoch"]] = record  # a re-run epoch (resume) replaces its line
    records = []
    for epoch in sorted(e for e in stats if e in seen):
        records.append(dict(
            epoch=epoch,
            seen_hours=seen[epoch]["seen_hours"],
            num_updates=seen[epoch]["num_updates"],
            train=_numbers(stats[epoch].get("train", {})),
            valid=_numbers(stats[epoch].get("valid", {})),
            train_seconds=_seconds(stats[epoch].get("train", {})),
            valid_seconds=_seconds(stats[epoch].get("valid", {})),
        ))  # fmt: skip
    return records


def _seconds(stats: Dict) -> float:
    """The ``time`` ESPnet's reporter kept for a phase of an epoch, in seconds."""
    elapsed = stats.get("time")
    return elapsed.total_seconds() if hasattr(elapsed, "total_seconds") else 0.0


def _numbers(stats: Dict) -> Dict[str, float]:
    return {
        k: float(v)
        for k, v in stats.items()
        if k not in SKIPPED and isinstance(v, (int, float))
    }


def plot_epochs(
    records: Sequence[Dict], out_dir: PathLike, title: str = ""
) -> List[Path]:
    """One PNG per statistic: its train/valid values against updates and hours seen.

    Returns:
        The written files, ``<out_dir>/<phase>_<statistic>.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for phase in ("train", "valid"):
        keys = sorted({k for r in records for k in r[phase]})
        for key in keys:
            points = [r for r in records if key in r[phase]]
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
            for ax, x_key, label in zip(
                axes, ("num_updates", "seen_hours"), ("updates", "hours seen")
            ):
                ax.plot([r[x_key] for r in points], [r[phase][key] for r in points],
                        marker="o")  # fmt: skip
                ax.set_xlabel(label)
                ax.grid(alpha=0.3)
            axes[0].set_ylabel(f"{phase} {key}")
            fig.suptitle(title, fontsize=9)
            fig.tight_layout()
            path = out_dir / f"{phase}_{key}.png"
            fig.savefig(path, dpi=80)
            plt.close(fig)
            written.append(path)
    logging.info(f"{len(written)} plots in {out_dir}")
    return written
