"""Quality of frame-level cluster labels against reference phones.

HuBERT's measures of how well clusters ``z`` (e.g. k-means targets) match phones
``y``, computed from their joint distribution ``p(y, z)`` over all frames:

* phone purity ``E_{p(z)}[max_y p(y | z)] = sum_z max_y p(y, z)``: the average
  share of a cluster's frames that carry its majority phone (1 when no cluster mixes
  phones; splitting a phone over many clusters does not lower it);
* cluster purity ``E_{p(y)}[max_z p(z | y)] = sum_y max_z p(y, z)``: the average
  share of a phone's frames that fall into its majority cluster (1 when no phone is
  split; merging phones does not lower it);
* phone-normalised mutual information ``PNMI = I(y; z) / H(y)``: the share of the
  phone uncertainty that knowing the cluster removes (1 when each cluster holds a
  single phone, 0 when clusters and phones are independent; undefined, returned as
  NaN, when all frames have one phone).

:func:`label_quality` scores a labels file (``<utt> <l_0> <l_1> ...``, one integer
cluster id per frame) against a phone CTM, checking that the two describe the same
utterances and the same number of frames.

References:
    W.-N. Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by
    Masked Prediction of Hidden Units", arXiv:2106.07447, the analysis of cluster
    quality (definitions of cluster purity, phone purity and PNMI). ESPnet's
    ``egs2/TEMPLATE/hubert1/local/measure_teacher_quality.py`` (from fairseq's
    ``examples/hubert``) computes the same quantities (there, "ref pur" is the phone
    purity, "hyp pur" the cluster purity, "MI/H(ref)" the PNMI); ESPnet PR #4747
    reports PNMI 0.2578 for the MFCC k-means (100 clusters) targets of its
    LibriSpeech recipe.
"""

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from typeguard import typechecked

from espnet2.fileio.kaldi_data_dir import DataDirError, read_two_column_file
from espnet2.ssl.frame_geometry import kaldi_frame_count
from espnet2.ssl.targets.alignments import (
    SILENCE,
    PhoneSegment,
    frame_phones,
    frames_spanned,
    read_ctm,
)

Seconds = float
PathLike = Union[str, Path]


@dataclass(frozen=True)
class ClusterQuality:
    """How well cluster labels match reference phones (HuBERT's definitions).

    Attributes:
        phone_purity: ``E_{p(z)}[max_y p(y | z)]``, in (0, 1].
        cluster_purity: ``E_{p(y)}[max_z p(z | y)]``, in (0, 1].
        pnmi: ``I(y; z) / H(y)`` in [0, 1]; NaN if every frame has the same phone.
        num_frames: Frames scored.
        num_clusters_used: Distinct cluster ids among those frames.
        num_phones: Distinct phones among those frames.
    """

    phone_purity: float
    cluster_purity: float
    pnmi: float
    num_frames: int
    num_clusters_used: int
    num_phones: int

    def as_dict(self) -> Dict[str, Union[int, float]]:
        """Return the fields as a plain dict (for JSON)."""
        return asdict(self)


def joint_counts(
    clusters: Sequence[int], phones: Sequence[object]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count frames per (phone, cluster) pair.

    Args:
        clusters: Cluster id per frame, shape (N,).
        phones: Phone per frame (any hashable, sortable values), shape (N,).

    Returns:
        ``(counts, phone_values, cluster_values)``: int64 counts of shape (Y, Z) with
        ``counts[i, j]`` = frames with phone ``phone_values[i]`` and cluster
        ``cluster_values[j]``; the values are the sorted distinct phones (Y,) and
        clusters (Z,).

    Raises:
        ValueError: If the sequences differ in length or are empty.
    """
    if len(clusters) != len(phones):
        raise ValueError(f"{len(clusters)} cluster labels but {len(phones)} phones")
    if len(clusters) == 0:
        raise ValueError("no frames to score")
    phone_values, y = np.unique(np.asarray(phones), return_inverse=True)
    cluster_values, z = np.unique(np.asarray(clusters), return_inverse=True)
    num_y, num_z = len(phone_values), len(cluster_values)
    flat = y.reshape(-1).astype(np.int64) * num_z + z.reshape(-1)
    counts = np.bincount(flat, minlength=num_y * num_z)
    return counts.reshape(num_y, num_z), phone_values, cluster_values  # (Y, Z)


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a probability vector (zeros ignored)."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _conditional_entropy(counts: np.ndarray) -> float:
    """``H(y | z) = sum_z p(z) H(y | z)`` in nats from (Y, Z) counts (rows: y)."""
    column_totals = counts.sum(axis=0)  # (Z,)
    used = column_totals > 0
    p_y_given_z = counts[:, used] / column_totals[used]  # (Y, Z_used)
    logs = np.log(np.where(p_y_given_z > 0, p_y_given_z, 1.0))  # 0 log 0 = 0
    h_per_cluster = -(p_y_given_z * logs).sum(axis=0)  # (Z_used,)
    return float((column_totals[used] / counts.sum() * h_per_cluster).sum())


def quality_from_counts(counts: np.ndarray) -> ClusterQuality:
    """Compute purities and PNMI from a phone-by-cluster count matrix.

    ``PNMI = I(y; z) / H(y) = 1 - H(y | z) / H(y)``; a cluster holding one phone
    adds exactly 0 to ``H(y | z)``, so perfect labels score exactly 1.

    Args:
        counts: Non-negative counts of shape (Y, Z), rows phones, columns clusters
            (e.g. from :func:`joint_counts`).

    Returns:
        The scores; ``num_clusters_used`` and ``num_phones`` count the non-empty
        columns and rows.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.sum() <= 0 or (counts < 0).any():
        raise ValueError("counts must be a non-negative (Y, Z) matrix with frames")
    total = counts.sum()
    h_y = _entropy(counts.sum(axis=1) / total)
    pnmi = math.nan
    if h_y > 0:
        pnmi = min(max(1.0 - _conditional_entropy(counts) / h_y, 0.0), 1.0)
    return ClusterQuality(
        phone_purity=float(counts.max(axis=0).sum() / total),  # sum_z max_y p(y, z)
        cluster_purity=float(counts.max(axis=1).sum() / total),  # sum_y max_z
        pnmi=pnmi,
        num_frames=int(round(total)),
        num_clusters_used=int((counts.sum(axis=0) > 0).sum()),
        num_phones=int((counts.sum(axis=1) > 0).sum()),
    )


def cluster_quality(
    clusters: Sequence[int], phones: Sequence[object]
) -> ClusterQuality:
    """Score paired per-frame cluster labels and phones.

    Args:
        clusters: Cluster id per frame, shape (N,), all utterances concatenated.
        phones: Reference phone per frame, shape (N,).

    Returns:
        Phone purity, cluster purity and PNMI over the N frames.
    """
    counts, _, _ = joint_counts(clusters, phones)
    return quality_from_counts(counts)


def read_labels(path: PathLike) -> Dict[str, np.ndarray]:
    """Read a labels file: ``<utt> <l_0> <l_1> ...``, one integer per frame.

    Args:
        path: The labels file (UTF-8); blank lines are skipped.

    Returns:
        ``{utt: int64 array (T,)}`` in file order.

    Raises:
        DataDirError: With ``file:line``, on a non-integer label or a repeated
            utterance.
    """
    labels: Dict[str, np.ndarray] = {}
    fix = "write one line per utterance: '<utt> <label_0> <label_1> ...' (integers)."
    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, 1):
            fields = raw.split()
            if not fields:
                continue
            utt = fields[0]
            if utt in labels:
                raise DataDirError(path, "repeated utterance", fix, line_no, utt)
            try:
                labels[utt] = np.array([int(x) for x in fields[1:]], dtype=np.int64)
            except ValueError:
                problem = "a label is not an integer"
                raise DataDirError(path, problem, fix, line_no, utt) from None
    return labels


def read_num_samples(
    utt2dur: Optional[PathLike] = None,
    utt2num_samples: Optional[PathLike] = None,
    sample_rate: int = 16000,
) -> Dict[str, int]:
    """Read utterance lengths in samples from ``utt2num_samples`` or ``utt2dur``.

    Args:
        utt2dur: Kaldi ``utt2dur`` (seconds); samples are ``round(dur * rate)``.
        utt2num_samples: Kaldi ``utt2num_samples`` (integers); takes precedence.
        sample_rate: Sampling rate in Hz, to convert seconds.

    Returns:
        ``{utt: num_samples}``.

    Raises:
        DataDirError: On a malformed line or a value that is not a number >= 0.
    """
    path = utt2num_samples if utt2num_samples is not None else utt2dur
    if path is None:
        raise ValueError("give utt2dur or utt2num_samples")
    in_seconds = utt2num_samples is None
    lengths = {}
    for line in read_two_column_file(path):
        try:
            value = float(line.value) if in_seconds else int(line.value)
        except ValueError:
            value = -1
        if not value >= 0 or not math.isfinite(value):
            unit = "a duration in seconds" if in_seconds else "a number of samples"
            fix = f"the value must be {unit} (>= 0)."
            problem = f"bad value {line.value!r}"
            raise DataDirError(path, problem, fix, line.line_no, line.id)
        lengths[line.id] = int(round(value * sample_rate)) if in_seconds else value
    return lengths


def _common_utterances(
    labels_file: PathLike,
    labels: Sequence[str],
    ctm_file: PathLike,
    ctm: Sequence[str],
) -> List[str]:
    """Return the utterances in both files (logged with counts); raise if none."""
    label_set, ctm_set = set(labels), set(ctm)
    common = sorted(label_set & ctm_set)
    only_labels, only_ctm = sorted(label_set - ctm_set), sorted(ctm_set - label_set)
    logging.info(
        "common_only: scoring the %d utterances in both %s and %s; skipping %d only "
        "in the labels and %d only in the CTM",
        len(common),
        labels_file,
        ctm_file,
        len(only_labels),
        len(only_ctm),
    )
    if not common:
        problem = f"no utterance is also in {ctm_file}"
        fix = "score labels against the CTM of the same data set."
        raise DataDirError(labels_file, problem, fix)
    return common


def _missing_error(
    labels_file: PathLike, ctm_file: PathLike, where: PathLike, missing: List[str]
) -> DataDirError:
    """Build the error for utterances that one file has and the other lacks."""
    shown = ", ".join(repr(utt) for utt in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    problem = f"{len(missing)} utterance(s) missing from {where}: {shown}{more}"
    fix = (
        f"score {labels_file} against the CTM of the same data set ({ctm_file}), or "
        "allow it with common_only=True (--common_only true)."
    )
    return DataDirError(labels_file, problem, fix)


@dataclass(frozen=True)
class _Framing:
    """How :func:`label_quality` counts and checks the frames of an utterance."""

    frame_shift_s: Seconds
    frame_length_s: Seconds
    max_frame_diff: int
    sample_rate: int
    lengths_file: Optional[PathLike]  # utt2num_samples or utt2dur, None: the labels

    def reference_frames(
        self,
        utt: str,
        labels: np.ndarray,
        segments: List[PhoneSegment],
        num_samples: Optional[Dict[str, int]],
    ) -> int:
        """Frames the audio (or, without lengths, the labels) of ``utt`` has."""
        shift_s, length_s = self.frame_shift_s, self.frame_length_s
        if num_samples is None:
            end_s = max(seg.start_s + seg.dur_s for seg in segments)
            spanned = frames_spanned(end_s, shift_s, length_s)
            if spanned > len(labels) + self.max_frame_diff:
                return spanned  # the CTM runs past the labels: report a mismatch
            return len(labels)
        if utt not in num_samples:
            raise DataDirError(
                self.lengths_file,
                "utterance missing",
                "give the utt2dur / utt2num_samples of the labelled data set.",
                utt=utt,
            )
        rate = self.sample_rate
        length, shift = round(length_s * rate), round(shift_s * rate)  # samples
        return kaldi_frame_count(num_samples[utt], length, shift)

    def check(
        self, labels_file: PathLike, utt: str, num_labels: int, num_frames: int
    ) -> None:
        """Raise if the labels and the reference disagree by more than allowed."""
        if abs(num_labels - num_frames) <= self.max_frame_diff:
            return
        source = self.lengths_file or "the CTM's last segment"
        problem = (
            f"{num_labels} labels, but {source} gives {num_frames} frames of "
            f"{self.frame_shift_s} s"
        )
        fix = (
            "labels need one entry per model frame (e.g. 50 Hz for the HuBERT CNN, "
            "not 100 Hz MFCC frames); regenerate them, or set frame_shift / "
            "frame_length to the labels' framing."
        )
        raise DataDirError(labels_file, problem, fix, utt=utt)


def _utterances_to_score(
    labels_file: PathLike,
    labels: Dict[str, np.ndarray],
    ctm_file: PathLike,
    ctm: Dict[str, List[PhoneSegment]],
    common_only: bool,
) -> List[str]:
    """Return the utterances to score: all of them, or those in both files."""
    if common_only:
        return _common_utterances(labels_file, list(labels), ctm_file, list(ctm))
    missing_in_ctm = sorted(set(labels) - set(ctm))
    if missing_in_ctm:
        raise _missing_error(labels_file, ctm_file, ctm_file, missing_in_ctm)
    missing_in_labels = sorted(set(ctm) - set(labels))
    if missing_in_labels:
        raise _missing_error(labels_file, ctm_file, labels_file, missing_in_labels)
    return sorted(labels)


@typechecked
def label_quality(
    labels_file: PathLike,
    ctm_file: PathLike,
    utt2dur: Optional[PathLike] = None,
    utt2num_samples: Optional[PathLike] = None,
    sample_rate: int = 16000,
    frame_shift_s: Seconds = 0.02,
    frame_length_s: Seconds = 0.025,
    max_frame_diff: int = 1,
    common_only: bool = False,
    silence: str = SILENCE,
    merge_stress: bool = True,
    pauses_as_silence: bool = True,
) -> ClusterQuality:
    """Score a labels file against the phones of a CTM.

    Each utterance's reference has one phone per frame (the frame rule of
    :func:`espnet2.ssl.targets.alignments.frame_phones`). Its frame count comes from
    the audio length (``utt2num_samples`` or ``utt2dur``, framed like the model:
    ``(samples - length) // shift + 1``) or, without them, from the labels
    themselves; then only labels that stop before the CTM's last segment are an
    error (a CTM may leave out trailing silence, so longer labels are accepted and
    their extra frames scored as silence). Where the label count and the frame count
    differ by at most ``max_frame_diff``, the frames both cover are scored.

    Args:
        labels_file: ``<utt> <l_0> <l_1> ...``, one integer cluster id per frame.
        ctm_file: Phone CTM of the same utterances (see :func:`read_ctm`).
        utt2dur: Optional Kaldi ``utt2dur`` (seconds) of the utterances.
        utt2num_samples: Optional ``utt2num_samples``; takes precedence over
            ``utt2dur``.
        sample_rate: Sampling rate in Hz of the audio the lengths describe.
        frame_shift_s: Hop of the labels' frames in seconds (0.02: HuBERT CNN).
        frame_length_s: Window of a frame in seconds (0.025: HuBERT CNN).
        max_frame_diff: Largest allowed difference, in frames, between the label
            count and the reference frame count of an utterance.
        common_only: Score only the utterances in both files (logged with counts)
            instead of raising when the utterance sets differ.
        silence: Phone symbol for frames that no segment covers.
        merge_stress: Drop espeak stress marks (see ``normalize_phone``).
        pauses_as_silence: Map espeak pauses to ``silence``.

    Returns:
        The scores over all frames of the scored utterances.

    Raises:
        DataDirError: On a malformed file, an utterance in one file but not the other
            (unless ``common_only``), or a frame-count mismatch; the message names
            the file, the utterance and the fix.
    """
    labels, ctm = read_labels(labels_file), read_ctm(ctm_file)
    lengths_file = utt2num_samples if utt2num_samples is not None else utt2dur
    num_samples = None
    if lengths_file is not None:
        num_samples = read_num_samples(utt2dur, utt2num_samples, sample_rate)
    framing = _Framing(
        frame_shift_s, frame_length_s, max_frame_diff, sample_rate, lengths_file
    )
    phone_options = dict(
        silence=silence, merge_stress=merge_stress, pauses_as_silence=pauses_as_silence
    )
    clusters: List[np.ndarray] = []
    phones: List[str] = []
    for utt in _utterances_to_score(labels_file, labels, ctm_file, ctm, common_only):
        frames = framing.reference_frames(utt, labels[utt], ctm[utt], num_samples)
        framing.check(labels_file, utt, len(labels[utt]), frames)
        count = min(frames, len(labels[utt]))
        clusters.append(labels[utt][:count])
        phones += frame_phones(
            ctm[utt], count, frame_shift_s, frame_length_s, **phone_options
        )
    if not phones:
        raise DataDirError(labels_file, "no frames to score", "check the labels.")
    return cluster_quality(np.concatenate(clusters), phones)
