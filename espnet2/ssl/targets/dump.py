"""Dump frame features of a ``wav.scp`` to Kaldi archives, in resumable shards.

The utterances of ``wav.scp`` are split, in file order, into ``nj`` contiguous
shards numbered 1..nj as Kaldi's ``run.pl JOB=1:nj`` numbers jobs. Shard ``i`` writes::

    out_dir/feats.i.ark, feats.i.scp   features (T, D) float32, kaldiio's format
    out_dir/utt2num_frames.i           frames per utterance
    out_dir/feats.i.done               what was dumped (the dumper's description)

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
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np
import soundfile
import torch
import yaml
from tqdm import tqdm

from espnet2.fileio.kaldi_data_dir import DataDirError, KaldiLine, read_two_column_file
from espnet2.ssl.targets.dumpers.base import FeatureDumper, FeatureDumpError

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


def _audio_error(
    wav_scp: PathLike, line: KaldiLine, problem: str, fix: str
) -> DataDirError:
    return DataDirError(wav_scp, problem, fix, line.line_no, line.id)


def load_audio(wav_scp: PathLike, line: KaldiLine, sample_rate: int) -> np.ndarray:
    """Read one utterance's audio as float32 in [-1, 1].

    Args:
        wav_scp: The scp, for messages.
        line: Its line: the utterance id and the audio path.
        sample_rate: The rate the features need (16000).

    Returns:
        Samples (S,) float32.

    Raises:
        DataDirError: A command (``... |``) or archive entry instead of a file, a
            missing or unreadable file, several channels or another sample rate;
            the message names the scp line, the utterance and the file.
    """
    path = line.value
    if path.endswith("|") or ".ark:" in path:
        raise _audio_error(
            wav_scp, line, f"'{path}' is a command or archive entry, not a file",
            "dump the audio to files first (scripts/audio/format_wav_scp.sh).",
        )  # fmt: skip
    if not Path(path).is_file():
        raise _audio_error(
            wav_scp, line, f"audio file '{path}' does not exist",
            "fix the path in wav.scp, or remove the utterance with "
            "utils/fix_data_dir.sh.",
        )  # fmt: skip
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise _audio_error(
            wav_scp, line, f"cannot read audio file '{path}' ({err})",
            "re-create the file, or check it with espnet2.bin.validate_data_dir.",
        ) from None  # fmt: skip
    if rate != sample_rate:
        raise _audio_error(
            wav_scp, line, f"'{path}' is sampled at {rate} Hz, not {sample_rate} Hz",
            f"resample the data to {sample_rate} Hz in data preparation (e.g. "
            f"scripts/audio/format_wav_scp.sh --fs {sample_rate}).",
        )  # fmt: skip
    if samples.shape[1] != 1:
        raise _audio_error(
            wav_scp, line, f"'{path}' has {samples.shape[1]} channels, not 1",
            "convert the audio to mono in data preparation.",
        )  # fmt: skip
    return samples[:, 0]


def _check_long_enough(
    wav_scp: PathLike, line: KaldiLine, num_samples: int, dumper: FeatureDumper
) -> None:
    shortest = dumper.min_samples()
    if shortest is not None and num_samples < shortest:
        raise _audio_error(
            wav_scp, line,
            f"'{line.value}' has {num_samples} samples, fewer than the {shortest} "
            f"that one {dumper.name} frame needs",
            "remove utterances this short in data preparation (min_wav_duration).",
        )  # fmt: skip


def _batches(
    wav_scp: PathLike,
    lines: Sequence[KaldiLine],
    dumper: FeatureDumper,
    max_samples: int,
) -> Iterator[List[Tuple[KaldiLine, np.ndarray]]]:
    """Read the audio in order and yield batches whose padded size fits the budget.

    A batch of B utterances costs ``B * longest`` samples; one utterance longer
    than the budget is a batch of its own.
    """
    batch: List[Tuple[KaldiLine, np.ndarray]] = []
    longest = 0
    for line in lines:
        audio = load_audio(wav_scp, line, dumper.sample_rate)
        _check_long_enough(wav_scp, line, len(audio), dumper)
        longest_with = max(longest, len(audio))
        if batch and (len(batch) + 1) * longest_with > max_samples:
            yield batch
            batch, longest_with = [], len(audio)
        batch.append((line, audio))
        longest = longest_with
    if batch:
        yield batch


def _extract_batch(
    wav_scp: PathLike,
    batch: List[Tuple[KaldiLine, np.ndarray]],
    dumper: FeatureDumper,
) -> List[np.ndarray]:
    """Features of a batch; a failure is re-run alone to name its utterance."""
    lengths = torch.tensor([len(audio) for _, audio in batch], dtype=torch.long)
    speech = torch.zeros(len(batch), int(lengths.max()))  # (B, S)
    for row, (_, audio) in enumerate(batch):
        speech[row, : len(audio)] = torch.from_numpy(audio)
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
    tmp = path.with_name(path.name + ".tmp")
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


def _retarget_scp(scp: Path, old_ark: Path, new_ark: Path) -> str:
    """The lines of ``scp`` with ``old_ark:offset`` turned into ``new_ark:offset``."""
    lines = []
    for entry in scp.read_text(encoding="utf-8").splitlines():
        utt, location = entry.split(" ", 1)
        ark, offset = location.rsplit(":", 1)
        assert ark == str(old_ark), (ark, old_ark)
        lines.append(f"{utt} {new_ark}:{offset}\n")
    return "".join(lines)


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


def _dump_shard(
    wav_scp: PathLike,
    out_dir: Path,
    shard: _Shard,
    dumper: FeatureDumper,
    max_samples: int,
    show_progress: bool,
) -> None:
    """Write one shard's ark, scp and utt2num_frames, then its done marker."""
    paths = _shard_paths(out_dir, shard.index)
    paths["done"].unlink(missing_ok=True)
    tmp_ark = paths["ark"].with_name(paths["ark"].name + ".partial")
    tmp_scp = paths["scp"].with_name(paths["scp"].name + ".partial")
    frames = []
    progress = tqdm(
        total=len(shard.lines),
        desc=f"{dumper.name} shard {shard.index}",
        unit="utt",
        disable=not show_progress,
    )
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer, progress:
        for batch in _batches(wav_scp, shard.lines, dumper, max_samples):
            for (line, _), feats in zip(batch, _extract_batch(wav_scp, batch, dumper)):
                writer(line.id, feats)
                frames.append(f"{line.id} {feats.shape[0]}\n")
            progress.update(len(batch))
    os.replace(tmp_ark, paths["ark"])
    absolute_ark = Path(os.path.abspath(paths["ark"]))
    _write_text(paths["scp"], _retarget_scp(tmp_scp, tmp_ark, absolute_ark))
    tmp_scp.unlink()
    _write_text(paths["utt2num_frames"], "".join(frames))
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


def dump_features(
    wav_scp: PathLike,
    out_dir: PathLike,
    dumper: FeatureDumper,
    nj: int = 1,
    shard: Optional[int] = None,
    batch_seconds: Seconds = 100.0,
    show_progress: Optional[bool] = None,
) -> Optional[DumpSummary]:
    """Dump the features of every utterance of ``wav_scp`` (see the module doc).

    Args:
        wav_scp: ``<utt> <audio file>`` lines, sorted (16 kHz mono files).
        out_dir: Where the archives go (created if needed).
        dumper: The features to compute.
        nj: Number of shards (jobs), 1..number of utterances.
        shard: Run only this shard (1..nj), e.g. ``JOB`` of ``run.pl JOB=1:nj``;
            None runs every unfinished shard.
        batch_seconds: Padded audio per batch in seconds (``B * longest``); lower
            it if the GPU runs out of memory.
        show_progress: A progress bar per shard; None shows it when stderr is a
            terminal.

    Returns:
        The merged summary once every shard is done, else None (other shards are
        still to run; the last one to finish merges).

    Raises:
        DataDirError: A malformed wav.scp, or audio that is missing, unreadable,
            multi-channel, not 16 kHz or shorter than one frame.
        FeatureDumpError: Bad options, or features that are NaN or Inf.
    """
    wav_scp, out_dir = Path(wav_scp), Path(out_dir)
    if shard is not None and not 1 <= shard <= nj:
        raise FeatureDumpError(f"shard {shard} does not exist. Fix: use 1..{nj}.")
    if batch_seconds <= 0:
        raise FeatureDumpError(f"batch_seconds must be > 0, got {batch_seconds}.")
    description = dumper.describe()
    shards = plan_shards(wav_scp, nj, description, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    max_samples = int(batch_seconds * dumper.sample_rate)
    for item in shards if shard is None else [shards[shard - 1]]:
        if shard_is_done(out_dir, item.index, item.marker):
            logging.info(f"{out_dir}: shard {item.index}/{nj} is done; skipped")
            continue
        for name in ("feats.scp", "utt2num_frames", "feats.yaml"):
            (out_dir / name).unlink(missing_ok=True)  # stale once a shard changes
        _dump_shard(wav_scp, out_dir, item, dumper, max_samples, show)
        logging.info(f"{out_dir}: shard {item.index}/{nj} written")
    pending = [s.index for s in shards if not shard_is_done(out_dir, s.index, s.marker)]
    if pending:
        logging.info(f"{out_dir}: shards {pending} are still to run; not merged yet")
        return None
    return merge_shards(out_dir, nj, description, wav_scp)
