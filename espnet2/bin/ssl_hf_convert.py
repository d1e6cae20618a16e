#!/usr/bin/env python3
"""Convert a wav2vec 2.0 or HuBERT SSL model between ESPnet and Hugging Face.

Usage::

    # ESPnet -> a save_pretrained folder: Wav2Vec2ForPreTraining (loss wav2vec2;
    # it also loads as Wav2Vec2Model) or HubertModel (loss hubert, plus our head
    # in espnet_ssl_head.safetensors), picked by the config's loss[0].name
    python -m espnet2.bin.ssl_hf_convert --to_hf \\
        --ssl_train_config exp/ssl_train/config.yaml \\
        --ssl_model_file exp/ssl_train/valid.loss.best.pth --out_dir DIR
    python -m espnet2.bin.ssl_hf_convert --to_hf --ssl_packed_model model.zip \\
        --out_dir DIR

    # Hugging Face folder (offline; config.json model_type wav2vec2 or hubert) ->
    # DIR2/config.yaml + DIR2/model.pth, loadable with
    # SSLTask.build_model_from_file(DIR2/config.yaml, DIR2/model.pth). A HuBERT
    # folder without our head (e.g. converted from fairseq) gets a new head:
    python -m espnet2.bin.ssl_hf_convert --from_hf DIR --out_dir DIR2 \\
        [--num_classes 500]

The weights are copied bitwise; see :mod:`espnet2.ssl.release.hf.keys` for the
mapping, :mod:`espnet2.ssl.release.hf.wav2vec2` and :mod:`espnet2.ssl.release.hf.hubert`
for the
options the other side cannot express. Exit status: 0 done; 3 the model cannot be
expressed (one error line naming the option and why: a recipe skips the export);
1 any other bad input (one error line); 2 bad command-line options.
"""

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml
from transformers import Wav2Vec2ForPreTraining

from espnet2.ssl.model_files import load_weights_only
from espnet2.ssl.release.conversion import run_conversion, write_espnet_folder
from espnet2.ssl.release.hf import hubert as hf_hubert
from espnet2.ssl.release.hf import wav2vec2 as hf_wav2vec2
from espnet2.ssl.release.hf.wav2vec2 import NotExpressibleError, build_espnet_model
from espnet2.ssl.targets.dumpers.espnet_models import unpack_model
from espnet2.utils.tool_logging import add_log_level_argument, start_tool_logging

TOOL = "ssl_hf_convert"
# our loss[0].name, and HF's config.json model_type -> the converter
CONVERTERS = {"wav2vec2": hf_wav2vec2, "hubert": hf_hubert}
HF_CLASSES = {"wav2vec2": "Wav2Vec2ForPreTraining", "hubert": "HubertModel"}


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_hf_convert``.
    """
    parser = argparse.ArgumentParser(
        description="Convert a wav2vec 2.0 or HuBERT SSL model between ESPnet "
        "(config.yaml + .pth) and transformers' Wav2Vec2ForPreTraining / "
        "HubertModel.",
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
    parser.add_argument(
        "--ssl_packed_model",
        type=str,
        default=None,
        help="Instead of the two above: an archive of espnet2.bin.pack ssl.",
    )
    parser.add_argument("--out_dir", type=str, required=True, help="Output folder.")
    parser.add_argument(
        "--num_classes",
        type=int,
        default=None,
        help="--from_hf of a HuBERT folder without ESPnet head: the new head's "
        "classes (the k of the k-means labels).",
    )
    parser.add_argument(
        "--final_dim",
        type=int,
        default=None,
        help="--from_hf, new HuBERT head: its projection size (None: the carried "
        f"value, else {hf_hubert.DEFAULT_FINAL_DIM}).",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="--from_hf: seed of a new HuBERT head."
    )
    add_log_level_argument(parser)
    return parser


def _read_config(config_file: str) -> Dict[str, Any]:
    """Our training config (``config.yaml``) as a dict."""
    with open(config_file, encoding="utf-8") as f:
        train_config = yaml.safe_load(f)
    if not isinstance(train_config, dict):
        raise ValueError(f"{config_file} is not a training config.yaml (a mapping)")
    return train_config


def _converter(train_config: Dict[str, Any]):
    """The converter module of the config's objective (``loss[0].name``)."""
    losses = train_config.get("loss") or [{}]
    name = losses[0].get("name") if isinstance(losses[0], dict) else None
    if name not in CONVERTERS:
        raise NotExpressibleError(
            f"loss[0].name={name!r} cannot be expressed by transformers: its "
            f"pretraining classes here are {HF_CLASSES}"
        )
    return CONVERTERS[name]


def export_to_hf(train_config: Dict[str, Any], model_file: str, out_dir: str) -> None:
    """Write the HF folder of our model (its class picked by the objective).

    Args:
        train_config: Our training config.
        model_file: Our model's state dict (``*.pth``, read as weights only).
        out_dir: Output folder (``config.json`` + ``model.safetensors``, and for
            HuBERT ``espnet_ssl_head.safetensors``).

    Raises:
        NotExpressibleError: For a model HF cannot express (decided from the
            config alone, before ``model_file`` is read).
    """
    converter = _converter(train_config)
    converter.hf_config_from_espnet(train_config)  # refuses what HF cannot express
    state = load_weights_only(model_file)
    converter.espnet_to_hf_state_dict(state)  # names the first unknown/missing key
    model = build_espnet_model(train_config)
    model.load_state_dict(state, strict=True)  # shapes must fit the config
    if converter is hf_hubert:
        hf_hubert.save_folder(*hf_hubert.to_hf(model, train_config), out_dir)
    else:
        hf_wav2vec2.to_hf(model, train_config).save_pretrained(out_dir)


def espnet_to_hf_folder(config_file: str, model_file: str, out_dir: str) -> None:
    """Write the HF folder of our model files.

    Args:
        config_file: Our training ``config.yaml``.
        model_file: Our model's state dict (``*.pth``, read as weights only).
        out_dir: Output folder.
    """
    export_to_hf(_read_config(config_file), model_file, out_dir)


def packed_to_hf_folder(packed_model: str, out_dir: str) -> None:
    """Write the HF folder of the model in an ``espnet2.bin.pack ssl`` archive.

    Args:
        packed_model: The archive (``ssl_train_config`` + ``ssl_model_file``).
        out_dir: Output folder.
    """
    with tempfile.TemporaryDirectory(prefix="ssl_hf_convert_") as workdir:
        config_file, model_file = unpack_model(
            packed_model, "ssl_train_config", "ssl_model_file", workdir
        )
        export_to_hf(_read_config(str(config_file)), str(model_file), out_dir)


def _model_type(hf_dir: str) -> str:
    """``model_type`` of an HF folder's ``config.json``."""
    config_file = Path(hf_dir) / "config.json"
    if not config_file.is_file():
        raise OSError(
            f"{config_file} does not exist. Fix: pass a folder written by "
            "save_pretrained (e.g. by ssl_hf_convert --to_hf)."
        )
    with config_file.open(encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    if model_type not in CONVERTERS:
        raise NotExpressibleError(
            f"Hugging Face model_type={model_type!r} ({config_file}) has no ESPnet "
            f"form here: the converted types are {sorted(CONVERTERS)}"
        )
    return model_type


def hf_folder_to_espnet(
    hf_dir: str,
    out_dir: str,
    num_classes: Optional[int] = None,
    final_dim: Optional[int] = None,
    seed: int = 0,
) -> None:
    """Write ``config.yaml`` and ``model.pth`` of an HF wav2vec 2.0 / HuBERT folder.

    Args:
        hf_dir: A ``save_pretrained`` folder, read offline.
        out_dir: Output folder, loadable with ``SSLTask.build_model_from_file``.
        num_classes: HuBERT without our head: the new head's classes.
        final_dim: HuBERT, new head: its projection size.
        seed: HuBERT, new head: the seed of its initialisation.
    """
    if _model_type(hf_dir) == "hubert":
        hf_model, head = hf_hubert.load_folder(hf_dir)
        model, train_config = hf_hubert.from_hf(
            hf_model, head, num_classes, final_dim, seed
        )
    else:
        hf_model = Wav2Vec2ForPreTraining.from_pretrained(hf_dir, local_files_only=True)
        model, train_config = hf_wav2vec2.from_hf(hf_model)
    write_espnet_folder(model, train_config, out_dir)


def _check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit 2) a combination of options that does not fit the direction."""
    files = bool(args.ssl_train_config or args.ssl_model_file)
    if args.to_hf and args.ssl_packed_model and files:
        parser.error("give --ssl_packed_model or --ssl_train_config/--ssl_model_file")
    if (
        args.to_hf
        and not args.ssl_packed_model
        and not (args.ssl_train_config and args.ssl_model_file)
    ):
        parser.error(
            "--to_hf needs --ssl_train_config and --ssl_model_file, or "
            "--ssl_packed_model"
        )


def _convert(args: argparse.Namespace) -> None:
    """The conversion the arguments ask for."""
    if args.to_hf and args.ssl_packed_model:
        packed_to_hf_folder(args.ssl_packed_model, args.out_dir)
    elif args.to_hf:
        espnet_to_hf_folder(args.ssl_train_config, args.ssl_model_file, args.out_dir)
    else:
        hf_folder_to_espnet(
            args.from_hf, args.out_dir, args.num_classes, args.final_dim, args.seed
        )


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run one conversion; exit with status 3 (not expressible) or 1 on bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    parser = get_parser()
    args = parser.parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    _check_inputs(parser, args)
    run_conversion(TOOL, lambda: _convert(args))


if __name__ == "__main__":
    main()
