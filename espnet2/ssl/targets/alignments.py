"""Frame-level phone references from a CTM, for scoring clustering targets.

A CTM holds one phone segment per line, ``<utt> <channel> <start_s> <dur_s> <phone>``
(an optional sixth column, a confidence, is ignored). :func:`read_ctm` reads and checks
it; :func:`frame_phones` turns the segments of one utterance into one phone per frame
of the SSL model, the reference that :mod:`espnet2.ssl.targets.quality` compares the
cluster labels with.

Frame rule: frame ``t`` spans ``[t * frame_shift_s, t * frame_shift_s +
frame_length_s)`` seconds (for the wav2vec 2.0 / HuBERT CNN at 16 kHz: samples
``[320 t, 320 t + 400)``), and it takes the phone of the segment that covers its
centre ``t * frame_shift_s + frame_length_s / 2``. Segments are half-open
``[start, start + dur)``, so a centre on a boundary belongs to the later phone. A centre
that no segment covers (a gap, or before the first or after the last segment) gets the
silence symbol. Times are compared in whole microseconds, so boundaries written with
millisecond precision are never misplaced by floating-point rounding.

The corpus ``mini_synth`` (:mod:`espnet2.ssl.synth.corpus`) writes espeak-ng's
phoneme events as its CTM. Each phone runs up to the next onset and the last one up to
the end of the audio (less than 1 ms short), so there are no gaps inside an utterance;
the audio before the first event (0 to about 60 ms, digital silence) is not covered
and becomes silence here. espeak's pauses (``_:``, ``_``) are mapped to silence too,
and its stress marks are dropped (``'eI``, ``,eI`` and ``eI`` are one phone); both
mappings are options.

:func:`phone_transcripts` turns the same CTM into one phone sequence per utterance
(time order, pauses left out, stress merged): the transcripts of the recipe's phone
recognition probe (``espnet2.bin.ssl_phone_text``, stage 7 with ``--phone_probe
true``), scored by PER.

References:
    W.-N. Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by
    Masked Prediction of Hidden Units", arXiv:2106.07447 (the cluster-quality analysis
    scores k-means targets against frame-level forced-alignment phones).
    S.-w. Yang et al., "SUPERB: Speech processing Universal PERformance Benchmark",
    Interspeech 2021, arXiv:2105.01051 (phone recognition, PR: a frozen upstream, a
    learned weighted sum of its layers, a linear CTC head, scored by PER).
"""

import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from espnet2.fileio.kaldi_data_dir import DataDirError

Seconds = float

SILENCE = "sil"
ESPEAK_STRESS_MARKS = ("'", ",")  # primary and secondary stress, before the vowel
ESPEAK_PAUSE_PREFIX = "_"  # espeak's pause phonemes: "_:", "_", "_!", ...
_MICROSECONDS = 1_000_000
_CTM_FIX = (
    "write one segment per line as '<utt> <channel> <start_s> <dur_s> <phone>' "
    "(an optional sixth column, a confidence, is ignored)."
)
_PHONES_FIX = (
    "every utterance of the set needs its phones in the CTM: write them (e.g. with a "
    "forced aligner), or leave the phone probe out (recipe option --phone_probe false)."
)


class PhoneSegment(NamedTuple):
    """One phone of a CTM.

    Attributes:
        start_s: Onset in seconds from the start of the utterance.
        dur_s: Duration in seconds (>= 0).
        phone: The phone symbol as written in the CTM.
    """

    start_s: Seconds
    dur_s: Seconds
    phone: str


def _micro(seconds: Seconds) -> int:
    """Round a time in seconds to whole microseconds."""
    return int(round(seconds * _MICROSECONDS))


def _is_number(text: str) -> bool:
    """True when ``float(text)`` parses."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_ctm_line(raw: str, path: str, line_no: int) -> Tuple[str, PhoneSegment]:
    """Parse one CTM line into ``(utt, segment)``; raise DataDirError if malformed."""
    fields = raw.split()
    if len(fields) not in (5, 6):
        problem = f"expected 5 or 6 fields, got {len(fields)} ({raw.strip()!r})"
        raise DataDirError(path, problem, _CTM_FIX, line_no)
    utt, _, start, dur, phone = fields[:5]
    try:
        start_s, dur_s = float(start), float(dur)
    except ValueError:
        problem = f"start {start!r} or duration {dur!r} is not a number"
        raise DataDirError(path, problem, _CTM_FIX, line_no, utt) from None
    if len(fields) == 6 and not _is_number(fields[5]):
        # fields are split at whitespace: a phone name holding a space lands here
        problem = f"confidence {fields[5]!r} is not a number (a phone with a space?)"
        fix = "phone names must not contain whitespace; " + _CTM_FIX
        raise DataDirError(path, problem, fix, line_no, utt)
    if not (math.isfinite(start_s) and math.isfinite(dur_s)):
        problem = f"start {start!r} or duration {dur!r} is not finite"
        raise DataDirError(path, problem, _CTM_FIX, line_no, utt)
    if start_s < 0 or dur_s < 0:
        problem = f"negative start ({start}) or duration ({dur})"
        raise DataDirError(path, problem, _CTM_FIX, line_no, utt)
    return utt, PhoneSegment(start_s, dur_s, phone)


def _check_no_overlap(
    utt: str, entries: List[Tuple[int, PhoneSegment]], path: str
) -> List[PhoneSegment]:
    """Sort one utterance's ``(line_no, segment)`` by onset and reject overlaps."""
    entries = sorted(entries, key=lambda entry: entry[1][:2])  # by (start, dur)
    for (prev_no, prev), (line_no, seg) in zip(entries, entries[1:]):
        if _micro(seg.start_s) < _micro(prev.start_s + prev.dur_s):
            problem = (
                f"segment {seg.phone!r} at {seg.start_s:g} s overlaps segment "
                f"{prev.phone!r} of line {prev_no} "
                f"({prev.start_s:g} s + {prev.dur_s:g} s)"
            )
            fix = "segments of one utterance must not overlap; fix the aligner output."
            raise DataDirError(path, problem, fix, line_no, utt)
    return [seg for _, seg in entries]


def read_ctm(path: Union[str, Path]) -> Dict[str, List[PhoneSegment]]:
    """Read and check a phone CTM.

    Lines of one utterance may come in any order and need not be adjacent; blank lines
    are skipped.

    Args:
        path: The CTM file (UTF-8).

    Returns:
        ``{utt: segments}`` with the segments of each utterance sorted by onset.

    Raises:
        DataDirError: With ``file:line``, on a line without 5 or 6 fields, a start or
            duration that is not a finite number >= 0, or two overlapping segments of
            one utterance.
    """
    path = str(path)
    entries: Dict[str, List[Tuple[int, PhoneSegment]]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            utt, segment = _parse_ctm_line(raw, path, line_no)
            entries[utt].append((line_no, segment))
    return {utt: _check_no_overlap(utt, entries[utt], path) for utt in entries}


def normalize_phone(
    phone: str,
    merge_stress: bool = True,
    pauses_as_silence: bool = True,
    silence: str = SILENCE,
) -> str:
    """Map an espeak-ng phone mnemonic onto the phone set used for scoring.

    Args:
        phone: A phone as written in the CTM, e.g. ``"'eI"`` or ``"_:"``.
        merge_stress: Drop espeak's stress marks ``'`` (primary) and ``,``
            (secondary), so ``"'eI"``, ``",eI"`` and ``"eI"`` are one phone. Digits are
            kept: in espeak they name different phonemes (``"@"`` and ``"@2"``).
        pauses_as_silence: Map espeak's pauses (names starting with ``_``, e.g.
            ``"_:"``, ``"_"``) to ``silence``.
        silence: The silence symbol.

    Returns:
        The mapped phone (``phone`` itself if no option applies, or if dropping the
        stress marks would leave nothing).
    """
    if pauses_as_silence and phone.startswith(ESPEAK_PAUSE_PREFIX):
        return silence
    if merge_stress:
        stripped = phone
        for mark in ESPEAK_STRESS_MARKS:
            stripped = stripped.replace(mark, "")
        return stripped or phone
    return phone


def frame_centres_us(
    num_frames: int, frame_shift_s: Seconds, frame_length_s: Seconds
) -> np.ndarray:
    """Centres of frames ``0 .. num_frames - 1`` in whole microseconds.

    Args:
        num_frames: Number of frames (>= 0).
        frame_shift_s: Hop between frame starts in seconds.
        frame_length_s: Frame (receptive field) length in seconds.

    Returns:
        int64 array (num_frames,): ``round((t * shift + length / 2) * 1e6)``.
    """
    shift_us, half_us = _micro(frame_shift_s), _micro(frame_length_s / 2)
    return np.arange(num_frames, dtype=np.int64) * shift_us + half_us


def frame_phones(
    segments: Sequence[Tuple[Seconds, Seconds, str]],
    num_frames: int,
    frame_shift_s: Seconds = 0.02,
    frame_length_s: Seconds = 0.025,
    silence: str = SILENCE,
    merge_stress: bool = True,
    pauses_as_silence: bool = True,
) -> List[str]:
    """Assign each frame the phone that covers its centre (see the module docstring).

    Args:
        segments: ``(start_s, dur_s, phone)`` of one utterance, non-overlapping, in
            any order (e.g. from :func:`read_ctm`).
        num_frames: Frames to label (e.g. the number of cluster labels).
        frame_shift_s: Hop in seconds (0.02 for the wav2vec 2.0 / HuBERT CNN).
        frame_length_s: Window in seconds (0.025 for that CNN: 400 samples at
            16 kHz).
        silence: Symbol for frames whose centre no segment covers.
        merge_stress: See :func:`normalize_phone`.
        pauses_as_silence: See :func:`normalize_phone`.

    Returns:
        ``num_frames`` phone symbols, frame ``t`` first at index ``t``.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    labels = [silence] * num_frames
    if not segments:
        return labels
    ordered = sorted(segments, key=lambda seg: (seg[0], seg[1]))  # empty first
    starts = np.array([_micro(start) for start, _, _ in ordered], dtype=np.int64)
    ends = np.array([_micro(start + dur) for start, dur, _ in ordered], dtype=np.int64)
    centres = frame_centres_us(num_frames, frame_shift_s, frame_length_s)
    index = np.searchsorted(starts, centres, side="right") - 1  # last onset <= centre
    for t in np.flatnonzero((index >= 0) & (centres < ends[np.maximum(index, 0)])):
        phone = ordered[index[t]][2]
        labels[t] = normalize_phone(phone, merge_stress, pauses_as_silence, silence)
    return labels


def frames_spanned(
    end_s: Seconds, frame_shift_s: Seconds = 0.02, frame_length_s: Seconds = 0.025
) -> int:
    """Number of whole frames that fit in ``[0, end_s)``.

    Args:
        end_s: A time in seconds, e.g. the end of an utterance's last segment.
        frame_shift_s: Hop in seconds.
        frame_length_s: Window in seconds.

    Returns:
        ``floor((end_s - frame_length_s) / frame_shift_s) + 1``, or 0 if
        ``end_s < frame_length_s`` (computed in microseconds).
    """
    end_us, length_us = _micro(end_s), _micro(frame_length_s)
    if end_us < length_us:
        return 0
    return (end_us - length_us) // _micro(frame_shift_s) + 1


def phone_sequence(
    segments: Sequence[Tuple[Seconds, Seconds, str]],
    merge_stress: bool = True,
    drop_pauses: bool = True,
) -> List[str]:
    """The phones of one utterance in time order: a phone recognition transcript.

    Args:
        segments: ``(start_s, dur_s, phone)`` of one utterance, in any order (e.g.
            from :func:`read_ctm`); ties in onset keep the shorter segment first.
        merge_stress: See :func:`normalize_phone`.
        drop_pauses: Leave out espeak's pauses (names starting with ``_``): CTC's
            blank covers silence, as in SUPERB's phone recognition.

    Returns:
        The phone symbols, earliest onset first; none holds whitespace (CTM fields
        are split at whitespace).
    """
    ordered = sorted(segments, key=lambda seg: (seg[0], seg[1]))
    return [
        normalize_phone(phone, merge_stress, pauses_as_silence=False)
        for _, _, phone in ordered
        if not (drop_pauses and phone.startswith(ESPEAK_PAUSE_PREFIX))
    ]


def phone_transcripts(
    ctm: Union[str, Path],
    utt_ids: Optional[Sequence[str]] = None,
    merge_stress: bool = True,
    drop_pauses: bool = True,
) -> List[Tuple[str, List[str]]]:
    """Every utterance's phones (:func:`phone_sequence`) from a phone CTM.

    Args:
        ctm: The phone CTM (see :func:`read_ctm`).
        utt_ids: The utterances of the set (e.g. the ids of its ``wav.scp``); CTM
            utterances outside it are left out. None: every utterance of the CTM.
        merge_stress: See :func:`normalize_phone`.
        drop_pauses: See :func:`phone_sequence`.

    Returns:
        ``(utt, phones)`` per utterance, sorted by id in C-locale byte order (Python
        ``str`` order), each with at least one phone.

    Raises:
        DataDirError: On a malformed CTM (see :func:`read_ctm`), a CTM without any
            segment, or an utterance of ``utt_ids`` without phones in it.
    """
    path = str(ctm)
    segments = read_ctm(path)
    if not segments:
        raise DataDirError(path, "the CTM holds no segment", _PHONES_FIX)
    wanted = sorted(segments if utt_ids is None else set(utt_ids))
    transcripts = []
    for utt in wanted:
        phones = phone_sequence(segments.get(utt, ()), merge_stress, drop_pauses)
        if not phones:
            what = "only pauses" if utt in segments else "no segment"
            problem = f"{what} in this CTM, but the set has the utterance"
            raise DataDirError(path, problem, _PHONES_FIX, utt=utt)
        transcripts.append((utt, phones))
    return transcripts
