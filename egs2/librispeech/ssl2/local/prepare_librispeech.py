#!/usr/bin/env python3
"""Write Kaldi-style data dirs from folders laid out as LibriSpeech (or Libri-light).

Usage::

    python local/prepare_librispeech.py --out_dir data [--nj 8] [--sample_rate 16000] \\
        --set train_960 DL/LibriSpeech/train-clean-100 DL/LibriSpeech/train-clean-360 \\
            DL/LibriSpeech/train-other-500 \\
        --set dev_clean DL/LibriSpeech/dev-clean ...

Each ``--set NAME DIR [DIR ...]`` becomes ``<out_dir>/NAME`` with ``wav.scp`` (absolute
FLAC paths, read by ESPnet's ``sound`` reader), ``text``, ``utt2spk``, ``spk2utt`` and
``utt2dur`` (from the FLAC headers), sorted in C-locale byte order. Every DIR has the
layout of a LibriSpeech part (and of each Libri-light fold, e.g.
``librispeech_finetuning/1h/0/clean``)::

    DIR/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    DIR/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   # "<utt id> <TRANSCRIPT>"

Utterance ids are LibriSpeech's own (``<speaker>-<chapter>-<utt>``, so they start with
their speaker id); the speaker of an utterance is its reader, ``<speaker>``.

Nothing is dropped: a transcript line without its FLAC, a FLAC without a transcript
line, an empty transcript, an id that occurs twice in a set, an unreadable FLAC or one
at another sample rate stops the tool with one message naming the file, the line, the
utterance and the fix (exit status 1). Each data dir is written under a temporary name
and renamed, so it is either complete or absent.

References: the corpus layout of LibriSpeech (Panayotov et al., ICASSP 2015; OpenSLR
resource 12, README.TXT "2.1 Organization of the training and test subsets") and of the
Libri-light limited-supervision sets (facebookresearch/libri-light @ 07fa3887,
data_preparation/README.md, "2. Get the limited-supervision train data").
"""

import argparse
import logging
import os
import shutil
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import soundfile
from tqdm import tqdm

from espnet2.fileio.kaldi_data_dir import (
    DataDirEntry,
    DataDirError,
    data_dir_lines,
    validate_data_dir,
)
from espnet2.utils.tool_logging import exit_with_error, start_tool_logging

TOOL = "prepare_librispeech.py"
TRANS_SUFFIX = ".trans.txt"
HEADER_CHUNK = 64  # FLAC headers read per thread task


class Utterance(NamedTuple):
    """One transcript line and its audio file.

    Attributes:
        utt_id: LibriSpeech id, ``<speaker>-<chapter>-<utt>``.
        speaker: The reader, ``<speaker>``.
        text: The transcript (words separated by single spaces).
        flac: Absolute path of the audio file.
        trans: The ``.trans.txt`` file holding the transcript.
        line_no: 1-based line of the transcript in ``trans``.
    """

    utt_id: str
    speaker: str
    text: str
    flac: str
    trans: str
    line_no: int


def _chapter_of(path: Path, folder: Path) -> Tuple[str, str]:
    """(speaker, chapter) of a file at ``folder/<speaker>/<chapter>/<file>``."""
    parts = path.relative_to(folder).parts
    if len(parts) != 3:
        raise DataDirError(
            path,
            f"file is not at <speaker>/<chapter>/ inside {folder} (LibriSpeech layout)",
            "move it to its speaker/chapter folder, or delete it.",
        )
    return parts[0], parts[1]


def _read_transcripts(trans: Path, folder: Path) -> Iterator[Utterance]:
    """The utterances listed in one ``<speaker>-<chapter>.trans.txt`` file."""
    speaker, chapter = _chapter_of(trans, folder)
    prefix = f"{speaker}-{chapter}-"
    if trans.name != f"{speaker}-{chapter}{TRANS_SUFFIX}":
        raise DataDirError(
            trans,
            f"transcript file name does not match its folder {speaker}/{chapter}",
            f"rename it to {speaker}-{chapter}{TRANS_SUFFIX}.",
        )
    try:
        lines = trans.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataDirError(
            trans, f"file is not UTF-8 ({err.reason})", "restore the original file."
        ) from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue  # a blank line lists no utterance
        utt_id, _, text = " ".join(line.split()).partition(" ")
        if not utt_id.startswith(prefix):
            raise DataDirError(
                trans,
                f"id does not start with '{prefix}' (its folder {speaker}/{chapter})",
                "fix the id, or move the line to the transcript of its chapter.",
                line_no,
                utt_id,
            )
        if not text:
            raise DataDirError(
                trans,
                "transcript is empty",
                "write the transcript after the id, or delete the line and its "
                f"audio file {trans.parent / (utt_id + '.flac')}.",
                line_no,
                utt_id,
            )
        flac = os.path.abspath(trans.parent / f"{utt_id}.flac")
        yield Utterance(utt_id, speaker, text, flac, str(trans), line_no)


def scan_folder(folder: Path) -> List[Utterance]:
    """All utterances of one LibriSpeech-layout folder, each with its FLAC file.

    Args:
        folder: A LibriSpeech part (or Libri-light fold) folder.

    Returns:
        The utterances in transcript-file order.

    Raises:
        DataDirError: When the folder holds no utterance, a transcript line has no
            FLAC, a FLAC has no transcript line, or a file is out of place.
    """
    if not folder.is_dir():
        raise DataDirError(
            folder, "folder does not exist", "check the path given to --set."
        )
    utterances: List[Utterance] = []
    for trans in sorted(folder.rglob(f"*{TRANS_SUFFIX}")):
        utterances.extend(_read_transcripts(trans, folder))
    listed = {utt.flac for utt in utterances}
    for utt in utterances:
        if not os.path.isfile(utt.flac):
            raise DataDirError(
                utt.trans,
                f"audio file {utt.flac} does not exist",
                "restore it (extract the corpus archive again), or delete the line.",
                utt.line_no,
                utt.utt_id,
            )
    for flac in sorted(folder.rglob("*.flac")):
        if os.path.abspath(flac) not in listed:
            speaker, chapter = _chapter_of(flac, folder)
            raise DataDirError(
                flac,
                "audio file has no transcript line in "
                f"{flac.parent / (speaker + '-' + chapter + TRANS_SUFFIX)}",
                f"add the line '{flac.stem} <TRANSCRIPT>' there, or delete the file.",
                utt=flac.stem,
            )
    if not utterances:
        raise DataDirError(
            folder,
            f"folder holds no utterance (no <speaker>/<chapter>/*{TRANS_SUFFIX})",
            "check the path: it must be a LibriSpeech part, e.g. .../dev-clean.",
        )
    return utterances


def collect_set(
    name: str, folders: Sequence[str], cache: Dict[str, List[Utterance]]
) -> List[Utterance]:
    """The utterances of one set, sorted by id in C-locale byte order.

    Args:
        name: The set's name, for messages.
        folders: Its LibriSpeech-layout folders.
        cache: Scanned folders by absolute path (a folder in several sets is read once).

    Returns:
        Every utterance of every folder, sorted by id.

    Raises:
        DataDirError: On a bad folder (see ``scan_folder``) or an id found twice.
    """
    seen: Dict[str, Utterance] = {}
    for folder in folders:
        key = os.path.abspath(folder)
        if key not in cache:
            cache[key] = scan_folder(Path(folder))
        for utt in cache[key]:
            first = seen.get(utt.utt_id)
            if first is not None:
                raise DataDirError(
                    utt.trans,
                    f"utterance id occurs twice in set {name} (first in "
                    f"{first.trans}:{first.line_no})",
                    "LibriSpeech parts are disjoint: delete the copy, or give each "
                    "folder once to --set.",
                    utt.line_no,
                    utt.utt_id,
                )
            seen[utt.utt_id] = utt
    # str order is code point order, i.e. UTF-8 byte order (LC_ALL=C sort)
    return sorted(seen.values(), key=lambda utt: utt.utt_id)


def audio_seconds(utt: Utterance, sample_rate: int) -> float:
    """Duration of an utterance's FLAC file from its header, in seconds.

    Raises:
        DataDirError: When the file cannot be read or is not at ``sample_rate`` Hz.
    """
    try:
        info = soundfile.info(utt.flac)
    except (soundfile.SoundFileError, RuntimeError) as err:
        raise DataDirError(
            utt.trans,
            f"cannot read audio file {utt.flac}: {str(err).rstrip('.')}",
            "restore it (extract the corpus archive again), or delete the line and "
            "the file.",
            utt.line_no,
            utt.utt_id,
        ) from None
    if info.samplerate != sample_rate:
        raise DataDirError(
            utt.trans,
            f"audio file {utt.flac} is {info.samplerate} Hz, not {sample_rate} Hz",
            "LibriSpeech is 16 kHz: restore the original file.",
            utt.line_no,
            utt.utt_id,
        )
    return info.frames / info.samplerate


def read_durations(
    name: str, utterances: Sequence[Utterance], sample_rate: int, nj: int
) -> List[float]:
    """Durations in seconds of every utterance, read from the FLAC headers.

    Args:
        name: The set's name, for the progress bar.
        utterances: The set's utterances.
        sample_rate: The sample rate every file must have, in Hz.
        nj: Threads reading headers (libsndfile releases the GIL).

    Returns:
        One duration per utterance, in order.
    """
    seconds: List[float] = []
    with (
        ThreadPool(nj) as pool,
        tqdm(
            total=len(utterances), desc=f"audio of {name}", unit="utt", disable=None
        ) as bar,
    ):
        durations = pool.imap(
            lambda utt: audio_seconds(utt, sample_rate), utterances, HEADER_CHUNK
        )
        for value in durations:
            seconds.append(value)
            bar.update()
    return seconds


def write_data_dir(
    data_dir: Path, utterances: Sequence[Utterance], seconds: Sequence[float]
) -> None:
    """Write a data dir under a temporary name, check its format, rename it.

    Args:
        data_dir: The output, e.g. ``data/dev_clean``; replaced when it exists.
        utterances: The set's utterances, sorted by id.
        seconds: Their durations in seconds.
    """
    tmp = data_dir.with_name(f".{data_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries = [
        DataDirEntry(utt.utt_id, utt.flac, utt.text, utt.speaker, duration)
        for utt, duration in zip(utterances, seconds)
    ]
    for name, lines in data_dir_lines(entries).items():
        (tmp / name).write_text("".join(f"{line}\n" for line in lines), "utf-8")
    validate_data_dir(tmp, check_audio=False)  # order, ids, speakers of our output
    shutil.rmtree(data_dir, ignore_errors=True)
    tmp.rename(data_dir)


def parse_sets(items: Sequence[Sequence[str]]) -> List[Tuple[str, List[str]]]:
    """``--set NAME DIR [DIR ...]`` values as (name, folders), checked.

    Raises:
        ValueError: On a set without folders, a bad or repeated name.
    """
    sets: List[Tuple[str, List[str]]] = []
    for item in items:
        name, folders = item[0], list(item[1:])
        if not folders:
            raise ValueError(f"--set {name} needs at least one folder")
        if "/" in name or name.startswith(".") or name in dict(sets):
            raise ValueError(f"--set {name}: give each set once, as a plain dir name")
        sets.append((name, folders))
    return sets


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``prepare_librispeech.py``.
    """
    parser = argparse.ArgumentParser(
        description="Write Kaldi-style data dirs (wav.scp, text, utt2spk, spk2utt, "
        "utt2dur) from LibriSpeech-layout folders.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out_dir", required=True, help="Parent of the data dirs, e.g. data."
    )
    parser.add_argument(
        "--set",
        action="append",
        nargs="+",
        required=True,
        metavar="NAME_THEN_DIRS",
        help="A data dir to write: its name, then one or more folders laid out as a "
        "LibriSpeech part (<speaker>/<chapter>/*.flac and *.trans.txt). Repeatable.",
    )
    parser.add_argument(
        "--sample_rate", type=int, default=16000, help="Sample rate of every file, Hz."
    )
    parser.add_argument(
        "--nj", type=int, default=8, help="Threads reading the FLAC headers."
    )
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Write every requested set; exit with status 1 on bad input.

    All folders are scanned and checked before any audio header is read or any data
    dir is written.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args)
    try:
        cache: Dict[str, List[Utterance]] = {}
        sets = [
            (name, collect_set(name, folders, cache))
            for name, folders in parse_sets(args.set)
        ]
        for name, utterances in sets:
            seconds = read_durations(name, utterances, args.sample_rate, args.nj)
            write_data_dir(Path(args.out_dir) / name, utterances, seconds)
            logging.info(
                f"{Path(args.out_dir) / name}: {len(utterances)} utterances, "
                f"{len({utt.speaker for utt in utterances})} speakers, "
                f"{sum(seconds) / 3600:.2f} h"
            )
    except (DataDirError, ValueError) as error:
        exit_with_error(TOOL, str(error))


if __name__ == "__main__":
    main()
