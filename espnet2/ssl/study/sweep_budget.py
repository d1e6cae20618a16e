"""The compute of each run of a study sweep, and the audio it may see on a budget.

Every run's model is built from its config and ``ssl_args`` (parsed by
``SSLTask``'s own parser, so ``--encoder_conf num_blocks=4`` means what it means to
``espnet2.bin.ssl_train``) and measured by the planner
(``espnet2/ssl/study/planner.py``):
parameters, and FLOPs of one real training step (forward + backward, masking and
the loss included) per second of audio. A budget of ``C`` FLOPs then gives a run
whose step costs ``F`` FLOPs per audio second ``C / F / 3600`` hours of audio, so
runs of different objectives, sizes and data compare at equal compute (Liu et al.,
"Efficient Training of Self-Supervised Speech Foundation Models on a Compute
Budget", arXiv:2409.16295). The measurements are cached in
``<expdir>/sweep_<name>/plan/<tag>.json`` with the options they were made for.
"""

import hashlib
import json
import logging
import shlex
from pathlib import Path
from typing import Dict, Union

from espnet2.ssl.study.sweep import Sweep, SweepRun

PathLike = Union[str, Path]
PLAN_VERSION = 1  # bump when what is measured changes (invalidates the cache)


def run_config(run: SweepRun) -> Dict:
    """The training options of ``run``: its ``--ssl_config`` with its ``ssl_args``.

    Raises:
        ValueError: When the config is missing or the options do not parse.
    """
    from espnet2.tasks.ssl import SSLTask

    argv = [
        "--config",
        str(_config_file(run)),
        "--token_list",
        "none",
        *shlex.split(run.ssl_args),
    ]
    try:
        args = SSLTask.get_parser().parse_args(argv)
    except SystemExit as err:  # argparse has printed the reason
        raise ValueError(
            f"run {run.tag}: ssl_args do not parse: {run.ssl_args}"
        ) from err
    return vars(args)


def _config_file(run: SweepRun) -> Path:
    """The ``--ssl_config`` of ``run``, checked to exist."""
    config = run.ssl_config()
    if config is None or not Path(config).is_file():
        raise ValueError(
            f"run {run.tag}: its --ssl_config {config!r} is not a file (run the "
            "sweep from the recipe directory, egs2/<corpus>/ssl2)"
        )
    return Path(config)


def _stamp(run: SweepRun, crop_seconds: float) -> str:
    """What a cached measurement of ``run`` was made for (config text, options)."""
    text = _config_file(run).read_bytes()
    digest = hashlib.sha1(text).hexdigest()
    return (
        f"v{PLAN_VERSION} config={digest} ssl_args={run.ssl_args} crop={crop_seconds}"
    )


def measure_run(run: SweepRun, crop_seconds: float, seed: int = 0) -> Dict:
    """Parameters and FLOPs per audio second of the model ``run`` trains.

    Returns:
        ``parameters`` (total), ``encoder_parameters``, ``forward_flops_per_audio_s``
        and ``training_flops_per_audio_s`` (forward + backward), measured on one
        utterance of ``crop_seconds`` of random audio.
    """
    import torch

    from espnet2.ssl.study.planner import (
        build_model_from_config,
        measured_flops,
        parameter_counts,
    )

    config = run_config(run)
    torch.manual_seed(seed)
    model = build_model_from_config(config)
    params = parameter_counts(model)
    flops = measured_flops(model, config, crop_seconds, sample_rate=16000)
    return dict(
        parameters=params["total"],
        encoder_parameters=params["encoder"],
        forward_flops_per_audio_s=flops["forward_per_audio_s"],
        training_flops_per_audio_s=flops["training_per_audio_s"],
    )


def plan_runs(sweep: Sweep, expdir: PathLike, crop_seconds: float) -> Dict[str, Dict]:
    """``measure_run`` of every run, from the cache where its options are the same.

    Returns:
        Run tag -> its measurement.
    """
    plan_dir = sweep.out_dir(expdir) / "plan"
    plan_dir.mkdir(parents=True, exist_ok=True)
    plans = {}
    for run in sweep.runs:
        path, stamp = plan_dir / f"{run.tag}.json", _stamp(run, crop_seconds)
        if path.is_file():
            cached = json.loads(path.read_text())
            if cached.get("stamp") == stamp:
                plans[run.tag] = cached
                continue
        logging.info(f"planner: measuring run {run.tag} on a {crop_seconds:g} s crop")
        plans[run.tag] = dict(measure_run(run, crop_seconds), stamp=stamp)
        path.write_text(json.dumps(plans[run.tag], indent=1) + "\n")
    return plans


def budget_flops(sweep: Sweep, plans: Dict[str, Dict]) -> float:
    """The training FLOPs every run gets (None budget: not defined).

    Raises:
        ValueError: When the sweep has no budget, or only equal hours seen.
    """
    budget = sweep.budget
    if budget is None or (budget.training_pflop is None and budget.reference is None):
        raise ValueError(f"sweep {sweep.name} has no compute budget")
    if budget.training_pflop is not None:
        return budget.training_pflop * 1e15
    reference = plans[budget.reference]["training_flops_per_audio_s"]
    return reference * budget.seen_hours * 3600


def seen_hours(sweep: Sweep, plans: Dict[str, Dict]) -> Dict[str, float]:
    """Hours of audio each run may see under the sweep's budget.

    Equal hours for every run when the budget is ``seen_hours`` alone; else the
    budget's FLOPs divided by each run's training FLOPs per hour of audio, rounded
    to 4 significant digits (the value is in the run's options, hence in the
    recipe's ``.done`` stamps: it must not change between two reports).
    """
    budget = sweep.budget
    if budget.training_pflop is None and budget.reference is None:
        return {run.tag: budget.seen_hours for run in sweep.runs}
    total = budget_flops(sweep, plans)
    return {
        tag: float(f"{total / plan['training_flops_per_audio_s'] / 3600:.4g}")
        for tag, plan in plans.items()
    }
