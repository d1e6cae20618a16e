#!/usr/bin/env python3
"""Import a fairseq wav2vec 2.0 or HuBERT pretraining checkpoint, without fairseq.

Usage::

    # a fairseq .pt (Wav2Vec2Model or HubertModel) -> OUT/config.yaml + OUT/model.pth,
    # loadable with SSLTask.build_model_from_file(OUT/config.yaml, OUT/model.pth)
    python -m espnet2.bin.ssl_fairseq_import --checkpoint hubert_base_ls960.pt \\
        --out_dir exp/fairseq_hubert_base_ls960 [--num_classes 500]

The file is read without running any of its code (torch's weights-only unpickler;
``argparse.Namespace`` and a few plain-data classes of fairseq's training state are
allowed, any other class is refused before loading; see
:mod:`espnet2.ssl.release.fairseq.checkpoint`). The network is copied bitwise through
the
transformers key names (:mod:`espnet2.ssl.release.fairseq.convert`); the HuBERT head is
replaced by a new, seeded one (``--num_classes``, ``--final_dim``, ``--seed``; by
default fairseq's number of classes and ``final_dim``). Exit status: 0 done; 3 a
config field our model cannot express (one error line naming it and why); 1 any
other bad input (one error line naming the file and the fix); 2 bad command-line
options.
"""

import argparse
from typing import Optional, Sequence

from espnet2.ssl.release.conversion import run_conversion, write_espnet_folder
from espnet2.ssl.release.fairseq.convert import import_fairseq
from espnet2.utils.tool_logging import add_log_level_argument, start_tool_logging

TOOL = "ssl_fairseq_import"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_fairseq_import``.
    """
    parser = argparse.ArgumentParser(
        description="Import a fairseq wav2vec 2.0 / HuBERT pretraining checkpoint "
        "(.pt) as an ESPnet SSL model (config.yaml + model.pth), without fairseq.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", type=str, required=True, help="The fairseq .pt checkpoint."
    )
    parser.add_argument("--out_dir", type=str, required=True, help="Output folder.")
    parser.add_argument(
        "--num_classes",
        type=int,
        default=None,
        help="HuBERT: classes of the new head (None: fairseq's, the rows of "
        "label_embs_concat).",
    )
    parser.add_argument(
        "--final_dim",
        type=int,
        default=None,
        help="HuBERT: projection size of the new head (None: fairseq's final_dim).",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="HuBERT: seed of the new head."
    )
    add_log_level_argument(parser)
    return parser


def convert(args: argparse.Namespace) -> None:
    """Import ``args.checkpoint`` and write ``args.out_dir``.

    Args:
        args: The parsed command line.
    """
    model, train_config = import_fairseq(
        args.checkpoint, args.num_classes, args.final_dim, args.seed
    )
    write_espnet_folder(model, train_config, args.out_dir)


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run one import; exit with status 3 (not expressible) or 1 on bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    parser = get_parser()
    args = parser.parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    for option in ("num_classes", "final_dim"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option} must be >= 1, not {value}")
    run_conversion(TOOL, lambda: convert(args))


if __name__ == "__main__":
    main()
