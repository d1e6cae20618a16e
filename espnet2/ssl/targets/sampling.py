"""Reading dumped features one utterance at a time, and sampling frames for k-means.

:func:`sample_frames` picks a seeded ``fraction`` of the utterances (ESPnet's
``portion``, 0.1 in its recipes) and, if they hold more than ``max_frames`` frames,
a seeded uniform subset of those frames. Frame counts come from the
``utt2num_frames`` written next to ``feats.scp`` (or from a first reading pass), so
the chosen frames are copied straight into one preallocated ``(N, D)`` array while
the utterances are read one by one: memory is the sample plus one utterance, where
ESPnet's ``learn_kmeans.py`` concatenates every matrix (espnet/espnet#5613).

References:
    ESPnet ``egs2/TEMPLATE/asr1/pyscripts/utils/learn_kmeans.py`` @ 1e043bb7
    (``--percent``: ``ceil(len(feats) * percent)`` utterances; it samples with
    Python's ``random`` after seeding NumPy, so its seed has no effect there).
"""

import logging
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np
import yaml
from tqdm import tqdm

PathLike = Union[str, Path]
FEATS_YAML = "feats.yaml"  # written by the feature dumper next to feats.scp
UTT2NUM_FRAMES = "utt2num_frames"


# ---------------------------------------------------------------- reading
def read_scp_keys(feats_scp: PathLike) -> List[str]:
    """Utterance ids of a Kaldi scp file, in file order, without reading matrices.

    Args:
        feats_scp: ``utt_id ark_path:offset`` per line.

    Returns:
        The ids; a duplicate or an empty file raises ``ValueError``.
    """
    keys: List[str] = []
    with open(feats_scp, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split(maxsplit=1)
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{feats_scp}:{number}: expected 'utt_id ark:offset'")
            keys.append(fields[0])
    if not keys:
        raise ValueError(f"{feats_scp} lists no utterances")
    seen = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"{feats_scp}: utterance '{key}' is listed twice")
        seen.add(key)
    return keys


def read_feats_info(feats_scp: PathLike) -> Dict[str, Any]:
    """The ``feats.yaml`` next to ``feats_scp`` (feature type, layer, dim, frame
    rate as the dumper wrote them), or ``{}`` when there is none."""
    path = Path(feats_scp).parent / FEATS_YAML
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        info = yaml.safe_load(f)
    return info if isinstance(info, dict) else {}


def read_utt2num_frames(feats_scp: PathLike) -> Optional[Dict[str, int]]:
    """The ``utt2num_frames`` next to ``feats_scp`` as ``{utt: frames}``, if any."""
    path = Path(feats_scp).parent / UTT2NUM_FRAMES
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        pairs = (line.split() for line in f if line.strip())
        return {utt: int(frames) for utt, frames in pairs}


def check_features(
    feats: np.ndarray, utt: str, feats_scp: PathLike, dim: Optional[int] = None
) -> None:
    """Raise ``ValueError`` naming the utterance unless ``feats`` is a finite
    ``(T, dim)`` matrix.

    Args:
        feats: One utterance's features (T, D).
        utt: Its id, for the message.
        feats_scp: The scp it came from, for the message.
        dim: The expected D; None accepts any.
    """
    where = f"utterance '{utt}' in {feats_scp}"
    if feats.ndim != 2:
        raise ValueError(
            f"{where}: features must be a (frames, dim) matrix, got "
            f"shape {feats.shape}"
        )
    if dim is not None and feats.shape[1] != dim:
        raise ValueError(
            f"{where}: features have dimension {feats.shape[1]}, expected {dim} "
            "(every utterance must come from the same feature type and layer)"
        )
    bad = feats.size - int(np.isfinite(feats).sum())
    if bad:
        raise ValueError(
            f"{where}: {bad} of {feats.size} feature values are NaN or Inf; "
            "recompute this utterance's features (check its audio) or remove it"
        )


def _load(loader: Any, utt: str, feats_scp: PathLike) -> np.ndarray:
    """``loader[utt]`` as float32, with errors that name the utterance."""
    try:
        feats = loader[utt]
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{feats_scp}: cannot read the features of utterance '{utt}' "
            f"({type(err).__name__}: {err}); re-run the feature dump"
        ) from err
    return np.asarray(feats, dtype=np.float32)


def iter_features(
    feats_scp: PathLike, progress: bool = False
) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(utt, feats (T, D) float32)`` in scp order, one utterance at a time.

    Every matrix is checked (2-D, same D as the first, finite).

    Args:
        feats_scp: Kaldi scp of feature matrices.
        progress: Show a tqdm bar over utterances.
    """
    keys = read_scp_keys(feats_scp)
    loader = kaldiio.load_scp(str(feats_scp))
    dim = None
    for utt in tqdm(keys, desc="features", unit="utt", disable=not progress):
        feats = _load(loader, utt, feats_scp)
        check_features(feats, utt, feats_scp, dim)
        dim = feats.shape[1]
        yield utt, feats


# ---------------------------------------------------------------- sampling
def choose_utterances(utt_ids: Sequence[str], fraction: float, seed: int) -> List[str]:
    """A seeded random ``fraction`` of ``utt_ids``, kept in their original order.

    Args:
        utt_ids: All utterance ids.
        fraction: In (0, 1]; ``ceil(fraction * len(utt_ids))`` are kept, as ESPnet's
            ``learn_kmeans.py --percent`` (its recipes' ``portion``, 0.1).
        seed: Seed of the NumPy generator.

    Returns:
        The chosen ids.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(1, math.ceil(fraction * len(utt_ids)))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(utt_ids), size=count, replace=False))
    return [utt_ids[i] for i in chosen]


def _frame_counts(utts: Sequence[str], feats_scp: PathLike, loader: Any) -> List[int]:
    """Frames per utterance: from ``utt2num_frames`` if present, else by reading."""
    known = read_utt2num_frames(feats_scp) or {}
    if all(utt in known for utt in utts):
        return [known[utt] for utt in utts]
    logging.info(f"no complete {UTT2NUM_FRAMES} next to {feats_scp}: reading twice")
    return [len(_load(loader, utt, feats_scp)) for utt in utts]


def sample_frames(
    feats_scp: PathLike,
    fraction: float = 0.1,
    max_frames: Optional[int] = 1_000_000,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """A seeded random sample of frames for fitting k-means.

    Chooses utterances with :func:`choose_utterances`; if they hold more than
    ``max_frames`` frames, keeps a uniform random subset of ``max_frames`` of their
    frames. Utterances are read one at a time into one preallocated array, so the
    memory is the sample itself (``N * D * 4`` bytes) plus one utterance.

    Args:
        feats_scp: Kaldi scp of ``(T, D)`` feature matrices.
        fraction: Share of utterances, in (0, 1].
        max_frames: Cap on the number of frames; None for no cap.
        seed: Seed of the choice of utterances and frames.
        progress: Show a tqdm bar.

    Returns:
        ``(N, D)`` float32 frames, in scp order.
    """
    utts = choose_utterances(read_scp_keys(feats_scp), fraction, seed)
    rng = np.random.default_rng([seed, 1])  # a stream apart from the utterances'
    loader = kaldiio.load_scp(str(feats_scp))
    counts = _frame_counts(utts, feats_scp, loader)
    total = sum(counts)
    keep = None  # global frame indices to keep, sorted; None keeps all
    if max_frames is not None and total > max_frames:
        keep = np.sort(rng.choice(total, size=max_frames, replace=False))
    out: Optional[np.ndarray] = None
    start = filled = 0
    for utt, count in tqdm(
        list(zip(utts, counts)), desc="sample", unit="utt", disable=not progress
    ):
        feats = _load(loader, utt, feats_scp)
        check_features(feats, utt, feats_scp, None if out is None else out.shape[1])
        if len(feats) != count:
            raise ValueError(
                f"{feats_scp}: utterance '{utt}' has {len(feats)} frames but "
                f"{UTT2NUM_FRAMES} says {count}; re-run the feature dump"
            )
        if out is None:
            out = np.empty(
                (total if keep is None else len(keep), feats.shape[1]), dtype=np.float32
            )
        rows = feats if keep is None else feats[_local_rows(keep, start, count)]
        out[filled : filled + len(rows)] = rows
        start, filled = start + count, filled + len(rows)
    logging.info(f"sampled {filled} of {total} frames from {len(utts)} utterances")
    return out[:filled]


def _local_rows(keep: np.ndarray, start: int, count: int) -> np.ndarray:
    """Rows of one utterance (global frames ``start .. start+count-1``) in ``keep``."""
    lo, hi = np.searchsorted(keep, [start, start + count])
    return keep[lo:hi] - start
