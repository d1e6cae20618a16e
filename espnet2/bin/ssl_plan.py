#!/usr/bin/env python3
"""Plan an SSL pretraining run: parameters, FLOPs, batch, updates, GPU-hours, LR.

Builds the model of a training config (``--encoder_conf key=value`` etc. override
architecture numbers), measures it on a real training step, and prints a markdown
table; ``--output`` also writes the numbers as JSON. Example (wav2vec 2.0 BASE, 1.6 h
per update on 8 GPUs of 90 s each, 400k updates, 100 TFLOP/s sustained per GPU):

    python -m espnet2.bin.ssl_plan \\
        --config egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_base.yaml \\
        --batch_seconds 5760 --num_devices 8 --max_device_batch_seconds 90 \\
        --updates 400000 --device_tflops 100 --lr_scaling sqrt

With ``--device_memory_gb 80`` instead of ``--max_device_batch_seconds``, the most
audio one GPU holds is estimated from the measured activation memory.

See ``espnet2/ssl/study/planner.py`` for what is measured and how.
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from espnet2.ssl.study.planner import markdown, plan
from espnet2.ssl.train.batch_seconds import LR_SCALING_RULES, REFERENCE_BATCH_SECONDS
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import float_or_none, int_or_none

OVERRIDABLE = ("frontend_conf", "preencoder_conf", "encoder_conf", "model_conf")


def get_parser() -> argparse.ArgumentParser:
    """The command line of ``ssl_plan`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="SSL training config (YAML)")
    for name in OVERRIDABLE:
        parser.add_argument(
            f"--{name}", action=NestedDictAction, default={},
            help=f"Overrides of the config's {name} (key=value)",
        )  # fmt: skip
    parser.add_argument(
        "--crop_seconds",
        type=float,
        default=15.6,
        help="Utterance length the FLOPs are measured on (s)",
    )
    parser.add_argument(
        "--fixed_crops",
        action="store_true",
        help="Batches of crop_seconds crops (collate crop_seconds)",
    )
    parser.add_argument(
        "--batch_seconds",
        type=float,
        required=True,
        help="Audio per optimizer update (s, all devices)",
    )
    parser.add_argument("--num_devices", type=int, default=1)
    parser.add_argument(
        "--max_device_batch_seconds",
        type=float_or_none,
        default=None,
        help="Most audio one device holds (s)",
    )
    parser.add_argument(
        "--device_memory_gb",
        type=float_or_none,
        default=None,
        help="Device memory; without --max_device_batch_seconds, the most audio "
        "per device is estimated from it",
    )
    parser.add_argument("--seen_hours", type=float_or_none, default=None)
    parser.add_argument("--updates", type=int_or_none, default=None)
    parser.add_argument("--gpu_hours", type=float_or_none, default=None)
    parser.add_argument(
        "--device_tflops",
        type=float,
        default=100.0,
        help="Sustained training throughput of one device",
    )
    parser.add_argument("--lr_scaling", default="none", choices=LR_SCALING_RULES)
    parser.add_argument(
        "--lr_reference_batch_seconds", type=float, default=REFERENCE_BATCH_SECONDS
    )
    parser.add_argument("--seed", type=int, default=0, help="model and audio")
    parser.add_argument("--output", type=Path, default=None, help="JSON file")
    return parser  # fmt: skip


def load_config(args: argparse.Namespace) -> Dict:
    """The YAML config with the command line's overrides merged in."""
    if not Path(args.config).is_file():
        raise SystemExit(f"--config {args.config}: no such file")
    with open(args.config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for name in OVERRIDABLE:
        config[name] = {**config.get(name, {}), **getattr(args, name)}
    return config


def main(cmd: Optional[List[str]] = None) -> Dict:
    """Plans a run, prints the markdown table and writes ``--output`` if given.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.

    Returns:
        The plan of ``espnet2.ssl.study.planner.plan`` with the arguments under
        ``"arguments"`` (what ``--output`` holds as JSON).

    Raises:
        SystemExit: Not exactly one of ``--seen_hours``, ``--updates``,
            ``--gpu_hours``, a missing config, or a plan that cannot be made.
    """
    args = get_parser().parse_args(cmd)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s"
    )
    logging.info(f"arguments: {vars(args)}")
    if sum(x is not None for x in (args.seen_hours, args.updates, args.gpu_hours)) != 1:
        raise SystemExit("give exactly one of --seen_hours, --updates, --gpu_hours")
    try:
        result = plan(load_config(args), args)
    except ValueError as err:
        raise SystemExit(f"ssl_plan: error: {err}")
    result["arguments"] = {k: str(v) if isinstance(v, Path) else v
                           for k, v in vars(args).items()}  # fmt: skip
    print(markdown(result), flush=True)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1))
        logging.info(f"written {args.output}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
