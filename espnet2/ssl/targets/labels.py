"""Frame labels for HuBERT: one cluster id per frame of the SSL model's CNN.

A labels file holds ``utt_id l1 l2 ...`` per line (ESPnet's ``text`` data with
``--token_type word``). Its length per utterance must equal exactly the number of
frames the SSL model's convolutional frontend gives for that utterance's audio
(:func:`espnet2.ssl.frame_geometry.cnn_frame_count` on ``utt2num_samples``), so
labels are written at the CNN's frame rate and checked against it here; the SSL
config then uses ``label_downsampling: 1``.

Features at a multiple of the CNN's rate are downsampled by taking every
``step``-th frame. For 100 Hz Kaldi features (400-sample window, 160-sample
hop) under the 50 Hz wav2vec 2.0 CNN (400-sample receptive field, 320-sample
hop), feature frame ``2t`` covers samples ``[320 t, 320 t + 400)``, exactly the
receptive field of CNN frame ``t``; and for ``S >= 400`` samples the counts agree,
``ceil(K / 2) = C`` with ``K = (S - 400) // 160 + 1`` and
``C = (S - 400) // 320 + 1``, because ``((S - 400) // 160) // 2 == (S - 400) //
320``. This is what ESPnet's ``label_downsampling: 2`` does at training time
(``HuBERTCollateFn``: ``label[::2]``); doing it here lets the counts be checked.

The token list holds the cluster ids ``0 .. k-1`` in id order, then ``<unk>``
(``SSLTask``'s ``TokenIDConverter`` requires it), so token index == cluster id.
ESPnet's ``perform_kmeans.sh`` (@ 11a13824) sorts the tokens by frequency, which
maps cluster ``c`` to another index: harmless for training, but the index in the
model's output no longer names the k-means cluster.

References:
    ESPnet ``egs2/TEMPLATE/asr1/scripts/feats/perform_kmeans.sh`` (stage 5, the
    token list) and ``espnet2/train/collate_fn.py`` (``label_downsampling``).
"""

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile

from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, Shapes, cnn_frame_count

PathLike = Union[str, Path]
UNK = "<unk>"
MAX_LISTED = 10  # utterances named in one error message


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    An interrupted or failed write leaves ``path`` as it was (absent, or the
    previous complete file) and removes the temporary file. The parent directory is
    created when missing.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------- inputs
def read_utt2num_samples(path: PathLike) -> Dict[str, int]:
    """Read ``utt_id num_samples`` lines.

    Args:
        path: The ``utt2num_samples`` file.

    Returns:
        ``{utt: samples}`` in file order.
    """
    result: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[1].isdigit():
                raise ValueError(f"{path}:{number}: expected 'utt_id num_samples'")
            result[fields[0]] = int(fields[1])
    return result


def utt2num_samples_from_wav_scp(
    wav_scp: PathLike, sample_rate: Optional[int] = 16000
) -> Dict[str, int]:
    """Samples per utterance of a ``wav.scp`` (``utt_id path`` lines), from the
    audio headers (``soundfile.info``).

    Args:
        wav_scp: Kaldi ``wav.scp`` with plain file paths (no pipes, no segments).
        sample_rate: Required rate in Hz (the SSL model's); None accepts any.

    Returns:
        ``{utt: samples}`` in file order.
    """
    result: Dict[str, int] = {}
    with open(wav_scp, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split(maxsplit=1)
            if not fields:
                continue
            where = f"{wav_scp}:{number}: utterance '{fields[0]}'"
            if len(fields) != 2 or fields[1].rstrip().endswith("|"):
                raise ValueError(
                    f"{where}: expected 'utt_id audio_path' (pipes are "
                    "not supported; give --utt2num_samples instead)"
                )
            try:
                info = soundfile.info(fields[1].strip())
            except (OSError, RuntimeError) as err:
                raise ValueError(
                    f"{where}: cannot read the audio header: {err}"
                ) from err
            if sample_rate is not None and info.samplerate != sample_rate:
                raise ValueError(
                    f"{where}: {info.samplerate} Hz audio, the SSL "
                    f"model expects {sample_rate} Hz; resample it"
                )
            result[fields[0]] = int(info.frames)
    return result


def label_step(
    feature_frame_rate: float, shapes: Shapes, sample_rate: int = 16000
) -> int:
    """How many feature frames make one CNN frame (2 for 100 Hz features, 50 Hz CNN).

    Args:
        feature_frame_rate: Feature frames per second.
        shapes: The CNN layers; its hop is the product of the strides.
        sample_rate: Audio samples per second.

    Returns:
        The integer ratio of the frame rates.
    """
    cnn_rate = sample_rate / math.prod(stride for _, _, stride in shapes)
    ratio = feature_frame_rate / cnn_rate
    if ratio < 1 - 1e-6 or abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(
            f"feature frame rate {feature_frame_rate} Hz is not a whole multiple of "
            f"the SSL CNN's {cnn_rate:g} Hz; use features at {cnn_rate:g} Hz or a "
            "multiple of it"
        )
    return int(round(ratio))


# ---------------------------------------------------------------- alignment
def align_labels(
    labels: np.ndarray, step: int, num_frames: int, tolerance: int = 0
) -> Tuple[Optional[np.ndarray], int]:
    """Downsample feature-rate labels to the CNN's rate and fit them to its count.

    Args:
        labels: One id per feature frame (T,).
        step: :func:`label_step`; every ``step``-th label is kept (frame 0 first).
        num_frames: The CNN's frame count for the utterance.
        tolerance: Largest allowed ``|difference|``; within it, extra labels are
            trimmed at the end, or the last label repeated to pad.

    Returns:
        The labels (num_frames,), or None when the difference exceeds the
        tolerance (or there is no label to repeat), and the difference
        ``len(labels[::step]) - num_frames``.
    """
    kept = labels[::step]
    diff = len(kept) - num_frames
    if abs(diff) > tolerance or (diff < 0 and len(kept) == 0):
        return None, diff
    if diff > 0:
        kept = kept[:num_frames]
    elif diff < 0:
        kept = np.concatenate([kept, np.repeat(kept[-1:], -diff)])
    return kept, diff


def listing(items: Sequence[str], most: int = MAX_LISTED) -> str:
    """At most ``most`` items joined by commas, with the count of the others."""
    shown = ", ".join(items[:most])
    more = len(items) - most
    return shown + (f" (and {more} more)" if more > 0 else "")


def check_same_utterances(
    feature_utts: Iterable[str], utt2num_samples: Dict[str, int], feats_scp: str
) -> None:
    """Raise ``ValueError`` naming the utterances of the audio without features."""
    have = set(feature_utts)
    missing = [utt for utt in utt2num_samples if utt not in have]
    if missing:
        raise ValueError(
            f"{len(missing)} utterances of the audio list have no features in "
            f"{feats_scp}: {listing(missing)}; dump their features or remove them "
            "from wav.scp"
        )


def write_labels(
    utt_labels: Iterable[Tuple[str, np.ndarray]],
    path: PathLike,
    utt2num_samples: Dict[str, int],
    shapes: Shapes,
    step: int,
    tolerance: int = 0,
) -> Dict[str, int]:
    """Write ``utt_id l1 l2 ...`` per utterance, one label per CNN frame.

    Every utterance of ``utt2num_samples`` must be yielded; others are skipped
    (logged). Written atomically: on any error the file is left as it was.

    Args:
        utt_labels: ``(utt, labels (T,) int)`` at the feature rate.
        path: Output labels file.
        utt2num_samples: Audio samples per utterance (the SSL model's input).
        shapes: The CNN layers.
        step: :func:`label_step`.
        tolerance: See :func:`align_labels`.

    Returns:
        Counts: ``utterances`` and ``frames`` written, ``adjusted`` (within the
        tolerance), ``empty`` (0 CNN frames: shorter than the receptive field)
        and ``skipped`` (features without audio).
    """
    stats = dict(utterances=0, frames=0, adjusted=0, empty=0, skipped=0)
    mismatches: List[str] = []
    seen = set()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for utt, labels in utt_labels:
            if utt not in utt2num_samples:
                stats["skipped"] += 1
                continue
            seen.add(utt)
            expected = cnn_frame_count(utt2num_samples[utt], shapes)
            aligned, diff = align_labels(labels, step, expected, tolerance)
            if aligned is None:
                mismatches.append(f"{utt} ({expected + diff} vs {expected}, {diff:+d})")
                continue
            f.write(" ".join([utt, *map(str, aligned.tolist())]) + "\n")
            stats["utterances"] += 1
            stats["frames"] += len(aligned)
            stats["adjusted"] += diff != 0
            stats["empty"] += expected == 0
        missing = [utt for utt in utt2num_samples if utt not in seen]
        _raise_on_problems(mismatches, missing, tolerance)
    if stats["skipped"]:
        logging.warning(f"{stats['skipped']} utterances with features but no audio")
    if stats["empty"]:
        logging.warning(
            f"{stats['empty']} utterances are shorter than the CNN's "
            "receptive field: no labels (filter them from training)"
        )
    return stats


def _raise_on_problems(
    mismatches: List[str], missing: List[str], tolerance: int
) -> None:
    """The error of :func:`write_labels` for wrong lengths or missing features."""
    if mismatches:
        raise ValueError(
            f"{len(mismatches)} utterances have a label count that differs from "
            f"the SSL CNN's frame count by more than {tolerance} (labels vs CNN "
            f"frames, difference): {listing(mismatches)}; check that the features "
            "come from the same audio (sample rate, no trimming) and the feature "
            "frame rate, or allow small differences with --tolerance"
        )
    if missing:
        raise ValueError(
            f"{len(missing)} utterances of the audio list got no features: "
            f"{listing(missing)}; dump their features or remove them from wav.scp"
        )


# ---------------------------------------------------------------- checking
@dataclass
class LabelCheckReport:
    """What :func:`check_labels` found; ``ok`` when nothing."""

    utterances: int = 0
    mismatches: List[Tuple[str, int, int]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # audio without labels
    extra: List[str] = field(default_factory=list)  # labels without audio
    bad_tokens: List[str] = field(default_factory=list)  # utt: first bad token

    @property
    def ok(self) -> bool:
        """True when every utterance has exactly one valid label per CNN frame."""
        return not (self.mismatches or self.missing or self.extra or self.bad_tokens)

    def lines(self) -> List[str]:
        """A readable report, one problem per line (all of them)."""
        out = [f"{self.utterances} utterances checked"]
        out += [
            f"length {utt}: {n} labels, {expected} CNN frames ({n - expected:+d})"
            for utt, n, expected in self.mismatches
        ]
        out += [
            f"missing {utt}: in the audio list, not in the labels"
            for utt in self.missing
        ]
        out += [
            f"extra {utt}: in the labels, not in the audio list" for utt in self.extra
        ]
        out += [f"token {item}" for item in self.bad_tokens]
        return out


def read_labels(path: PathLike) -> Iterator[Tuple[str, List[str]]]:
    """Yield ``(utt, tokens)`` of a labels file."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                yield fields[0], fields[1:]


def check_labels(
    labels_file: PathLike,
    utt2num_samples: Dict[str, int],
    shapes: Shapes = WAV2VEC2_CNN_SHAPES,
    n_clusters: Optional[int] = None,
) -> LabelCheckReport:
    """Compare a labels file with the CNN frame count of every utterance.

    Args:
        labels_file: ``utt_id l1 l2 ...`` lines.
        utt2num_samples: Audio samples per utterance.
        shapes: The CNN layers.
        n_clusters: If given, every label must be an integer in ``[0, n_clusters)``.

    Returns:
        The report.
    """
    report = LabelCheckReport()
    seen = set()
    valid = {str(i) for i in range(n_clusters)} if n_clusters else None
    for utt, tokens in read_labels(labels_file):
        report.utterances += 1
        seen.add(utt)
        if utt not in utt2num_samples:
            report.extra.append(utt)
            continue
        expected = cnn_frame_count(utt2num_samples[utt], shapes)
        if len(tokens) != expected:
            report.mismatches.append((utt, len(tokens), expected))
        bad = next((t for t in tokens if t not in valid), None) if valid else None
        if bad is not None:
            report.bad_tokens.append(
                f"{utt}: '{bad}' is not a cluster id 0..{n_clusters - 1}"
            )
    report.missing = [utt for utt in utt2num_samples if utt not in seen]
    return report


def write_token_list(path: PathLike, n_clusters: int) -> None:
    """Write ``0`` .. ``k-1`` in id order, then ``<unk>`` (token index == id)."""
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(f"{i}\n" for i in range(n_clusters))
            f.write(f"{UNK}\n")
