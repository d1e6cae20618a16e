"""Dump frame features of a ``wav.scp`` to Kaldi archives, in resumable shards.

The utterances of ``wav.scp`` are split, in file order, into ``nj`` contiguous
shards numbered 1..nj as Kaldi's ``run.pl JOB=1:nj`` numbers jobs. Shard ``i`` writes::

    out_dir/feats.i.ark, feats.i.scp   features (T, D) float32, kaldiio's format
    out_dir/utt2num_frames.i           frames per utterance
    out_dir/feats.i.done               what was dumped (the dumper's description
                                       and precision, the shard's lines)

Within a shard, utterances are computed in batches of similar length, longest first
(``espnet2/ssl/targets/dump_audio.py``), so ``feats.i.ark`` holds them in that order;
``feats.i.scp`` and ``utt2num_frames.i`` list them in wav.scp order. The features of
an utterance do not depend on the batching (``FeatureDumper.extract``), nor on
``nj`` or on which process ran the shard.

Each file is written under a temporary name and renamed when complete, and the done
marker comes last, so an interrupted shard leaves no file that looks finished. A
shard whose marker matches the current dumper and utterance list is skipped on a
re-run; a different model, layer or wav.scp redoes it. When every shard is done,
``feats.scp``, ``utt2num_frames`` and ``feats.yaml`` (feature type, layer, dim,
frame rate, model files) are written for the whole set.

This is the layout of Kaldi's ``steps/make_mfcc.sh`` and of ESPnet's
``perform_kmeans.sh`` feature stage. As in ``make_mfcc.sh``, the scp files name the
archives by absolute path, so they can be read from any working directory (a moved
``out_dir`` is dumped again).
"""

import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np
import yaml
from tqdm import tqdm

from espnet2.fileio.kaldi_data_dir import DataDirError, KaldiLine, read_two_column_file
from espnet2.ssl.targets.dump_audio import padded_batch, shard_batches
from espnet2.ssl.targets.dumpers.base import FeatureDumper, FeatureDumpError
from espnet2.ssl.targets.precision import DEFAULT_TOLERANCE, check_bf16

PathLike = Union[Path, str]
Seconds = float


@dataclass
class DumpSummary:
    """What a finished dump holds.

    Attributes:
        num_utterances: Utterances in ``feats.scp``.
        num_frames: Frames over all utterances.
        feats_scp: The merged ``feats.scp``.
    """

    num_utterances: int
    num_frames: int
    feats_scp: Path


def shard_ranges(num_items: int, nj: int) -> List[range]:
    """Split ``num_items`` into ``nj`` contiguous ranges whose sizes differ by <= 1.

    Args:
        num_items: Items to split (utterances).
        nj: Number of shards, 1..num_items.

    Returns:
        ``nj`` ranges in order; the first ``num_items % nj`` are one item longer.
    """
    if not 1 <= nj <= num_items:
        raise FeatureDumpError(
            f"cannot split {num_items} utterances into {nj} shards. Fix: use "
            f"--nj between 1 and {num_items}."
        )
    size, extra = divmod(num_items, nj)
    starts = [i * size + min(i, extra) for i in range(nj + 1)]
    return [range(starts[i], starts[i + 1]) for i in range(nj)]


def _extract_batch(
    wav_scp: PathLike,
    batch: List[Tuple[KaldiLine, np.ndarray]],
    dumper: FeatureDumper,
) -> List[np.ndarray]:
    """Features of a batch; a failure is re-run alone to name its utterance."""
    speech, lengths = padded_batch(batch)
    try:
        feats = dumper.extract(speech, lengths)
    except FeatureDumpError as err:
        for item in batch if len(batch) > 1 else ():
            _extract_batch(wav_scp, [item], dumper)  # raises for the culprit
        first = batch[0][0]
        names = ", ".join(f"'{line.id}'" for line, _ in batch)
        names += f" ('{first.value}')" if len(batch) == 1 else " (batched)"
        raise FeatureDumpError(f"{_where(wav_scp, first)}{names}: {err}") from None
    for (line, _), matrix in zip(batch, feats):
        if not np.isfinite(matrix).all():
            raise FeatureDumpError(
                f"{_where(wav_scp, line)}'{line.id}' ('{line.value}'): its "
                f"{dumper.name} features contain NaN or Inf. Fix: check the audio "
                "for NaN or Inf samples, and the model for a diverged training run "
                "(NaN losses in its train.log)."
            )
    return feats


def _where(wav_scp: PathLike, line: KaldiLine) -> str:
    """The start of a message about an utterance: ``<scp>:<line>: utterance ``."""
    return f"{wav_scp}:{line.line_no}: utterance "


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # shards may race
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _shard_paths(out_dir: Path, index: int) -> Dict[str, Path]:
    return {
        "ark": out_dir / f"feats.{index}.ark",
        "scp": out_dir / f"feats.{index}.scp",
        "utt2num_frames": out_dir / f"utt2num_frames.{index}",
        "done": out_dir / f"feats.{index}.done",
    }


def _marker(
    description: Dict, index: int, nj: int, lines: Sequence[KaldiLine], out_dir: Path
) -> str:
    """The done-marker text: the dumper, the shard, a digest of its lines, where."""
    listing = "".join(f"{line.id} {line.value}\n" for line in lines)
    content = {
        "dumper": description,
        "out_dir": os.path.abspath(out_dir),
        "shard": index,
        "nj": nj,
        "num_utterances": len(lines),
        "wav_scp_sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest(),
    }
    return yaml.safe_dump(content, sort_keys=True)


def shard_is_done(out_dir: Path, index: int, marker: str) -> bool:
    """Whether shard ``index`` is complete and was made by the same dumper and lines."""
    paths = _shard_paths(out_dir, index)
    if not all(path.is_file() for path in paths.values()):
        return False
    return paths["done"].read_text(encoding="utf-8") == marker


def _final_scp(
    scp: Path, old_ark: Path, new_ark: Path, lines: Sequence[KaldiLine]
) -> str:
    """``scp``'s entries in the order of ``lines``, ``old_ark`` renamed ``new_ark``.

    The archive holds the utterances in the order they were computed (by length);
    the scp lists them in wav.scp order with their byte offsets.
    """
    location_of = {}
    for entry in scp.read_text(encoding="utf-8").splitlines():
        utt, location = entry.split(" ", 1)
        ark, offset = location.rsplit(":", 1)
        assert ark == str(old_ark), (ark, old_ark)
        location_of[utt] = f"{new_ark}:{offset}"
    return "".join(f"{line.id} {location_of[line.id]}\n" for line in lines)


@dataclass
class _Shard:
    """One shard's work: its number, its wav.scp lines and its done-marker text."""

    index: int
    lines: Sequence[KaldiLine]
    marker: str


def plan_shards(
    wav_scp: Path, nj: int, description: Dict, out_dir: Path
) -> List[_Shard]:
    """Read ``wav_scp`` and split it into ``nj`` shards with their done markers."""
    lines = read_two_column_file(wav_scp)
    if not lines:
        raise DataDirError(
            wav_scp, "file has no utterances", "run the data preparation again."
        )
    shards = []
    for index, span in enumerate(shard_ranges(len(lines), nj), 1):
        part = lines[span.start : span.stop]
        marker = _marker(description, index, nj, part, out_dir)
        shards.append(_Shard(index, part, marker))
    return shards


@dataclass
class _ShardOptions:
    """How a shard is computed: batch budget, bf16 tolerance, progress bar."""

    max_samples: int
    bf16_tolerance: float
    show_progress: bool


def _write_batches(
    wav_scp: PathLike,
    shard: _Shard,
    dumper: FeatureDumper,
    options: _ShardOptions,
    writer: kaldiio.WriteHelper,
) -> Dict[str, int]:
    """Compute and write every batch of a shard; the frames per utterance."""
    frames: Dict[str, int] = {}
    progress = tqdm(
        total=len(shard.lines),
        desc=f"{dumper.name} shard {shard.index}",
        unit="utt",
        disable=not options.show_progress,
    )
    with progress:
        for batch in shard_batches(wav_scp, shard.lines, dumper, options.max_samples):
            feats = _extract_batch(wav_scp, batch, dumper)
            if dumper.bf16 and not frames:  # the first batch of the shard
                where = f"{wav_scp} shard {shard.index}: "
                check_bf16(
                    dumper, *padded_batch(batch), feats, options.bf16_tolerance, where
                )
            for (line, _), matrix in zip(batch, feats):
                writer(line.id, matrix)
                frames[line.id] = matrix.shape[0]
            progress.update(len(batch))
    return frames


def _dump_shard(
    wav_scp: PathLike,
    out_dir: Path,
    shard: _Shard,
    dumper: FeatureDumper,
    options: _ShardOptions,
) -> None:
    """Write one shard's ark, scp and utt2num_frames, then its done marker."""
    paths = _shard_paths(out_dir, shard.index)
    paths["done"].unlink(missing_ok=True)
    tmp_ark = paths["ark"].with_name(paths["ark"].name + ".partial")
    tmp_scp = paths["scp"].with_name(paths["scp"].name + ".partial")
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
        frames = _write_batches(wav_scp, shard, dumper, options, writer)
    os.replace(tmp_ark, paths["ark"])
    absolute_ark = Path(os.path.abspath(paths["ark"]))
    _write_text(paths["scp"], _final_scp(tmp_scp, tmp_ark, absolute_ark, shard.lines))
    tmp_scp.unlink()
    counts = "".join(f"{line.id} {frames[line.id]}\n" for line in shard.lines)
    _write_text(paths["utt2num_frames"], counts)
    _write_text(paths["done"], shard.marker)


def merge_shards(
    out_dir: Path, nj: int, description: Dict, wav_scp: PathLike
) -> DumpSummary:
    """Concatenate finished shards into ``feats.scp`` and ``utt2num_frames``.

    Also writes ``feats.yaml``: the dumper's description plus ``nj``,
    ``num_utterances``, ``num_frames`` and ``wav_scp``.

    Args:
        out_dir: The dump directory; shards 1..nj must be done.
        nj: Number of shards.
        description: ``FeatureDumper.describe()`` of the dumper that made them.
        wav_scp: The input scp, recorded in ``feats.yaml``.

    Returns:
        The counts and the merged ``feats.scp``.
    """
    scp_text, frames_text = [], []
    for index in range(1, nj + 1):
        paths = _shard_paths(out_dir, index)
        scp_text.append(paths["scp"].read_text(encoding="utf-8"))
        frames_text.append(paths["utt2num_frames"].read_text(encoding="utf-8"))
    frames = [int(line.split()[1]) for line in "".join(frames_text).splitlines()]
    info = dict(description, nj=nj, num_utterances=len(frames))
    info.update(num_frames=sum(frames), wav_scp=str(wav_scp))
    _write_text(out_dir / "feats.scp", "".join(scp_text))
    _write_text(out_dir / "utt2num_frames", "".join(frames_text))
    _write_text(out_dir / "feats.yaml", yaml.safe_dump(info, sort_keys=False))
    return DumpSummary(len(frames), sum(frames), out_dir / "feats.scp")


def dump_description(dumper: FeatureDumper) -> Dict:
    """What the done markers and ``feats.yaml`` record: the dumper and its precision.

    Args:
        dumper: The dumper, with ``bf16`` set as it will run.

    Returns:
        ``dumper.describe()`` plus ``precision`` (``bfloat16`` or ``float32``).
    """
    return dict(dumper.describe(), precision="bfloat16" if dumper.bf16 else "float32")


def _check_options(nj: int, shard: Optional[int], batch_seconds: Seconds) -> None:
    if shard is not None and not 1 <= shard <= nj:
        raise FeatureDumpError(f"shard {shard} does not exist. Fix: use 1..{nj}.")
    if batch_seconds <= 0:
        raise FeatureDumpError(f"batch_seconds must be > 0, got {batch_seconds}.")


def dump_features(
    wav_scp: PathLike,
    out_dir: PathLike,
    dumper: FeatureDumper,
    nj: int = 1,
    shard: Optional[int] = None,
    batch_seconds: Seconds = 100.0,
    show_progress: Optional[bool] = None,
    bf16_tolerance: float = DEFAULT_TOLERANCE,
) -> Optional[DumpSummary]:
    """Dump the features of every utterance of ``wav_scp`` (see the module doc).

    Runs in this process, shard after shard; ``espnet2/ssl/targets/launch.py``
    runs the shards in parallel processes, each calling this with ``shard``.

    Args:
        wav_scp: ``<utt> <audio file>`` lines, sorted (16 kHz mono files).
        out_dir: Where the archives go (created if needed).
        dumper: The features to compute (with ``bf16`` set as it should run).
        nj: Number of shards (jobs), 1..number of utterances.
        shard: Run only this shard (1..nj), e.g. ``JOB`` of ``run.pl JOB=1:nj``;
            None runs every unfinished shard.
        batch_seconds: Padded audio per batch in seconds (``B * longest``); lower
            it if the GPU runs out of memory.
        show_progress: A progress bar per shard; None shows it when stderr is a
            terminal.
        bf16_tolerance: With ``dumper.bf16``: the largest relative error of the
            bf16 features of each shard's first batch against float32.

    Returns:
        The merged summary once every shard is done, else None (other shards are
        still to run; the last one to finish merges).

    Raises:
        DataDirError: A malformed wav.scp, or audio that is missing, unreadable,
            multi-channel, not 16 kHz or shorter than one frame.
        FeatureDumpError: Bad options, features that are NaN or Inf, or bf16
            features beyond the tolerance.
    """
    wav_scp, out_dir = Path(wav_scp), Path(out_dir)
    _check_options(nj, shard, batch_seconds)
    description = dump_description(dumper)
    shards = plan_shards(wav_scp, nj, description, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    options = _ShardOptions(
        int(batch_seconds * dumper.sample_rate), bf16_tolerance, show
    )
    for item in shards if shard is None else [shards[shard - 1]]:
        if shard_is_done(out_dir, item.index, item.marker):
            logging.info(f"{out_dir}: shard {item.index}/{nj} is done; skipped")
            continue
        for name in ("feats.scp", "utt2num_frames", "feats.yaml"):
            (out_dir / name).unlink(missing_ok=True)  # stale once a shard changes
        _dump_shard(wav_scp, out_dir, item, dumper, options)
        logging.info(f"{out_dir}: shard {item.index}/{nj} written")
    pending = [s.index for s in shards if not shard_is_done(out_dir, s.index, s.marker)]
    if pending:
        logging.info(f"{out_dir}: shards {pending} are still to run; not merged yet")
        return None
    return merge_shards(out_dir, nj, description, wav_scp)


def merge_finished(wav_scp: PathLike, out_dir: PathLike, nj: int) -> DumpSummary:
    """Merge shards that other processes dumped, after checking their markers.

    The dumper is read from shard 1's done marker (the launcher never loads the
    model); every shard must be done with that dumper and its own lines.

    Args:
        wav_scp: The scp the shards were made from.
        out_dir: Their directory.
        nj: The number of shards.

    Returns:
        The merged summary.

    Raises:
        FeatureDumpError: A shard is missing or was made by another dumper or
            from other lines.
    """
    wav_scp, out_dir = Path(wav_scp), Path(out_dir)
    first = _shard_paths(out_dir, 1)["done"]
    description = None
    if first.is_file():
        description = yaml.safe_load(first.read_text(encoding="utf-8"))["dumper"]
    shards = plan_shards(wav_scp, nj, description, out_dir)
    pending = [s.index for s in shards if not shard_is_done(out_dir, s.index, s.marker)]
    if description is None or pending:
        raise FeatureDumpError(
            f"{out_dir}: shards {pending or [1]} of {nj} are not done with the same "
            "features and lines as the others. Fix: run the dump again; finished "
            "shards are kept."
        )
    return merge_shards(out_dir, nj, description, wav_scp)
