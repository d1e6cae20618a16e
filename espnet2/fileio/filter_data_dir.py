"""Duration filtering of a Kaldi-style data directory (stage 2 of the SSL recipes).

The recipe reads its sets from ``dump/raw/<set>``, a copy of ``data/<set>`` without the
utterances that are too short for the model's CNN or too long for memory. Nothing is
dropped silently: every removed utterance is listed, with its duration and the reason,
in ``<dst>/filtered_utts``, and the tool logs how many were removed.

Durations come from the audio headers (``soundfile.info``: exact sample counts for WAV
and FLAC without decoding), and are also written as ``utt2num_samples`` for ESPnet's
shape files.
"""

import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import soundfile
from tqdm import tqdm

from espnet2.fileio.kaldi_data_dir import (
    DataDirError,
    KaldiLine,
    read_two_column_file,
    validate_data_dir,
)

PathLike = Union[str, Path]
# files with one line per utterance, filtered line by line when present
UTT_FILES = ("wav.scp", "utt2spk", "text", "utt2dur", "utt2gender", "utt2lang")
# files with several lines per utterance (the utterance id first), filtered likewise
MULTI_LINE_UTT_FILES = ("phones.ctm",)
FILTERED_LIST = "filtered_utts"
LOGGED_REMOVALS = 10  # the first ones are logged one by one


@dataclass
class FilterReport:
    """What :func:`filter_data_dir` kept and removed.

    Attributes:
        kept: Ids of the kept utterances, in wav.scp order.
        removed: ``(utt, seconds, reason)`` of every removed utterance.
        kept_seconds: Total duration of the kept utterances, in seconds.
    """

    kept: List[str] = field(default_factory=list)
    removed: List[Tuple[str, float, str]] = field(default_factory=list)
    kept_seconds: float = 0.0

    def describe(self, name: str) -> str:
        """One log line, e.g. ``dump/raw/train: kept 450 (20.0 min), removed 2``."""
        removed_s = sum(seconds for _, seconds, _ in self.removed)
        return (
            f"{name}: kept {len(self.kept)} utterances ({self.kept_seconds / 60:.1f} "
            f"min), removed {len(self.removed)} ({removed_s:.1f} s)"
        )


def num_samples(entry: KaldiLine, scp: Path, sample_rate: int) -> int:
    """Sample count of one wav.scp entry from its audio header.

    Raises:
        DataDirError: When the file is missing, unreadable, or not ``sample_rate``.
    """
    try:
        info = soundfile.info(entry.value)
    except (soundfile.SoundFileError, RuntimeError) as err:
        raise DataDirError(
            scp,
            f"cannot read audio file '{entry.value}': {str(err).rstrip('.')}",
            "re-create the file, or remove the utterance and run "
            "utils/fix_data_dir.sh.",
            entry.line_no,
            entry.id,
        ) from None
    if info.samplerate != sample_rate:
        raise DataDirError(
            scp,
            f"audio file '{entry.value}' is {info.samplerate} Hz, not {sample_rate} Hz",
            f"resample the corpus to {sample_rate} Hz in local/data.sh, or pass "
            f"--fs {info.samplerate} to the recipe.",
            entry.line_no,
            entry.id,
        )
    return int(info.frames)


def _reason(seconds: float, min_seconds: float, max_seconds: Optional[float]) -> str:
    """Why an utterance of ``seconds`` is removed ("" when it is kept)."""
    if seconds < min_seconds:
        return f"shorter than min_seconds={min_seconds}"
    if max_seconds is not None and seconds > max_seconds:
        return f"longer than max_seconds={max_seconds}"
    return ""


def _filter_lines(src: Path, keep: set, multi_line: bool) -> List[str]:
    """The lines of ``src`` whose first field is a kept utterance."""
    lines = src.read_text(encoding="utf-8").splitlines()
    if multi_line:
        return [line for line in lines if line.split(maxsplit=1)[0] in keep]
    return [f"{x.id} {x.value}" for x in read_two_column_file(src) if x.id in keep]


def _spk2utt(utt2spk: List[str]) -> List[str]:
    """spk2utt lines (sorted speakers, utterances in order) from utt2spk lines."""
    speakers: Dict[str, List[str]] = {}
    for line in utt2spk:
        utt, spk = line.split(maxsplit=1)
        speakers.setdefault(spk, []).append(utt)
    return [f"{spk} {' '.join(utts)}" for spk, utts in sorted(speakers.items())]


def _write(path: Path, lines: List[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _write_dir(
    src: Path, tmp: Path, report: FilterReport, samples: Dict[str, int], fs: int
) -> None:
    """Write the filtered copy of ``src`` into the fresh directory ``tmp``."""
    keep = set(report.kept)
    for name in UTT_FILES + MULTI_LINE_UTT_FILES:
        if name == "utt2dur" or not (src / name).is_file():
            continue
        lines = _filter_lines(src / name, keep, name in MULTI_LINE_UTT_FILES)
        _write(tmp / name, lines)
    _write(tmp / "spk2utt", _spk2utt((tmp / "utt2spk").read_text().splitlines()))
    _write(tmp / "utt2num_samples", [f"{u} {samples[u]}" for u in report.kept])
    _write(tmp / "utt2dur", [f"{u} {samples[u] / fs:.4f}" for u in report.kept])
    _write(
        tmp / FILTERED_LIST,
        [f"{utt} {seconds:.3f} {why}" for utt, seconds, why in report.removed],
    )


def _subset_by_hours(
    report: FilterReport, samples: Dict[str, int], fs: int, max_hours: float, seed: int
) -> None:
    """Keeps a seeded random subset of at most ``max_hours``; lists the rest as removed.

    The subset is the longest prefix of a seeded random order (``random.Random(seed)``)
    that fits in the budget, so subsets are nested: with the same seed a larger
    budget keeps a superset (1 h within 10 h, as Libri-light's splits).
    """
    order = list(report.kept)
    random.Random(seed).shuffle(order)
    budget, chosen = max_hours * 3600, set()
    for utt in order:
        seconds = samples[utt] / fs
        if seconds > budget:
            break
        chosen.add(utt)
        budget -= seconds
    why = f"beyond max_hours={max_hours} (seeded subset, seed {seed})"
    report.removed += [
        (u, samples[u] / fs, why) for u in report.kept if u not in chosen
    ]
    report.kept = [u for u in report.kept if u in chosen]
    report.kept_seconds = sum(samples[u] for u in report.kept) / fs


def filter_data_dir(
    src: PathLike,
    dst: PathLike,
    min_seconds: float = 0.1,
    max_seconds: Optional[float] = 20.0,
    sample_rate: int = 16000,
    max_hours: Optional[float] = None,
    seed: int = 0,
) -> FilterReport:
    """Copy the data dir ``src`` to ``dst`` without too short or too long utterances.

    ``dst`` gets the filtered ``wav.scp``, ``utt2spk``, ``text`` (and the other
    per-utterance files ``src`` has, ``phones.ctm`` included), a matching ``spk2utt``,
    ``utt2num_samples`` and ``utt2dur`` measured from the audio, and ``filtered_utts``
    (``utt seconds reason`` per removed utterance). ``dst`` is written under a
    temporary name and renamed, so it is either complete or absent.

    Args:
        src: A valid data directory (checked again here, audio headers included).
        dst: The output directory; replaced when it exists.
        min_seconds: Shortest kept utterance in seconds (inclusive); the wav2vec 2.0
            CNN needs at least 400 samples (0.025 s at 16 kHz).
        max_seconds: Longest kept utterance in seconds (inclusive), or None.
        sample_rate: The sample rate every file must have, in Hz.
        max_hours: Keep a seeded random subset of at most this many hours of the
            utterances within the duration range (data-size studies); None: all.
        seed: Seed of that subset.

    Returns:
        The report of kept and removed utterances.

    Raises:
        DataDirError: On a malformed ``src``, unreadable audio, a wrong sample rate,
            or when no utterance is left.
    """
    src, dst = Path(src), Path(dst)
    validate_data_dir(src, sample_rate, check_audio=False, require_text=False)
    scp = src / "wav.scp"
    report, samples = FilterReport(), {}
    for entry in tqdm(
        read_two_column_file(scp), desc=f"durations of {src}", unit="utt"
    ):
        samples[entry.id] = num_samples(entry, scp, sample_rate)
        seconds = samples[entry.id] / sample_rate
        why = _reason(seconds, min_seconds, max_seconds)
        if why:
            report.removed.append((entry.id, seconds, why))
        else:
            report.kept.append(entry.id)
            report.kept_seconds += seconds
    if max_hours is not None:
        _subset_by_hours(report, samples, sample_rate, max_hours, seed)
    if not report.kept:
        raise DataDirError(
            scp,
            f"no utterance lasts between {min_seconds} and {max_seconds} s"
            + (f" and fits in max_hours={max_hours}" if max_hours is not None else ""),
            "check the corpus, or widen --min_wav_duration/--max_wav_duration"
            + (" or --train_hours." if max_hours is not None else "."),
        )
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_dir(src, tmp, report, samples, sample_rate)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    for utt, seconds, why in report.removed[:LOGGED_REMOVALS]:
        logging.warning(f"{src}: removed utterance '{utt}' ({seconds:.3f} s): {why}")
    if report.removed:
        logging.warning(
            f"{src}: {len(report.removed)} utterances removed, all listed with their "
            f"duration and reason in {dst / FILTERED_LIST}"
        )
    logging.info(report.describe(str(dst)))
    return report
