"""Step 5 of ``validate_data_dir``: every audio file of a ``wav.scp``, in processes.

Two depths (``check_audio``):

* ``full`` (default): the header (sample rate, channels, frames), a WAV's declared
  size against the bytes present, then the samples: FLAC and other compressed files
  are decoded whole (a corrupt or cut payload fails only there), a PCM WAV's last
  frame is read, and floating-point files are scanned for NaN and infinity. This
  reads all of the compressed audio: on LibriSpeech, CPU time of the order of the
  FLAC decoding of 960 h.
* ``header``: the header and a WAV's declared size only (one small read per file).
  It finds missing and unreadable files, wrong sample rates, several channels,
  empty files, truncated WAVs and ``utt2dur`` mismatches, but not a corrupt or cut
  FLAC/OGG payload, nor NaN or infinite samples. Training still catches those when
  it loads the example (``espnet2/ssl/data/checked_dataset.py``), hours later and
  one at a time; use it for very large corpora whose files come from a trusted
  conversion, and ``full`` otherwise.

With ``nj`` > 1 the entries are cut into contiguous chunks checked by ``nj``
processes. Each chunk stops at its first problem, and the error of the earliest
chunk that has one is raised: the first problem in file order, with the same
message as a serial check.
"""

import logging
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import soundfile
from tqdm import tqdm

from espnet2.fileio.audio_check import (
    NONFINITE_FIX,
    decode_problem,
    file_nonfinite_problem,
    format_problem,
    wav_truncation,
)
from espnet2.fileio.kaldi_data_dir import DataDirError, KaldiLine, Seconds

AUDIO_CHECKS = ("full", "header", "none")
# "/path/x.ark:1234": an entry inside a Kaldi archive, not an audio file.
_ARK_OFFSET_RE = re.compile(r"\.ark:\d+$")
CHUNKS_PER_JOB = 4  # more chunks than processes: a slow chunk delays less
_ARK_FIX = (
    "convert the entries to audio files (e.g. with the recipe's audio formatting "
    "stage, scripts/audio/format_wav_scp.sh) and list their paths."
)
_GONE_FIX = (
    "re-create the file, or remove the utterance from every file and run "
    "utils/fix_data_dir.sh."
)


def audio_check_mode(check_audio: Union[bool, str]) -> str:
    """The depth of the audio check as one of ``AUDIO_CHECKS``.

    Args:
        check_audio: ``True`` or ``"full"``, ``"header"``, ``False`` or ``"none"``
            (also ``"true"``/``"false"``, as the command line spells them).

    Returns:
        ``"full"``, ``"header"`` or ``"none"``.

    Raises:
        ValueError: Any other value.
    """
    aliases = {True: "full", False: "none", "true": "full", "false": "none"}
    key = check_audio.lower() if isinstance(check_audio, str) else check_audio
    mode = aliases.get(key, key)
    if mode not in AUDIO_CHECKS:
        raise ValueError(
            f"check_audio must be one of {', '.join(AUDIO_CHECKS)} (or true/false), "
            f"got {check_audio!r}"
        )
    return mode


def _audio_path(entry: KaldiLine, scp: Path) -> Path:
    """The audio file of a wav.scp entry; pipes and archive entries are rejected."""
    value = entry.value
    if value.endswith("|"):
        problem = f"entry is a pipe command ('{value}'), not an audio file"
        raise DataDirError(scp, problem, _ARK_FIX, entry.line_no, entry.id)
    if value.startswith("ark:") or _ARK_OFFSET_RE.search(value):
        problem = f"entry points into a Kaldi archive ('{value}'), not an audio file"
        raise DataDirError(scp, problem, _ARK_FIX, entry.line_no, entry.id)
    return Path(value)  # relative paths: from the current directory, as in Kaldi


def _open_header(entry: KaldiLine, scp: Path) -> "soundfile._SoundFileInfo":
    """The header of an entry's audio file; a missing or unreadable file raises."""
    path = _audio_path(entry, scp)
    if not path.is_file():
        problem = f"audio file '{path}' does not exist"
        if not path.is_absolute():
            problem += (
                f" (relative paths are read from the current directory, {Path.cwd()})"
            )
        raise DataDirError(scp, problem, _GONE_FIX, entry.line_no, entry.id)
    try:
        return soundfile.info(str(path))
    except (soundfile.SoundFileError, RuntimeError) as err:
        problem = f"cannot read audio file '{path}': {str(err).rstrip('.')}"
        raise DataDirError(scp, problem, _GONE_FIX, entry.line_no, entry.id) from None


def audio_seconds(entry: KaldiLine, scp: Path, sample_rate: int, mode: str) -> Seconds:
    """Check the audio file of one wav.scp entry; return its duration in seconds.

    Args:
        entry: The wav.scp line.
        scp: The wav.scp, for messages.
        sample_rate: Expected rate in Hz.
        mode: ``"full"`` or ``"header"`` (see the module doc).

    Returns:
        Frames over sample rate, from the header.

    Raises:
        DataDirError: Naming the line, the utterance, the file and the fix.
    """
    info = _open_header(entry, scp)
    path = Path(entry.value)
    problem = decode_problem(path, info) if mode == "full" else wav_truncation(path)
    if problem is not None:
        problem = f"{problem} (file '{path}')"
        raise DataDirError(scp, problem, _GONE_FIX, entry.line_no, entry.id)
    bad = format_problem(info, sample_rate)
    if bad is not None:
        problem = f"{bad[0]} (file '{path}')"
        raise DataDirError(scp, problem, bad[1], entry.line_no, entry.id)
    problem = file_nonfinite_problem(path, info) if mode == "full" else None
    if problem is not None:
        problem = f"{problem} (file '{path}')"
        raise DataDirError(scp, problem, NONFINITE_FIX, entry.line_no, entry.id)
    return info.frames / info.samplerate


def check_chunk(
    data_dir: Path,
    entries: Sequence[KaldiLine],
    listed: Dict[str, KaldiLine],
    sample_rate: int,
    duration_tolerance: Seconds,
    mode: str,
) -> List[Seconds]:
    """Check consecutive wav.scp entries and their utt2dur lines, in order.

    Args:
        data_dir: The data directory.
        entries: Some wav.scp lines, in file order.
        listed: The utt2dur lines of those utterances, by id (may be empty).
        sample_rate: Expected rate in Hz.
        duration_tolerance: Allowed utt2dur error in seconds.
        mode: ``"full"`` or ``"header"``.

    Returns:
        The duration of each entry in seconds.

    Raises:
        DataDirError: At the first problem among ``entries``.
    """
    durations = []
    for entry in entries:
        seconds = audio_seconds(entry, data_dir / "wav.scp", sample_rate, mode)
        line = listed.get(entry.id)
        if line is not None and abs(float(line.value) - seconds) > duration_tolerance:
            raise DataDirError(
                data_dir / "utt2dur",
                f"duration is {line.value} s but the audio lasts {seconds:.3f} s "
                f"(tolerance {duration_tolerance} s)",
                f"regenerate it with `utils/data/get_utt2dur.sh {data_dir}`, "
                "or delete it.",
                line.line_no,
                line.id,
            )
        durations.append(seconds)
    return durations


def _chunks(entries: Sequence[KaldiLine], count: int) -> List[Sequence[KaldiLine]]:
    """``entries`` cut into ``count`` contiguous, nearly equal pieces."""
    size, extra = divmod(len(entries), count)
    starts = [i * size + min(i, extra) for i in range(count + 1)]
    return [entries[starts[i] : starts[i + 1]] for i in range(count)]


def _check_in_processes(
    data_dir: Path,
    entries: Sequence[KaldiLine],
    listed: Dict[str, KaldiLine],
    options: tuple,
    nj: int,
) -> List[Seconds]:
    """:func:`check_chunk` over contiguous chunks in ``nj`` processes, in order."""
    pieces = _chunks(entries, min(len(entries), nj * CHUNKS_PER_JOB))
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    durations: List[Seconds] = []
    progress = tqdm(
        total=len(entries), desc=f"audio in {data_dir}", unit="utt", disable=None
    )
    with ProcessPoolExecutor(nj, mp_context=context) as pool, progress:
        futures = [
            pool.submit(
                check_chunk,
                data_dir,
                piece,
                {e.id: listed[e.id] for e in piece if e.id in listed},
                *options,
            )
            for piece in pieces
        ]
        for index, future in enumerate(futures):
            try:
                durations.extend(future.result())
            except DataDirError:
                for later in futures[index + 1 :]:
                    later.cancel()
                raise
            progress.update(len(pieces[index]))
    return durations


def check_audio_files(
    data_dir: Path,
    entries: Sequence[KaldiLine],
    utt2dur: Optional[Sequence[KaldiLine]],
    sample_rate: int,
    duration_tolerance: Seconds,
    mode: str = "full",
    nj: int = 1,
) -> List[Seconds]:
    """Check every audio file of a data dir and its utt2dur entry (step 5).

    Args:
        data_dir: The data directory (relative audio paths: from the current one).
        entries: The lines of its wav.scp.
        utt2dur: The lines of its utt2dur, or None.
        sample_rate: Expected rate in Hz.
        duration_tolerance: Allowed utt2dur error in seconds.
        mode: ``"full"`` or ``"header"`` (see the module doc).
        nj: Processes (1: this one).

    Returns:
        The duration of every utterance in seconds, in wav.scp order.

    Raises:
        DataDirError: At the first problem in file order.
    """
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    listed = {line.id: line for line in utt2dur or []}
    options = (sample_rate, duration_tolerance, mode)
    logging.debug(f"{data_dir}: {mode} audio check of {len(entries)} files, nj={nj}")
    if nj == 1 or len(entries) < 2:
        entries = tqdm(entries, desc=f"audio in {data_dir}", unit="utt", disable=None)
        return check_chunk(data_dir, entries, listed, *options)
    return _check_in_processes(data_dir, entries, listed, options, nj)
