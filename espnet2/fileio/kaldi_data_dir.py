"""Validate a Kaldi-style data directory before features or training touch it.

A data directory (``wav.scp``, ``utt2spk``, ``spk2utt``, ``text``, optionally
``utt2dur``) is the entry point of every recipe. Mistakes in it (an unsorted file, a
speaker missing from ``spk2utt``, a truncated FLAC, audio at the wrong sample rate)
otherwise surface hours later as a crash deep in a data loader. ``validate_data_dir``
checks the directory in a fixed order and raises :class:`DataDirError` at the first
problem, naming the file, the line, the utterance, the problem and the fix.

The checks follow Kaldi's ``utils/validate_data_dir.sh`` and the conventions of
ESPnet's readers (``espnet2.fileio.read_text.read_2columns_text``): one
``<id> <value>`` pair per line, ids sorted in C-locale byte order, no duplicates.
Unlike those tools, every error carries its line number, which is why the two-column
parser here is our own (:func:`parse_two_column_text`). :func:`data_dir_lines` lays out
the files of a new data dir in the order and format the checks expect.
"""

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

Seconds = float

REQUIRED_FILES = ("wav.scp", "utt2spk", "spk2utt")
# A Kaldi line: the id, then a space or tab, then the value (the rest of the line).
_LINE_RE = re.compile(r"([^ \t]+)(?:[ \t]+(.*))?")


class DataDirError(ValueError):
    """A problem in a data directory, with where it is and how to fix it.

    The message reads ``<path>:<line>: utterance '<utt>': <problem>. Fix: <fix>``;
    the line and utterance parts are left out when they do not apply (a missing file).

    Attributes:
        path: The file with the problem (as given, e.g. ``data/train/wav.scp``).
        line: 1-based line number in ``path``, or None for a file-level problem.
        utt: The id on that line (an utterance, or a speaker in ``spk2utt``), or None.
        problem: What is wrong, one sentence without the final period.
        fix: How to fix it, one or two sentences.
        id_kind: What ``utt`` names: ``"utterance"`` or ``"speaker"``.
    """

    def __init__(
        self,
        path: Union[Path, str],
        problem: str,
        fix: str,
        line: Optional[int] = None,
        utt: Optional[str] = None,
        id_kind: str = "utterance",
    ):
        """Stores the parts and formats the message from them.

        Args:
            path: The file with the problem.
            problem: What is wrong, one sentence without the final period.
            fix: How to fix it, one or two sentences.
            line: 1-based line number in ``path``; None for a file-level problem.
            utt: The id on that line, or None.
            id_kind: What ``utt`` names: ``"utterance"`` or ``"speaker"``.
        """
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        self.line = line
        self.utt = utt
        self.id_kind = id_kind
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        who = "" if self.utt is None else f"{self.id_kind} '{self.utt}': "
        return f"{where}: {who}{self.problem}. Fix: {self.fix}"

    def __reduce__(self):
        """Keep the error picklable (e.g. across multiprocessing workers)."""
        args = (self.path, self.problem, self.fix, self.line, self.utt, self.id_kind)
        return (type(self), args)


@dataclass
class DataDirSummary:
    """What a valid data directory holds.

    Attributes:
        num_utterances: Number of utterances (lines of ``wav.scp``).
        num_speakers: Number of distinct speakers in ``utt2spk``.
        total_seconds: Total audio duration in seconds; None when unknown (audio not
            checked and no ``utt2dur``).
        min_seconds: Shortest utterance in seconds, or None when unknown.
        max_seconds: Longest utterance in seconds, or None when unknown.
    """

    num_utterances: int
    num_speakers: int
    total_seconds: Optional[Seconds] = None
    min_seconds: Optional[Seconds] = None
    max_seconds: Optional[Seconds] = None

    def describe(self, name: str) -> str:
        """One line for logs, e.g. ``data/train: 412 utterances, 9 speakers, ...``.

        Args:
            name: How to call the directory (usually its path).

        Returns:
            ``<name>: N utterances, S speakers, M min (lo-hi s)``.
        """
        head = f"{name}: {self.num_utterances} utterances, {self.num_speakers} speakers"
        if self.total_seconds is None:
            return f"{head}, duration unknown"
        return (
            f"{head}, {self.total_seconds / 60:.1f} min "
            f"({self.min_seconds:.1f}-{self.max_seconds:.1f} s)"
        )


class KaldiLine(NamedTuple):
    """One parsed line of a two-column Kaldi file.

    Attributes:
        line_no: 1-based line number.
        id: The first column (utterance or speaker id).
        value: The rest of the line, stripped of surrounding spaces and tabs.
    """

    line_no: int
    id: str
    value: str


class DataDirEntry(NamedTuple):
    """One utterance of a data dir to write (see :func:`data_dir_lines`).

    Attributes:
        utt_id: Utterance id, prefixed with its speaker id.
        audio: The ``wav.scp`` value (an audio file path).
        text: The transcript.
        speaker: Speaker id.
        seconds: Duration of the audio in seconds.
    """

    utt_id: str
    audio: str
    text: str
    speaker: str
    seconds: Seconds


def data_dir_lines(
    entries: Sequence[DataDirEntry], seconds_digits: int = 4
) -> Dict[str, List[str]]:
    """The lines of ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and ``utt2dur``.

    Args:
        entries: The utterances of one set, in any order.
        seconds_digits: Decimals of the ``utt2dur`` durations.

    Returns:
        ``{file name: lines}``, every file sorted by id in C-locale byte order (Python
        ``str`` order is code point order, which is UTF-8 byte order).
    """
    entries = sorted(entries, key=lambda entry: entry.utt_id)
    speakers: Dict[str, List[str]] = {}
    for entry in entries:
        speakers.setdefault(entry.speaker, []).append(entry.utt_id)
    return {
        "wav.scp": [f"{e.utt_id} {e.audio}" for e in entries],
        "text": [f"{e.utt_id} {e.text}" for e in entries],
        "utt2spk": [f"{e.utt_id} {e.speaker}" for e in entries],
        "spk2utt": [f"{spk} {' '.join(speakers[spk])}" for spk in sorted(speakers)],
        "utt2dur": [f"{e.utt_id} {e.seconds:.{seconds_digits}f}" for e in entries],
    }


def _sort_fix(path: str) -> str:
    return (
        f"sort it with `LC_ALL=C sort -k1,1 -u {path} -o {path}`, or run "
        "utils/fix_data_dir.sh on the directory."
    )


def _parse_line(
    raw: str, line_no: int, path: str, allow_empty_value: bool, id_kind: str
) -> KaldiLine:
    """Split one line (without its ``\\n``) into id and value, or raise."""
    match = _LINE_RE.fullmatch(raw.rstrip("\r"))
    utt = match.group(1) if match else None
    if raw.endswith("\r"):
        problem = "line ends with a Windows line ending (\\r)"
        fix = f"convert the file to Unix line endings: `sed -i 's/\\r$//' {path}`."
    elif not raw.strip():
        problem, fix = (
            "empty line",
            f"delete the empty lines: `sed -i '/^\\s*$/d' {path}`.",
        )
    elif match is None:
        problem = "line starts with whitespace (expected '<id> <value>')"
        fix = "remove the leading spaces or tabs."
    elif any(char.isspace() for char in utt):
        problem = "the id contains a whitespace character that is not a space or tab"
        fix = "use ids made of letters, digits, '-' and '_'."
    elif match.group(2) is None or not (allow_empty_value or match.group(2).strip()):
        problem = "line has an id but no value (expected '<id> <value>')"
        fix = (
            "add the value after a space, or delete the line and run "
            "utils/fix_data_dir.sh."
        )
    else:
        return KaldiLine(line_no, utt, match.group(2).strip(" \t"))
    raise DataDirError(path, problem, fix, line_no, utt, id_kind)


def _check_order(
    previous: KaldiLine,
    current: KaldiLine,
    first_line: Dict[str, int],
    path: str,
    id_kind: str,
) -> None:
    """Raise if ``current`` repeats an id or breaks C-locale byte order."""
    if current.id in first_line:
        problem = f"duplicate id (first on line {first_line[current.id]})"
        raise DataDirError(
            path,
            problem,
            "keep one line per id: " + _sort_fix(path),
            current.line_no,
            current.id,
            id_kind,
        )
    # `LC_ALL=C sort` compares bytes; UTF-8 byte order equals code point order.
    if current.id.encode("utf-8") < previous.id.encode("utf-8"):
        problem = (
            f"file is not sorted: '{current.id}' (line {current.line_no}) comes after "
            f"'{previous.id}' (line {previous.line_no}) in C-locale byte order"
        )
        raise DataDirError(
            path, problem, _sort_fix(path), current.line_no, current.id, id_kind
        )


def parse_two_column_text(
    text: str,
    path: Union[Path, str] = "<text>",
    allow_empty_value: bool = False,
    id_kind: str = "utterance",
) -> List[KaldiLine]:
    """Parse the content of a two-column Kaldi file, checking its format.

    Checks, per line and in file order: no Windows line ending, no empty line, an id
    followed by a space or tab and a value, no duplicate id, ids in C-locale byte order
    (``LC_ALL=C sort -k1,1``). A final newline is optional.

    Args:
        text: The whole file content (lines separated by ``\\n``).
        path: The file name to put into error messages.
        allow_empty_value: Accept ``<id>`` followed by blanks only (value ``""``), for
            ``text`` whose transcripts are checked separately.
        id_kind: What the ids are, for messages: ``"utterance"`` or ``"speaker"``.

    Returns:
        The lines in file order as ``KaldiLine(line_no, id, value)``.

    Raises:
        DataDirError: At the first malformed, duplicate or unsorted line.
    """
    raws = text.split("\n")
    if raws and raws[-1] == "":
        raws.pop()  # the final newline ends the last line; it does not start one
    lines: List[KaldiLine] = []
    first_line: Dict[str, int] = {}
    for line_no, raw in enumerate(raws, 1):
        line = _parse_line(raw, line_no, str(path), allow_empty_value, id_kind)
        if lines:
            _check_order(lines[-1], line, first_line, str(path), id_kind)
        first_line[line.id] = line_no
        lines.append(line)
    return lines


def read_two_column_file(
    path: Union[Path, str], allow_empty_value: bool = False, id_kind: str = "utterance"
) -> List[KaldiLine]:
    """Read and check a two-column Kaldi file (UTF-8); see ``parse_two_column_text``.

    Args:
        path: The file to read.
        allow_empty_value: Accept lines whose value is empty.
        id_kind: What the ids are, for messages: ``"utterance"`` or ``"speaker"``.

    Returns:
        The lines in file order as ``KaldiLine(line_no, id, value)``.

    Raises:
        DataDirError: On a line that is not UTF-8, malformed, duplicate or unsorted.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data.count(b"\n", 0, err.start) + 1
        raise DataDirError(
            path,
            f"line is not valid UTF-8 ({err.reason})",
            "re-encode the file as UTF-8 (e.g. with iconv).",
            line_no,
        ) from None
    return parse_two_column_text(text, path, allow_empty_value, id_kind)


def _data_files(data_dir: Path, require_text: bool) -> List[str]:
    """Check the directory and its required files; return the names to read."""
    if not data_dir.is_dir():
        raise DataDirError(
            data_dir,
            "data directory does not exist",
            "check the path, or run the recipe's data preparation stage first.",
        )
    names = list(REQUIRED_FILES) + (["text"] if require_text else [])
    for name in names:
        if not (data_dir / name).is_file():
            raise DataDirError(
                data_dir / name,
                "required file is missing",
                _missing_fix(data_dir, name),
            )
    optional = ["text"] if not require_text else []
    return names + [
        name for name in optional + ["utt2dur"] if (data_dir / name).is_file()
    ]


def _missing_fix(data_dir: Path, name: str) -> str:
    if name == "spk2utt":
        return (
            f"make it from utt2spk: `utils/utt2spk_to_spk2utt.pl {data_dir}/utt2spk > "
            f"{data_dir}/spk2utt`, or run utils/fix_data_dir.sh {data_dir}."
        )
    if name == "text":
        return (
            "write the transcripts, or pass --require_text false for audio-only data."
        )
    return f"create {name} with the corpus's data preparation script."


def _read_files(data_dir: Path, names: Sequence[str]) -> Dict[str, List[KaldiLine]]:
    """Read every file of the directory with the format checks (step 2)."""
    files = {}
    for name in names:
        files[name] = read_two_column_file(
            data_dir / name,
            allow_empty_value=name == "text",
            id_kind="speaker" if name == "spk2utt" else "utterance",
        )
        logging.debug(f"{data_dir / name}: {len(files[name])} lines")
    if not files["wav.scp"]:
        raise DataDirError(
            data_dir / "wav.scp",
            "file has no utterances",
            "run the recipe's data preparation stage again.",
        )
    if "utt2dur" in files:
        _check_durations_are_numbers(data_dir / "utt2dur", files["utt2dur"])
    return files


def _check_durations_are_numbers(path: Path, lines: Sequence[KaldiLine]) -> None:
    for line in lines:
        try:
            seconds = float(line.value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise DataDirError(
                path,
                f"duration '{line.value}' is not a number of seconds >= 0",
                f"regenerate it with `utils/data/get_utt2dur.sh {path.parent}`, "
                "or delete it.",
                line.line_no,
                line.id,
            )


def _check_same_ids(data_dir: Path, files: Dict[str, List[KaldiLine]]) -> None:
    """Every utterance-level file lists the utterances of wav.scp (step 3)."""
    fix = (
        "add the missing line, or keep only the utterances present in all files with "
        f"utils/fix_data_dir.sh {data_dir}."
    )
    reference = files["wav.scp"]
    reference_ids = {line.id for line in reference}
    for name in ("utt2spk", "text", "utt2dur"):
        if name not in files:
            continue
        ids = {line.id for line in files[name]}
        for line in reference:
            if line.id not in ids:
                problem = f"in wav.scp but missing from {name} ({data_dir / name})"
                raise DataDirError(
                    data_dir / "wav.scp", problem, fix, line.line_no, line.id
                )
        for line in files[name]:
            if line.id not in reference_ids:
                problem = f"in {name} but missing from wav.scp ({data_dir / 'wav.scp'})"
                raise DataDirError(data_dir / name, problem, fix, line.line_no, line.id)


def _check_speaker_prefix(data_dir: Path, utt2spk: Sequence[KaldiLine]) -> None:
    """Utterance ids start with their speaker id, so both sort the same way."""
    for line in utt2spk:
        if not line.id.startswith(line.value):
            raise DataDirError(
                data_dir / "utt2spk",
                f"id does not start with its speaker id '{line.value}' (Kaldi needs "
                "this so that utt2spk and spk2utt sort consistently)",
                "prefix the speaker id to the utterance id in every file, e.g. "
                f"'{line.value}-{line.id}'.",
                line.line_no,
                line.id,
            )


def _check_spk2utt(data_dir: Path, files: Dict[str, List[KaldiLine]]) -> None:
    """spk2utt lists each utterance of utt2spk once, under its speaker."""
    path = data_dir / "spk2utt"
    fix = f"rebuild it: `utils/utt2spk_to_spk2utt.pl {data_dir}/utt2spk > {path}`."
    speaker_of = {line.id: line.value for line in files["utt2spk"]}
    listed = set()
    for line in files["spk2utt"]:
        for utt in line.value.split():
            if speaker_of.get(utt) != line.id:
                where = (
                    f"speaker '{speaker_of[utt]}'"
                    if utt in speaker_of
                    else "no speaker"
                )
                problem = f"lists utterance '{utt}', which utt2spk gives to {where}"
                raise DataDirError(path, problem, fix, line.line_no, line.id, "speaker")
            if utt in listed:
                problem = f"utterance '{utt}' is listed twice"
                raise DataDirError(path, problem, fix, line.line_no, line.id, "speaker")
            listed.add(utt)
    for line in files["utt2spk"]:
        if line.id not in listed:
            problem = f"not listed in spk2utt under its speaker '{line.value}'"
            raise DataDirError(
                data_dir / "utt2spk", problem, fix, line.line_no, line.id
            )


def _check_transcripts(data_dir: Path, text: Sequence[KaldiLine]) -> None:
    """Transcripts are not empty (step 4)."""
    for line in text:
        if not line.value.strip():
            raise DataDirError(
                data_dir / "text",
                "transcript is empty",
                "write the transcript, or remove the utterance from every file and run "
                f"utils/fix_data_dir.sh {data_dir}.",
                line.line_no,
                line.id,
            )


def validate_data_dir(
    data_dir: Union[Path, str],
    sample_rate: int = 16000,
    check_audio: Union[bool, str] = True,
    require_text: bool = True,
    duration_tolerance: Seconds = 0.01,
    nj: int = 1,
) -> DataDirSummary:
    """Check a Kaldi-style data directory and summarise it.

    Checks, in this order, stopping at the first problem:

    1. the directory and ``wav.scp``, ``utt2spk``, ``spk2utt`` (and ``text`` when
       ``require_text``) exist; ``utt2dur`` (and ``text`` otherwise) are checked when
       present;
    2. each file: UTF-8, no empty line, ``<id> <value>`` lines, no duplicate id, sorted
       in C-locale byte order, no ``\\r``; ``utt2dur`` values are numbers;
    3. ``utt2spk``, ``text`` and ``utt2dur`` list exactly the utterances of ``wav.scp``;
       ``spk2utt`` is the inverse of ``utt2spk``; utterance ids start with their
       speaker id;
    4. transcripts are not empty;
    5. with ``check_audio``: each ``wav.scp`` value is a readable, complete audio file
       (relative paths from the current directory) at ``sample_rate``, mono, not
       empty, without NaN or infinite samples (floating-point files are decoded for
       this), and as long as ``utt2dur`` says within ``duration_tolerance``; with
       ``check_audio="header"`` only what the headers say (not a corrupt compressed
       payload, nor NaN samples; ``espnet2/fileio/data_dir_audio.py``).

    Args:
        data_dir: The data directory, e.g. ``data/train``.
        sample_rate: Expected sample rate of every audio file in Hz.
        check_audio: Step 5: ``True``/``"full"`` opens and checks every audio file
            (compressed formats such as FLAC and floating-point WAVs are decoded
            whole, so this reads all of their audio); ``"header"`` reads the
            headers only; ``False``/``"none"`` skips it.
        require_text: Require a ``text`` file (set False for audio-only SSL data).
        duration_tolerance: Allowed difference between ``utt2dur`` and the audio, in
            seconds.
        nj: Processes of step 5 (the first problem in file order is reported, as
            with one).

    Returns:
        The summary. Durations come from the audio with ``check_audio``, else from
        ``utt2dur``, else they are None.

    Raises:
        DataDirError: At the first problem, naming file, line, utterance and fix.
    """
    # imported here: data_dir_audio imports DataDirError and KaldiLine from here
    from espnet2.fileio.data_dir_audio import audio_check_mode, check_audio_files

    mode = audio_check_mode(check_audio)
    data_dir = Path(data_dir)
    files = _read_files(data_dir, _data_files(data_dir, require_text))
    _check_same_ids(data_dir, files)
    _check_spk2utt(data_dir, files)
    _check_speaker_prefix(data_dir, files["utt2spk"])
    if "text" in files:
        _check_transcripts(data_dir, files["text"])
    if mode != "none":
        durations = check_audio_files(
            data_dir, files["wav.scp"], files.get("utt2dur"), sample_rate,
            duration_tolerance, mode, nj,
        )  # fmt: skip
    else:
        durations = [float(line.value) for line in files.get("utt2dur", [])]
    summary = DataDirSummary(
        num_utterances=len(files["wav.scp"]),
        num_speakers=len({line.value for line in files["utt2spk"]}),
    )
    if durations:
        summary.total_seconds = sum(durations)
        summary.min_seconds, summary.max_seconds = min(durations), max(durations)
    logging.debug(summary.describe(str(data_dir)))
    return summary
