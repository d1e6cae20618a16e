#!/usr/bin/env python3
"""WER and CER of decoded test sets, and their Markdown table, without sclite.

Usage::

    # one test set: result.json, wer_alignment.txt, cer_alignment.txt
    python -m espnet2.bin.asr_score score --ref data/test_clean/text \\
        --hyp exp/asr/decode_test_clean/text --out_dir exp/asr/decode_test_clean/score

    # RESULTS.md from <exp>/decode_<set>/score/result.json of every system and set
    python -m espnet2.bin.asr_score report --system hubert=exp/asr_hubert \\
        --system wav2vec2=exp/asr_wav2vec2 --sets test_clean test_other \\
        --output RESULTS.md --description "fine-tuned on 10 h"

    # phone transcripts (e.g. the recipe's phone probe): the WER of the phone
    # "words" is the PER; --unit phone writes it as PER and leaves out the CER
    python -m espnet2.bin.asr_score report --unit phone \\
        --system probe=exp/asr_hubert_phones --sets test_clean --output RESULTS.md

The counts are sclite's as ESPnet's ``asr.sh`` reports them (see
:mod:`espnet2.utils.error_rate`). Every file is written to a temporary name and
renamed, so an interrupted run never leaves a half-written result. A bad input is one
message and exit status 1.
"""

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from espnet2.ssl.targets.labels import atomic_path
from espnet2.utils.error_rate import (
    ErrorCounts,
    ScoredSet,
    ScoringInputError,
    check_same_utterances,
    format_alignment,
    percent,
    read_transcripts,
    score_transcripts,
)
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)

TOOL = "asr_score"
UNITS = {"wer": "word", "cer": "char"}  # result.json key -> tokenizer
RESULT_JSON = "result.json"
COLUMNS = ("Corr", "Sub", "Del", "Ins", "Err", "S.Err")
# report --unit: the tables of RESULTS.md, as (result.json key, rate name, heading);
# the token column is "Wrd" in both word tables (as ESPnet's RESULTS.md), else "Phn"
REPORT_TABLES = {
    "word": (("wer", "WER", "WER (words)"), ("cer", "CER", "CER (characters)")),
    "phone": (("wer", "PER", "PER (phones; the WER of the phone transcripts)"),),
}
TOKEN_COLUMN = {"word": "Wrd", "phone": "Phn"}


def _add_score_parser(subparsers: Any) -> None:
    """The ``score`` subcommand: one hypothesis file against its reference."""
    score = subparsers.add_parser(
        "score",
        help="WER and CER of one hypothesis text file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    score.add_argument("--ref", required=True, help="reference 'utt_id text' file")
    score.add_argument("--hyp", required=True, help="hypothesis 'utt_id text' file")
    score.add_argument(
        "--out_dir",
        required=True,
        help="writes result.json, wer_alignment.txt, cer_alignment.txt",
    )


def _system(value: str) -> Tuple[str, str]:
    """``NAME=EXPDIR`` -> (name, expdir)."""
    name, sep, expdir = value.partition("=")
    if not (sep and name and expdir):
        raise argparse.ArgumentTypeError(f"expected NAME=EXPDIR, got '{value}'")
    return name, expdir


def _add_report_parser(subparsers: Any) -> None:
    """The ``report`` subcommand: Markdown tables from scored test sets."""
    report = subparsers.add_parser(
        "report",
        help="RESULTS.md from <expdir>/decode_<set>/score/result.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report.add_argument(
        "--system",
        type=_system,
        action="append",
        required=True,
        metavar="NAME=EXPDIR",
        help="a system's name and experiment dir (repeat for several)",
    )
    report.add_argument("--sets", nargs="+", required=True, help="test set names")
    report.add_argument("--output", required=True, help="the Markdown file to write")
    report.add_argument("--title", default="RESULTS", help="the first heading")
    report.add_argument(
        "--unit",
        choices=tuple(REPORT_TABLES),
        default="word",
        help="what the transcripts' words are: word (WER and CER tables) or phone "
        "(phone transcripts: their WER is reported as PER, without a CER)",
    )
    report.add_argument(
        "--description",
        nargs="+",
        action="extend",
        default=[],
        help="lines printed as bullet points under the title",
    )


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``asr_score`` with subcommands ``score`` and ``report``.
    """
    parser = argparse.ArgumentParser(
        description="WER/CER of decoded text (sclite-style counts) and RESULTS.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_log_level_argument(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_score_parser(subparsers)
    _add_report_parser(subparsers)
    return parser


# ---------------------------------------------------------------- score
def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _alignment_text(scored: ScoredSet) -> str:
    """Every utterance's alignment, separated by blank lines."""
    return "\n".join(format_alignment(utt, al) for utt, al in scored.utterances)


def _summary(scores: Dict[str, ScoredSet]) -> str:
    """``WER x.xx % (S/D/I s/d/i of N words) CER y.yy % (...)``."""
    parts = []
    for key, noun in (("wer", "words"), ("cer", "characters")):
        t = scores[key].totals
        parts.append(
            f"{key.upper()} {t.error_rate:.2f} % (S/D/I {t.substitutions}/"
            f"{t.deletions}/{t.insertions} of {t.num_ref_tokens} {noun})"
        )
    return " ".join(parts)


def run_score(args: argparse.Namespace) -> None:
    """Score ``--hyp`` against ``--ref``; write the results and print a summary."""
    ref, hyp = read_transcripts(args.ref), read_transcripts(args.hyp)
    check_same_utterances(ref, hyp, args.ref, args.hyp)
    scores = {key: score_transcripts(ref, hyp, unit) for key, unit in UNITS.items()}
    out_dir = Path(args.out_dir)
    for key, scored in scores.items():
        _write_text(out_dir / f"{key}_alignment.txt", _alignment_text(scored))
    result = {"ref": str(args.ref), "hyp": str(args.hyp)}
    result.update({key: scored.totals.to_dict() for key, scored in scores.items()})
    # last: a result.json means the alignments beside it are complete too
    _write_text(out_dir / RESULT_JSON, json.dumps(result, indent=2) + "\n")
    summary = _summary(scores)
    logging.info(f"{args.hyp}: {summary}; written to {out_dir}")
    print(summary)


# ---------------------------------------------------------------- report
def read_result(path: Path) -> Dict[str, ErrorCounts]:
    """The WER and CER counts of one ``result.json``.

    Args:
        path: A ``result.json`` written by ``score``.

    Returns:
        ``{"wer": ErrorCounts, "cer": ErrorCounts}`` (rates recomputed from counts).

    Raises:
        ScoringInputError: The file is missing or lacks a count.
    """
    if not path.is_file():
        raise ScoringInputError(
            f"{path}: no such file. Fix: run stage 8 (decoding and scoring) for this "
            f"system and set, or `python -m espnet2.bin.asr_score score ... "
            f"--out_dir {path.parent}`."
        )
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        return {key: ErrorCounts.from_dict(result[key]) for key in UNITS}
    except (ValueError, KeyError, TypeError) as err:
        raise ScoringInputError(
            f"{path}: not a result.json of asr_score ({type(err).__name__}: {err}). "
            "Fix: score the set again (run stage 8)."
        ) from None


def _percent(value: float) -> str:
    """One decimal, as ESPnet's RESULTS.md; ``inf`` for an undefined rate."""
    return f"{value:.1f}" if math.isfinite(value) else "inf"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _counts_row(system: str, test_set: str, counts: ErrorCounts) -> str:
    """``| system | set | Snt | Wrd | Corr | Sub | Del | Ins | Err | S.Err |``."""
    c = counts
    tokens = (c.correct, c.substitutions, c.deletions, c.insertions, c.errors)
    cells = [_percent(percent(n, c.num_ref_tokens)) for n in tokens]
    cells.append(_percent(c.sentence_error_rate))
    return _row([system, test_set, str(c.num_utts), str(c.num_ref_tokens), *cells])


def _counts_table(
    results: Dict[Tuple[str, str], Dict[str, ErrorCounts]],
    key: str,
    heading: str,
    token_column: str = "Wrd",
) -> List[str]:
    """The table of ``result.json``'s ``key`` (wer, cer), one row per (system, set)."""
    lines = [f"## {heading}", ""]
    lines.append(_row(["system", "set", "Snt", token_column, *COLUMNS]))
    lines.append(_row(["---"] * (4 + len(COLUMNS))))
    for (system, test_set), counts in results.items():
        lines.append(_counts_row(system, test_set, counts[key]))
    return lines + [""]


def _comparison_table(
    results: Dict[Tuple[str, str], Dict[str, ErrorCounts]],
    systems: Sequence[str],
    sets: Sequence[str],
    unit: str = "word",
) -> List[str]:
    """``| set | <system> WER | ... | <system> CER | ... |``, one row per set."""
    tables = REPORT_TABLES[unit]
    header = ["set"] + [f"{s} {name}" for _, name, _ in tables for s in systems]
    lines = ["## Comparison (error rates in %)", "", _row(header)]
    lines.append(_row(["---"] * len(header)))
    for test_set in sets:
        rates = [
            _percent(results[(system, test_set)][key].error_rate)
            for key, _, _ in tables
            for system in systems
        ]
        lines.append(_row([test_set, *rates]))
    return lines + [""]


def results_markdown(
    results: Dict[Tuple[str, str], Dict[str, ErrorCounts]],
    systems: Sequence[str],
    sets: Sequence[str],
    title: str,
    description: Sequence[str] = (),
    unit: str = "word",
) -> str:
    """The whole RESULTS.md: title, bullets, WER table, CER table, comparison.

    Args:
        results: (system, set) -> ``{"wer": counts, "cer": counts}``, in row order.
        systems: System names, in column order.
        sets: Test set names, in row order.
        title: The first heading.
        description: Lines printed as bullet points under the title.
        unit: ``"word"``, or ``"phone"`` for phone transcripts: one PER table (the
            WER counts of the phones) instead of the WER and CER tables.

    Returns:
        Markdown text ending in one newline.
    """
    lines = [f"# {title}", ""]
    if description:
        lines += [f"- {line}" for line in description] + [""]
    for key, _, heading in REPORT_TABLES[unit]:
        lines += _counts_table(results, key, heading, TOKEN_COLUMN[unit])
    lines += _comparison_table(results, systems, sets, unit)
    return "\n".join(lines).rstrip("\n") + "\n"


def run_report(args: argparse.Namespace) -> None:
    """Read every system's and set's result.json and write the Markdown file."""
    names = [name for name, _ in args.system]
    for option, values in (("--system names", names), ("--sets", args.sets)):
        if len(set(values)) != len(values):
            raise ScoringInputError(
                f"{option} repeat: {values}. Fix: give each one once."
            )
    results = {
        (name, test_set): read_result(
            Path(expdir) / f"decode_{test_set}" / "score" / RESULT_JSON
        )
        for name, expdir in args.system
        for test_set in args.sets
    }
    markdown = results_markdown(
        results, names, args.sets, args.title, args.description, args.unit
    )
    _write_text(Path(args.output), markdown)
    logging.info(f"{len(results)} (system, set) results written to {args.output}")


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run one subcommand; exit with status 1 and one message on a bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    run = {"score": run_score, "report": run_report}[args.command]
    try:
        run(args)
    except (ScoringInputError, OSError) as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
