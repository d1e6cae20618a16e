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

The conversions live in :mod:`espnet2.ssl.release.hf.folder`. The weights are copied
bitwise; see :mod:`espnet2.ssl.release.hf.keys` for the mapping, and
:mod:`espnet2.ssl.release.hf.wav2vec2` and :mod:`espnet2.ssl.release.hf.hubert` for
the options the other side cannot express. Exit status: 0 done; 3 the model cannot be
expressed (one error line naming the option and why: a recipe skips the export);
1 any other bad input (one error line); 2 bad command-line options.
"""

import argparse
from typing import Optional, Sequence

from espnet2.ssl.release.conversion import run_conversion
from espnet2.ssl.release.hf import hubert as hf_hubert
from espnet2.ssl.release.hf.folder import (
    espnet_to_hf_folder,
    hf_folder_to_espnet,
    packed_to_hf_folder,
)
from espnet2.utils.tool_logging import add_log_level_argument, start_tool_logging

TOOL = "ssl_hf_convert"


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
