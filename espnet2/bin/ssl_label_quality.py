#!/usr/bin/env python3
"""Score cluster labels (e.g. HuBERT k-means targets) against reference phones.

Usage::

    python -m espnet2.bin.ssl_label_quality --ctm data/train/phones.ctm \\
        --labels mfcc_km100=dump/km/train/labels [NAME=PATH ...] \\
        [--utt2dur data/train/utt2dur | --utt2num_samples FILE] \\
        [--frame_shift 0.02] [--frame_length 0.025] [--common_only false] \\
        [--output quality.md | quality.json]

Prints a markdown table with one row per labels file: phone purity, cluster purity,
PNMI (HuBERT's definitions, see :mod:`espnet2.ssl.targets.quality`), clusters used,
phones and frames. ``--output`` also writes the table (``.md``, or any other suffix)
or the numbers as JSON (``.json``). Without ``--utt2dur`` / ``--utt2num_samples``, the
``utt2dur`` beside the CTM is used when it exists, so label counts are checked
against the audio. A bad input (malformed line, unknown utterance, label count that
does not match the audio) is reported as one message naming the file, the utterance
and the fix, with exit status 1.
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet2.fileio.kaldi_data_dir import DataDirError
from espnet2.ssl.targets.alignments import SILENCE
from espnet2.ssl.targets.quality import ClusterQuality, label_quality
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)
from espnet2.utils.types import str2bool

TOOL = "ssl_label_quality"
COLUMNS = (
    "labels",
    "phone purity",
    "cluster purity",
    "PNMI",
    "clusters used",
    "phones",
    "frames",
)


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_label_quality``.
    """
    parser = argparse.ArgumentParser(
        description="Phone purity, cluster purity and PNMI of frame labels against "
        "a phone CTM (HuBERT, arXiv:2106.07447).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ctm", required=True, help="Reference phone CTM.")
    parser.add_argument(
        "--labels",
        required=True,
        nargs="+",
        help="Labels files as NAME=PATH (a bare PATH is named by itself); lines "
        "'<utt> <l_0> <l_1> ...', one integer per frame.",
    )
    lengths = parser.add_mutually_exclusive_group()
    lengths.add_argument(
        "--utt2dur",
        default=None,
        help="Utterance durations in seconds (default: utt2dur beside the CTM, if "
        "any; without lengths, label counts are only checked against the CTM).",
    )
    lengths.add_argument(
        "--utt2num_samples", default=None, help="Utterance lengths in samples."
    )
    parser.add_argument("--sample_rate", type=int, default=16000, help="In Hz.")
    parser.add_argument(
        "--frame_shift", type=float, default=0.02, help="Label hop in seconds."
    )
    parser.add_argument(
        "--frame_length",
        type=float,
        default=0.025,
        help="Frame window in seconds (the centre decides a frame's phone).",
    )
    parser.add_argument(
        "--max_frame_diff",
        type=int,
        default=1,
        help="Allowed difference between label and audio frame counts.",
    )
    parser.add_argument(
        "--common_only",
        type=str2bool,
        default=False,
        help="Score only utterances in both the labels and the CTM, instead of "
        "failing when they differ.",
    )
    parser.add_argument(
        "--merge_stress",
        type=str2bool,
        default=True,
        help="Drop espeak stress marks (' and ,) from phones.",
    )
    parser.add_argument(
        "--pauses_as_silence",
        type=str2bool,
        default=True,
        help="Map espeak pauses (phones starting with _) to the silence symbol.",
    )
    parser.add_argument(
        "--silence", default=SILENCE, help="Phone of frames no segment covers."
    )
    parser.add_argument(
        "--output", default=None, help="Also write the table (.md) or JSON (.json)."
    )
    add_log_level_argument(parser)
    return parser


def parse_named_paths(specs: Sequence[str]) -> List[Tuple[str, str]]:
    """Split ``NAME=PATH`` arguments; a bare ``PATH`` is named by itself.

    Args:
        specs: The ``--labels`` arguments.

    Returns:
        ``(name, path)`` pairs in argument order.

    Raises:
        ValueError: On an empty name or path, or a repeated name.
    """
    pairs: List[Tuple[str, str]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = spec, spec
        if not name or not path:
            raise ValueError(f"--labels {spec!r}: write NAME=PATH, e.g. km100=labels")
        if name in (seen for seen, _ in pairs):
            raise ValueError(f"--labels: the name {name!r} is given twice")
        pairs.append((name, path))
    return pairs


def markdown_table(results: Dict[str, ClusterQuality]) -> str:
    """Format the scores as a markdown table, one row per labels file.

    Args:
        results: ``{name: scores}`` in the order to print.

    Returns:
        The table, lines joined by newlines, with a final newline.
    """
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|",
    ]
    for name, q in results.items():
        cells = [name] + [f"{x:.4f}" for x in (q.phone_purity, q.cluster_purity)]
        cells += [f"{q.pnmi:.4f}", str(q.num_clusters_used), str(q.num_phones)]
        lines.append("| " + " | ".join(cells + [str(q.num_frames)]) + " |")
    return "\n".join(lines) + "\n"


def _default_utt2dur(args: argparse.Namespace) -> Optional[str]:
    """Return ``--utt2dur``, or the utt2dur beside the CTM when no length is given."""
    if args.utt2dur is not None or args.utt2num_samples is not None:
        return args.utt2dur
    candidate = Path(args.ctm).parent / "utt2dur"
    if candidate.is_file():
        logging.info("checking label counts against %s", candidate)
        return str(candidate)
    logging.info("no utt2dur beside %s: label counts define the frames", args.ctm)
    return None


def score_all(args: argparse.Namespace) -> Dict[str, ClusterQuality]:
    """Score every ``--labels`` file against ``--ctm``.

    Args:
        args: The parsed command line.

    Returns:
        ``{name: scores}`` in argument order.
    """
    utt2dur = _default_utt2dur(args)
    results = {}
    for name, path in parse_named_paths(args.labels):
        results[name] = label_quality(
            path,
            args.ctm,
            utt2dur=utt2dur,
            utt2num_samples=args.utt2num_samples,
            sample_rate=args.sample_rate,
            frame_shift_s=args.frame_shift,
            frame_length_s=args.frame_length,
            max_frame_diff=args.max_frame_diff,
            common_only=args.common_only,
            silence=args.silence,
            merge_stress=args.merge_stress,
            pauses_as_silence=args.pauses_as_silence,
        )
        logging.info("%s (%s): %s", name, path, results[name])
    return results


def write_output(
    path: str, ctm: str, labels: Sequence[str], results: Dict[str, ClusterQuality]
) -> None:
    """Write the table (markdown) or, for a ``.json`` path, the numbers as JSON."""
    if not path.endswith(".json"):
        Path(path).write_text(markdown_table(results), encoding="utf-8")
        return
    paths = dict(parse_named_paths(labels))
    rows = [
        {"name": name, "labels": paths[name], **q.as_dict()}
        for name, q in results.items()
    ]
    text = json.dumps({"ctm": ctm, "results": rows}, indent=2)
    Path(path).write_text(text + "\n", encoding="utf-8")


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Score the labels files, print the table and optionally write it.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        results = score_all(args)
    except (DataDirError, ValueError) as err:
        exit_with_error(TOOL, str(err))
    except OSError as err:
        exit_with_error(TOOL, f"cannot read {err.filename}: {err.strerror}")
    print(markdown_table(results), end="")
    if args.output is not None:
        write_output(args.output, args.ctm, args.labels, results)
        logging.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
