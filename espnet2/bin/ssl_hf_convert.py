#!/usr/bin/env python3
"""Convert a wav2vec 2.0 SSL model between ESPnet and Hugging Face transformers.

Usage::

    # ESPnet -> a folder for Wav2Vec2ForPreTraining.from_pretrained(DIR)
    python -m espnet2.bin.ssl_hf_convert --to_hf \\
        --ssl_train_config exp/ssl_train/config.yaml \\
        --ssl_model_file exp/ssl_train/valid.loss.best.pth --out_dir DIR

    # Hugging Face folder (offline) -> DIR2/config.yaml + DIR2/model.pth, loadable
    # with SSLTask.build_model_from_file(DIR2/config.yaml, DIR2/model.pth)
    python -m espnet2.bin.ssl_hf_convert --from_hf DIR --out_dir DIR2

The weights are copied bitwise; see :mod:`espnet2.ssl.hf_wav2vec2_keys` for the
mapping and :mod:`espnet2.ssl.hf_wav2vec2` for the options Hugging Face cannot
express (reported as one error line, exit status 1).
"""

import argparse
import pickle
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import yaml
from transformers import Wav2Vec2ForPreTraining

from espnet2.ssl.hf_wav2vec2 import (
    build_espnet_model,
    complete_train_config,
    from_hf,
    to_hf,
)
from espnet2.ssl.hf_wav2vec2_keys import espnet_to_hf_state_dict
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

TOOL = "ssl_hf_convert"
CONVERSION_ERRORS = (
    KeyError,
    ValueError,
    RuntimeError,  # e.g. load_state_dict: the model file does not fit the config
    OSError,
    pickle.UnpicklingError,  # not a state dict of tensors
    yaml.YAMLError,
)


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_hf_convert``.
    """
    parser = argparse.ArgumentParser(
        description="Convert a wav2vec 2.0 SSL model between ESPnet "
        "(config.yaml + .pth) and transformers' Wav2Vec2ForPreTraining.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--to_hf", action="store_true", help="Convert an ESPnet model to HF."
    )
    direction.add_argument(
        "--from_hf", type=str, default=None, help="HF model folder to convert."
    )
    parser.add_argument(
        "--ssl_train_config", type=str, default=None, help="ESPnet config.yaml."
    )
    parser.add_argument(
        "--ssl_model_file", type=str, default=None, help="ESPnet model .pth."
    )
    parser.add_argument("--out_dir", type=str, required=True, help="Output folder.")
    add_log_level_argument(parser)
    return parser


def _load_state(model_file: str) -> Dict[str, torch.Tensor]:
    """The state dict in an ESPnet model file (tensors only, on the CPU)."""
    return torch.load(model_file, map_location="cpu", weights_only=True)


def espnet_to_hf_folder(config_file: str, model_file: str, out_dir: str) -> None:
    """Write ``Wav2Vec2ForPreTraining.save_pretrained(out_dir)`` of our model.

    Args:
        config_file: Our training ``config.yaml``.
        model_file: Our model's state dict (``*.pth``).
        out_dir: Output folder (``config.json`` + ``model.safetensors``).
    """
    with open(config_file, encoding="utf-8") as f:
        train_config = yaml.safe_load(f)
    state = _load_state(model_file)
    espnet_to_hf_state_dict(state)  # names the first unknown or missing key
    model = build_espnet_model(train_config)
    model.load_state_dict(state, strict=True)  # shapes must fit the config
    to_hf(model, train_config).save_pretrained(out_dir)


def hf_folder_to_espnet(hf_dir: str, out_dir: str) -> None:
    """Write ``config.yaml`` and ``model.pth`` of an HF pretraining model.

    Args:
        hf_dir: A ``save_pretrained`` folder, read offline.
        out_dir: Output folder, loadable with ``SSLTask.build_model_from_file``.
    """
    hf_model = Wav2Vec2ForPreTraining.from_pretrained(hf_dir, local_files_only=True)
    model, train_config = from_hf(hf_model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "config.yaml").open("w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(complete_train_config(train_config), f, indent=4)
    torch.save(model.state_dict(), out / "model.pth")


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run one conversion; exit with status 1 and one message on a bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    parser = get_parser()
    args = parser.parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    if args.to_hf and not (args.ssl_train_config and args.ssl_model_file):
        parser.error("--to_hf needs --ssl_train_config and --ssl_model_file")
    try:
        if args.to_hf:
            espnet_to_hf_folder(
                args.ssl_train_config, args.ssl_model_file, args.out_dir
            )
        else:
            hf_folder_to_espnet(args.from_hf, args.out_dir)
    except CONVERSION_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        exit_with_error(TOOL, f"{type(err).__name__}: {message}")


if __name__ == "__main__":
    main()
