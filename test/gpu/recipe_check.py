"""GPU check, part (d): the mini_synth recipe's pretraining stage on a GPU.

``egs2/mini_synth/ssl2/run.sh`` runs in a scratch copy of the recipe (``--work``:
egs2/TEMPLATE and egs2/mini_synth copied with their links, tools/ and espnet2/ linked
to this checkout, as ``test/egs2/mini_synth/test_run_sh.py`` does), so data/, dump/
and exp/ never land in the checkout. Two steps, so that the CPU stages can run
while the GPU does other work:

* ``prepare``: stages 1-3 on the CPU (``--ngpu 0``): a 24-second synthesised corpus
  (train 0.4 min, labeled 0.15, dev 0.1, test 0.1), duration filtering, MFCC
  features and k-means targets with k = ``--n_clusters`` (8);
* ``train``: stage 4 with ``--ngpu`` (1): ESPnet's collect-stats, then
  ``espnet2.bin.ssl_train`` with run.sh's HuBERT tiny config for ``--max_epoch``
  epochs (about 2 updates each), with ``--use_amp true`` on a GPU (bf16 autocast in
  ESPnet's trainer; the tiny config has it off for CPUs). Checked: the run succeeds,
  ``config.yaml`` records the ``--ngpu`` asked for, every epoch's training loss in
  ``train.log`` is finite, and the last checkpoint's ``num_updates`` is at least one
  per epoch and its ``seen_audio.seen_samples`` is positive.

Run from the repository root:
``tools/venv/bin/python test/gpu/recipe_check.py prepare --work DIR`` then
``tools/venv/bin/python test/gpu/recipe_check.py train --work DIR --ngpu 1
--output DIR/recipe.json`` (exit status 1 names every failed check).
"""

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = (
    "--config conf/corpus.conf --train_minutes 0.4 --labeled_minutes 0.15"
    " --dev_minutes 0.1 --test_minutes 0.1"
)
EXP = "exp/ssl_hubert_tiny"  # run.sh's default config: conf/train_ssl_hubert_tiny.yaml
LOG_TAIL = 3000  # characters of a failed run's log shown
# ESPnet's epoch summary: "<N>epoch results: [train] ..., loss=<x>, ..."
EPOCH_LOSS = re.compile(r"(\d+)epoch results: \[train\].*?\bloss=([^,\s]+)")


def copy_recipe(work: Path) -> Path:
    """The recipe folder of a scratch copy under ``work`` (made if missing).

    Args:
        work: A folder outside the checkout (created).

    Returns:
        ``work/egs2/mini_synth/ssl2``, whose run.sh runs against this checkout.
    """
    recipe = work / "egs2" / "mini_synth" / "ssl2"
    if recipe.is_dir():
        return recipe
    for sub in ("TEMPLATE", "mini_synth"):
        shutil.copytree(
            REPO_ROOT / "egs2" / sub,
            work / "egs2" / sub,
            symlinks=True,
            ignore=shutil.ignore_patterns("data", "downloads", "dump", "exp"),
        )
    for link in ("tools", "espnet2"):
        (work / link).symlink_to(REPO_ROOT / link)
    return recipe


def run_recipe(recipe: Path, args: List[str], log: Path) -> float:
    """``./run.sh ARGS`` in ``recipe`` with its output in ``log``; returns seconds.

    Raises:
        SystemExit: The run failed (the log's tail is shown).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    with open(log, "w") as f:
        status = subprocess.run(
            ["./run.sh", *args], cwd=recipe, env=env, stdout=f, stderr=f
        ).returncode
    if status != 0:
        tail = log.read_text()[-LOG_TAIL:]
        raise SystemExit(f"run.sh {' '.join(args)} failed ({status}); {log}:\n{tail}")
    return time.perf_counter() - start


def prepare(options: argparse.Namespace) -> Dict:
    """Stages 1-3 on the CPU in the scratch copy; returns their wall time."""
    recipe = copy_recipe(Path(options.work).resolve())
    args = ["--stage", "1", "--stop_stage", "3", "--ngpu", "0", "--nj", str(options.nj)]
    args += ["--local_data_opts", CORPUS, "--n_clusters", str(options.n_clusters)]
    seconds = run_recipe(recipe, args, recipe / "gpu_check_stages_1_3.log")
    return {"stages_1_3_s": seconds, "recipe": str(recipe)}


def epoch_losses(train_log: Path) -> Dict[int, float]:
    """``{epoch: training loss}`` from ESPnet's epoch summaries in ``train_log``."""
    found = EPOCH_LOSS.findall(train_log.read_text())
    return {int(epoch): float(loss) for epoch, loss in found}


def checkpoint_counters(exp: Path) -> Dict[str, int]:
    """``num_updates`` and ``seen_samples`` of ``exp``'s last checkpoint."""
    state = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    model = state["model"]
    return {
        "num_updates": int(model["num_updates"]),
        "seen_samples": int(model["seen_audio.seen_samples"]),
    }


def train(options: argparse.Namespace) -> Dict:
    """Stage 4 with ``--ngpu`` in the prepared copy; the result with its checks."""
    recipe = copy_recipe(Path(options.work).resolve())
    use_amp = "true" if options.ngpu > 0 else "false"
    ssl_args = f"--max_epoch {options.max_epoch} --use_amp {use_amp}"
    args = ["--stage", "4", "--stop_stage", "4", "--ngpu", str(options.ngpu)]
    args += ["--local_data_opts", CORPUS, "--n_clusters", str(options.n_clusters)]
    args += ["--ssl_args", ssl_args]
    seconds = run_recipe(recipe, args, recipe / "gpu_check_stage_4.log")
    exp = recipe / EXP
    config = yaml.safe_load((exp / "config.yaml").read_text())
    result = {
        "stage_4_s": seconds,
        "ngpu": config["ngpu"],
        "use_amp": config["use_amp"],
        "ssl_args": ssl_args,
        "epoch_losses": epoch_losses(exp / "train.log"),
        **checkpoint_counters(exp),
    }
    result["failures"] = train_failures(result, options)
    return result


def train_failures(result: Dict, options: argparse.Namespace) -> List[str]:
    """The failed checks of ``train``'s result."""
    failures = []
    if result["ngpu"] != options.ngpu:
        failures.append(f"config.yaml has ngpu {result['ngpu']}, not {options.ngpu}")
    losses = result["epoch_losses"]
    if sorted(losses) != list(range(1, options.max_epoch + 1)):
        failures.append(f"train.log has training losses of epochs {sorted(losses)}")
    if not all(math.isfinite(x) for x in losses.values()):
        failures.append(f"a training loss is not finite: {losses}")
    if result["num_updates"] < options.max_epoch:
        failures.append(f"only {result['num_updates']} updates")
    if result["seen_samples"] <= 0:
        failures.append("seen_audio.seen_samples is 0")
    return failures


def get_parser() -> argparse.ArgumentParser:
    """The command-line options (``--help``)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("step", choices=["prepare", "train"])
    parser.add_argument("--work", required=True, help="scratch folder of the copy")
    parser.add_argument("--ngpu", type=int, default=1, help="train: GPUs")
    parser.add_argument("--nj", type=int, default=4, help="prepare: feature jobs")
    parser.add_argument("--n_clusters", type=int, default=8)
    parser.add_argument("--max_epoch", type=int, default=2, help="train: epochs")
    parser.add_argument("--output", default=None, help="JSON file of the result")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the step, prints and writes the JSON; returns 1 if a check failed."""
    options = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.info(f"arguments: {vars(options)}")
    step = prepare if options.step == "prepare" else train
    result = {"check": f"recipe_{options.step}", **step(options)}
    text = json.dumps(result, indent=1)
    if options.output:
        Path(options.output).parent.mkdir(parents=True, exist_ok=True)
        Path(options.output).write_text(text + "\n")
    print(text, flush=True)
    for failure in result.get("failures", []):
        logging.error(f"FAILED: {failure}")
    return 1 if result.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
