"""The audio side of a feature dump: header checks, reading, batches by length.

Every problem names the wav.scp line, the utterance, the file and the fix
(:class:`DataDirError`). A shard's headers are read first, in file order (so the
first bad file is the one reported, and the lengths are known without decoding);
the batches are then planned by length (``batching.length_sorted_batches``) and
their audio decoded a batch ahead in a thread (``batching.read_ahead``).
"""

from pathlib import Path
from typing import Iterator, List, Sequence, Tuple, Union

import numpy as np
import soundfile
import torch

from espnet2.fileio.kaldi_data_dir import DataDirError, KaldiLine
from espnet2.ssl.targets.batching import length_sorted_batches, read_ahead
from espnet2.ssl.targets.dumpers.base import FeatureDumper

PathLike = Union[Path, str]


def _audio_error(
    wav_scp: PathLike, line: KaldiLine, problem: str, fix: str
) -> DataDirError:
    return DataDirError(wav_scp, problem, fix, line.line_no, line.id)


def _checked_path(wav_scp: PathLike, line: KaldiLine) -> str:
    """The audio file of a wav.scp line; commands, archives and missing files raise."""
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
    return path


def _unreadable(wav_scp: PathLike, line: KaldiLine, err: Exception) -> DataDirError:
    return _audio_error(
        wav_scp, line, f"cannot read audio file '{line.value}' ({err})",
        "re-create the file, or check it with espnet2.bin.validate_data_dir.",
    )  # fmt: skip


def _check_format(
    wav_scp: PathLike, line: KaldiLine, rate: int, channels: int, sample_rate: int
) -> None:
    """Raise unless the file is mono at ``sample_rate``."""
    path = line.value
    if rate != sample_rate:
        raise _audio_error(
            wav_scp, line, f"'{path}' is sampled at {rate} Hz, not {sample_rate} Hz",
            f"resample the data to {sample_rate} Hz in data preparation (e.g. "
            f"scripts/audio/format_wav_scp.sh --fs {sample_rate}).",
        )  # fmt: skip
    if channels != 1:
        raise _audio_error(
            wav_scp, line, f"'{path}' has {channels} channels, not 1",
            "convert the audio to mono in data preparation.",
        )  # fmt: skip


def audio_num_samples(wav_scp: PathLike, line: KaldiLine, dumper: FeatureDumper) -> int:
    """Samples of one utterance from its file header, with the checks of the header.

    Args:
        wav_scp: The scp, for messages.
        line: Its line: the utterance id and the audio path.
        dumper: The dumper, for its sample rate and shortest input.

    Returns:
        The number of samples the header declares.

    Raises:
        DataDirError: As :func:`load_audio`, and for audio shorter than one frame.
    """
    path = _checked_path(wav_scp, line)
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise _unreadable(wav_scp, line, err) from None
    _check_format(wav_scp, line, info.samplerate, info.channels, dumper.sample_rate)
    _check_long_enough(wav_scp, line, info.frames, dumper)
    return info.frames


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
    path = _checked_path(wav_scp, line)
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise _unreadable(wav_scp, line, err) from None
    _check_format(wav_scp, line, rate, samples.shape[1], sample_rate)
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


def shard_batches(
    wav_scp: PathLike,
    lines: Sequence[KaldiLine],
    dumper: FeatureDumper,
    max_samples: int,
) -> Iterator[List[Tuple[KaldiLine, np.ndarray]]]:
    """Batches of ``(line, audio)`` by length (``batching.length_sorted_batches``).

    The headers are checked in file order first, so the first bad file of the
    shard is the one reported; the audio is then read a batch ahead in a thread.
    """
    lengths = [audio_num_samples(wav_scp, line, dumper) for line in lines]
    plan = length_sorted_batches(
        lengths, max_samples, equal_lengths=not dumper.padding_invariant
    )

    def load(indices: List[int]) -> List[Tuple[KaldiLine, np.ndarray]]:
        batch = []
        for index in indices:
            audio = load_audio(wav_scp, lines[index], dumper.sample_rate)
            _check_long_enough(wav_scp, lines[index], len(audio), dumper)
            batch.append((lines[index], audio))
        return batch

    return read_ahead(load, plan)


def padded_batch(
    batch: List[Tuple[KaldiLine, np.ndarray]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Waveforms (B, S) zero-padded and their lengths (B,) in samples."""
    lengths = torch.tensor([len(audio) for _, audio in batch], dtype=torch.long)
    speech = torch.zeros(len(batch), int(lengths.max()))  # (B, S)
    for row, (_, audio) in enumerate(batch):
        speech[row, : len(audio)] = torch.from_numpy(audio)
    return speech, lengths
