#!/usr/bin/env python3
"""Pack a pretrained SSL model with its model card, and lay out its hub folder.

Usage (from a recipe dir; stages 6 and 9 of ``egs2/TEMPLATE/ssl2/ssl.sh``)::

    # model zoo zip: config, checkpoint, README.md card, model_card.json and, for
    # HuBERT, the token list and k-means centroids the labels were made with
    python -m espnet2.bin.ssl_pack pack --exp_dir exp/ssl_hubert_tiny \\
        --model_file exp/ssl_hubert_tiny/valid.loss.best.pth \\
        --train_data dump/raw/train --valid_data dump/raw/dev \\
        --recipe mini_synth/ssl2 [--results exp/asr_ssl_hubert_tiny/RESULTS.md] \\
        --outpath exp/ssl_hubert_tiny/ssl_hubert_tiny.zip

    # Hugging Face hub folder of that zip (prints the upload command, runs nothing
    # on the network)
    python -m espnet2.bin.ssl_pack hub --zip exp/ssl_hubert_tiny/release/x.zip \\
        --out_dir exp/ssl_hubert_tiny/release/hf_hub --hf_repo user/x \\
        [--transformers_dir exp/ssl_hubert_tiny/release/transformers]

    # the release of stage 9, in one process: the zip with the fine-tuning results
    # in its card, the transformers export (skipped, with the reason, for a model
    # transformers has no class for), the hub folder and upload_command.txt
    python -m espnet2.bin.ssl_pack release --exp_dir exp/ssl_hubert_tiny \
        --model_file exp/ssl_hubert_tiny/valid.loss.best.pth \
        --results exp/asr_ssl_hubert_tiny/RESULTS.md --hf_repo user/x \
        --out_dir exp/ssl_hubert_tiny/release

The zip unpacks with ``espnet_model_zoo``'s
``ModelDownloader().download_and_unpack("x.zip")``, whose dict gives
``ssl_train_config`` and ``ssl_model_file`` for ``SSLTask.build_model_from_file``
(and ``token_list``, ``kmeans_centroids`` for HuBERT); see
:mod:`espnet2.ssl.release.packing`. A missing file is one message naming it and the
stage to
run, with exit status 1.
"""

import argparse
import json
import logging
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from espnet2.ssl.release.model_card import collect_facts, render_card
from espnet2.ssl.release.packing import (
    CARD_FILES,
    PackError,
    copy_targets,
    hub_files,
    pack_model,
    upload_command,
    write_hub_folder,
)
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)

TOOL = "ssl_pack"
# PackError, ModelCardError, ModelFileError are ValueErrors; the others come from
# reading the files and from the transformers export (a config that does not fit)
ERRORS = (ValueError, KeyError, RuntimeError, OSError, zipfile.BadZipFile)
ERRORS += (yaml.YAMLError, pickle.UnpicklingError)


def _add_pack_parser(subparsers: Any) -> None:
    """The ``pack`` subcommand: model card and zip."""
    pack = subparsers.add_parser(
        "pack",
        help="write the model card and the model zoo zip",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_pack_arguments(pack)
    pack.add_argument("--outpath", required=True, help="the zip to write")


def _add_pack_arguments(pack: argparse.ArgumentParser) -> None:
    """The options of the model card (``pack`` and ``release``)."""
    pack.add_argument("--exp_dir", required=True, help="the ssl_train output dir")
    pack.add_argument("--model_file", required=True, help="checkpoint to pack")
    pack.add_argument("--train_data", default=None, help="pretraining data dir")
    pack.add_argument("--valid_data", default=None, help="validation data dir")
    pack.add_argument(
        "--results",
        action="append",
        default=[],
        help="RESULTS.md of a fine-tuning (repeatable; missing files are skipped)",
    )
    pack.add_argument("--recipe", default=None, help="e.g. librispeech/ssl2")
    pack.add_argument(
        "--description",
        action="append",
        default=[],
        help="a line of the card's recipe notes (repeatable)",
    )
    pack.add_argument("--license", default="cc-by-4.0", help="hub license id")
    pack.add_argument("--language", default="en", help="ISO 639-1 code")


def _add_hub_parser(subparsers: Any) -> None:
    """The ``hub`` subcommand: the folder to upload to the Hugging Face hub."""
    hub = subparsers.add_parser(
        "hub",
        help="lay out the Hugging Face hub folder of a packed model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hub.add_argument("--zip", required=True, help="a zip written by 'pack'")
    hub.add_argument("--out_dir", required=True, help="the folder (replaced)")
    hub.add_argument("--hf_repo", required=True, help="<user or org>/<name>")
    hub.add_argument(
        "--transformers_dir",
        default=None,
        help="ssl_hf_convert --to_hf output to put beside the ESPnet files",
    )


def _add_release_parser(subparsers: Any) -> None:
    """The ``release`` subcommand: ``pack`` with the results, export, ``hub``."""
    release = subparsers.add_parser(
        "release",
        help="pack (with the fine-tuning results), export to transformers where "
        "possible and lay out the hub folder, in one process",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_pack_arguments(release)
    release.add_argument("--out_dir", required=True, help="the release folder")
    release.add_argument("--hf_repo", required=True, help="<user or org>/<name>")


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_pack`` with the ``pack`` and ``hub`` subcommands.
    """
    parser = argparse.ArgumentParser(
        description="Pack an SSL model for the model zoo and the Hugging Face hub."
    )
    add_log_level_argument(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_pack_parser(subparsers)
    _add_hub_parser(subparsers)
    _add_release_parser(subparsers)
    return parser


def run_pack(args: argparse.Namespace, outpath: Optional[str] = None) -> Path:
    """Write ``README.md`` and ``model_card.json`` into the exp, then the zip.

    Returns:
        The zip (``outpath``, else ``--outpath``).
    """
    exp = Path(args.exp_dir)
    if not Path(args.model_file).is_file():
        raise PackError(f"{args.model_file}: no such model file; train it first")
    with (exp / "config.yaml").open(encoding="utf-8") as f:
        extras = copy_targets(yaml.safe_load(f), exp)
    facts = collect_facts(
        exp,
        args.model_file,
        args.train_data,
        args.valid_data,
        args.results,
        args.recipe,
    )
    facts["notes"] = list(args.description)
    (exp / "model_card.json").write_text(json.dumps(facts, indent=2) + "\n")
    (exp / "README.md").write_text(render_card(facts, args.license, args.language))
    extras.setdefault(None, []).extend(exp / name for name in CARD_FILES)
    return pack_model(
        exp / "config.yaml", args.model_file, extras, outpath or args.outpath
    )


def run_hub(args: argparse.Namespace) -> None:
    """Write the hub folder and print the upload command."""
    _write_hub(args.zip, args.out_dir, args.hf_repo, args.transformers_dir)


def _write_hub(
    zip_path: str, out_dir: str, hf_repo: str, transformers_dir: Optional[str]
) -> None:
    """The hub folder of ``zip_path`` (its card as README.md) and the command."""
    with zipfile.ZipFile(zip_path) as archive:
        card = next(
            (n for n in archive.namelist() if Path(n).name == "README.md"), None
        )
        if card is None:
            raise PackError(
                f"{zip_path}: no README.md model card; pack it with "
                "python -m espnet2.bin.ssl_pack pack"
            )
        text = archive.read(card).decode("utf-8")
    out = write_hub_folder(zip_path, out_dir, text, transformers_dir)
    logging.info(f"hub folder {out}: {', '.join(hub_files(out))}")
    command = upload_command(out, hf_repo)
    (Path(out).parent / "upload_command.txt").write_text(command + "\n")
    print(f"Upload (needs the network and a write token):\n{command}")


def run_release(args: argparse.Namespace) -> None:
    """``pack`` into ``out_dir``, the transformers export if any, the hub folder."""
    from espnet2.ssl.release.hf.folder import espnet_to_hf_folder
    from espnet2.ssl.release.hf.wav2vec2 import NotExpressibleError

    out = Path(args.out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    zip_path = run_pack(args, str(out / f"{Path(args.exp_dir).name}.zip"))
    exported: Optional[str] = str(out / "transformers")
    try:
        espnet_to_hf_folder(
            str(Path(args.exp_dir) / "config.yaml"), args.model_file, exported
        )
    except NotExpressibleError as err:
        logging.warning(f"no transformers export: {err}")
        exported = None
    _write_hub(str(zip_path), str(out / "hf_hub"), args.hf_repo, exported)


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run one subcommand; exit with status 1 and one message on a bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        {"pack": run_pack, "hub": run_hub, "release": run_release}[args.command](args)
    except ERRORS as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
