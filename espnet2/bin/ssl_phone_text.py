#!/usr/bin/env python3
"""Phone transcripts from a phone CTM: the targets of the phone recognition probe.

Usage::

    python -m espnet2.bin.ssl_phone_text --ctm dump/raw/dev/phones.ctm \\
        --utt_list dump/raw/dev/wav.scp --output dump/raw/dev/text_phn \\
        [--merge_stress true] [--drop_pauses true]

Writes a Kaldi ``text`` file, ``<utt> <phone> <phone> ...``: the phones of every
utterance of ``--utt_list`` (every CTM utterance without it) in time order, one line
per utterance, sorted by id (C locale), pauses left out and stress marks merged by
default (:func:`espnet2.ssl.targets.alignments.phone_transcripts`). Recipe stage 7
(``--phone_probe true``) trains a linear CTC head on them over a frozen SSL model, as
SUPERB's phone recognition task (S.-w. Yang et al., "SUPERB: Speech processing
Universal PERformance Benchmark", Interspeech 2021, arXiv:2105.01051); stage 8 scores
it by PER (``asr_score``'s WER of these phone "words"). An utterance without phones, a
malformed or empty CTM stops with the file, the utterance and the fix, and exit
status 1.
"""

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

from espnet2.fileio.kaldi_data_dir import DataDirError, read_two_column_file
from espnet2.ssl.targets.alignments import phone_transcripts
from espnet2.ssl.targets.labels import atomic_path
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)
from espnet2.utils.types import str2bool

TOOL = "ssl_phone_text"


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_phone_text``.
    """
    parser = argparse.ArgumentParser(
        description="Write the phones of a CTM as a Kaldi text file (phone "
        "recognition, SUPERB PR, arXiv:2105.01051).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ctm", required=True, help="Phone CTM of the set.")
    parser.add_argument(
        "--output", required=True, help="The text file to write, e.g. text_phn."
    )
    parser.add_argument(
        "--utt_list",
        default=None,
        help="A Kaldi file whose ids are the set's utterances (e.g. wav.scp); "
        "every one needs phones. Default: every utterance of the CTM.",
    )
    parser.add_argument(
        "--merge_stress",
        type=str2bool,
        default=True,
        help='Merge espeak\'s stress marks ("\'eI" = "eI").',
    )
    parser.add_argument(
        "--drop_pauses",
        type=str2bool,
        default=True,
        help="Leave out espeak's pauses (phones starting with '_').",
    )
    add_log_level_argument(parser)
    return parser


def write_phone_text(
    ctm: str,
    output: str,
    utt_list: Optional[str] = None,
    merge_stress: bool = True,
    drop_pauses: bool = True,
) -> int:
    """Write ``output`` from ``ctm``, through a temporary file and a rename.

    Args:
        ctm: The phone CTM.
        output: The Kaldi text file to write.
        utt_list: A Kaldi file whose first column lists the set's utterances, or
            None for every utterance of the CTM.
        merge_stress: See :func:`espnet2.ssl.targets.alignments.normalize_phone`.
        drop_pauses: See :func:`espnet2.ssl.targets.alignments.phone_sequence`.

    Returns:
        The number of utterances written.

    Raises:
        DataDirError: On a malformed, empty or incomplete CTM, or a bad utt_list.
    """
    utt_ids = None
    if utt_list is not None:
        utt_ids = [line.id for line in read_two_column_file(utt_list)]
    if not Path(ctm).is_file():
        fix = (
            "provide the set's phones.ctm, or run the recipe with --phone_probe false."
        )
        raise DataDirError(ctm, "no such file", fix)
    transcripts = phone_transcripts(ctm, utt_ids, merge_stress, drop_pauses)
    with atomic_path(output) as tmp:
        tmp.write_text(
            "".join(f"{utt} {' '.join(phones)}\n" for utt, phones in transcripts),
            encoding="utf-8",
        )
    phone_set = {phone for _, phones in transcripts for phone in phones}
    logging.info(
        f"{output}: {len(transcripts)} utterances, "
        f"{sum(len(p) for _, p in transcripts)} phones of {len(phone_set)} kinds"
    )
    return len(transcripts)


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run the tool on ``cmd`` (default: ``sys.argv[1:]``).

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    try:
        write_phone_text(
            args.ctm, args.output, args.utt_list, args.merge_stress, args.drop_pauses
        )
    except (DataDirError, OSError) as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
