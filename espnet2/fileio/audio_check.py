"""Integrity checks of one audio file: complete, decodable, right format.

libsndfile (through ``soundfile``) opens a truncated WAV without complaint and reads
whatever frames are left, and a cut FLAC fails only when the missing frames are
decoded. These checks find both before a data loader does, and say what is wrong in
one sentence that callers (the data-dir validator, the data loaders) put into their
own error messages with the file, the utterance and the fix.

Uncompressed RIFF/WAVE files are judged by their header (declared data size against
the bytes present) and by reading their last frame; other formats are decoded whole.
Truncated OGG/Vorbis cannot be detected: its length comes from the last page present.
Only floating-point subtypes (``FLOAT``, ``DOUBLE``) can store NaN or infinite samples
(a PCM sample is always a finite integer), so only they are decoded for that check.
"""

from pathlib import Path
from typing import BinaryIO, Optional, Tuple

import numpy as np
import soundfile

# Data-chunk sizes that streaming writers (e.g. sox to a pipe) leave in the header.
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_DECODE_BLOCK_FRAMES = 65536
# Subtypes that can hold NaN or infinity (libsndfile names).
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
NONFINITE_FIX = (
    "re-create the file from its source (NaN and infinity come from a failed "
    "processing step), or remove the utterance from every file and run "
    "utils/fix_data_dir.sh."
)


def wav_data_chunk(f: BinaryIO) -> Optional[Tuple[int, int]]:
    """Find the ``data`` chunk of a RIFF/WAVE stream.

    Returns:
        (offset of the audio bytes, declared size in bytes), or None when the stream
        is not RIFF/WAVE or has no data chunk.
    """
    if f.read(4) != b"RIFF" or f.read(8)[4:] != b"WAVE":
        return None
    while True:
        header = f.read(8)
        if len(header) < 8:
            return None
        chunk_bytes = int.from_bytes(header[4:], "little")
        if header[:4] == b"data":
            return f.tell(), chunk_bytes
        f.seek(chunk_bytes + chunk_bytes % 2, 1)  # chunks are padded to even sizes


def wav_truncation(path: Path) -> Optional[str]:
    """Compare the data size a RIFF/WAVE header declares with the bytes present.

    libsndfile silently reads whatever part of a truncated WAV is left, so this is how
    a cut file is noticed. Non-RIFF files and streaming headers (size 0 or 2**32 - 1)
    are not judged.

    Args:
        path: The audio file.

    Returns:
        A problem sentence when the file is shorter than its header says, else None.
    """
    with path.open("rb") as f:
        chunk = wav_data_chunk(f)
    if chunk is None or chunk[1] in _WAV_UNKNOWN_SIZES:
        return None
    present = path.stat().st_size - chunk[0]
    if chunk[1] <= present:
        return None
    return (
        f"file is truncated: its header declares {chunk[1]} bytes of audio but only "
        f"{present} are present"
    )


def decode_problem(path: Path, info: "soundfile._SoundFileInfo") -> Optional[str]:
    """Check that the audio frames can be read, not only the header.

    Uncompressed RIFF/WAVE files are judged by their header (any byte is a valid PCM
    sample, so reading them whole would find nothing more) and by reading their last
    frame. Other formats (FLAC, OGG, ...) are decoded whole, in blocks.

    Args:
        path: The audio file.
        info: Its header, from ``soundfile.info``.

    Returns:
        A problem sentence when the file is truncated or corrupt, else None.
    """
    problem = wav_truncation(path)
    if problem is not None or info.frames == 0:
        return problem
    decoded_frames = 0
    try:
        with soundfile.SoundFile(str(path)) as f:
            if f.format in ("WAV", "WAVEX") and info.subtype.startswith(
                ("PCM", "FLOAT")
            ):
                f.seek(max(info.frames - 1, 0))
                decoded_frames = info.frames - 1 + len(f.read(1))
            else:
                for block in f.blocks(blocksize=_DECODE_BLOCK_FRAMES):
                    decoded_frames += len(block)
    except (soundfile.SoundFileError, RuntimeError) as err:
        return f"cannot decode the audio: {str(err).rstrip('.')}"
    if decoded_frames < info.frames:
        return (
            f"file is truncated or corrupt: its header declares {info.frames} frames "
            f"but only {decoded_frames} can be decoded"
        )
    return None


def format_problem(
    info: "soundfile._SoundFileInfo", sample_rate: int
) -> Optional[Tuple[str, str]]:
    """Sample rate, channels and length of a readable file: (problem, fix) or None."""
    if info.samplerate != sample_rate:
        return (
            f"sample rate is {info.samplerate} Hz, expected {sample_rate} Hz",
            f"resample the audio to {sample_rate} Hz (the recipe's audio formatting "
            f"stage does this) or pass --sample_rate {info.samplerate}.",
        )
    if info.channels != 1:
        return (
            f"audio has {info.channels} channels, expected 1 (mono)",
            "downmix to mono, e.g. `sox in.wav out.wav remix -`, or keep one channel.",
        )
    if info.frames == 0:
        return (
            "audio file has no samples (zero length)",
            "re-create the file, or remove the utterance from every file and run "
            "utils/fix_data_dir.sh.",
        )
    return None


def _nonfinite(samples: np.ndarray) -> Tuple[int, int]:
    """(number of NaN/inf values, index of the first frame holding one, or -1)."""
    if samples.size == 0:
        return 0, -1
    bad = ~np.isfinite(samples.reshape(len(samples), -1))  # (S,) or (S, C) -> (S, C)
    if not bad.any():
        return 0, -1
    return int(bad.sum()), int(np.argmax(bad.any(axis=1)))


def _nonfinite_sentence(count: int, first: int) -> str:
    return (
        f"audio has {count} samples that are NaN or infinite, the first at sample "
        f"{first}"
    )


def nonfinite_problem(samples: np.ndarray) -> Optional[str]:
    """NaN or infinite values in decoded audio.

    Args:
        samples: Decoded audio (S,) or (S, C), floating point.

    Returns:
        A problem sentence with the count and the first bad sample index, else None.
    """
    count, first = _nonfinite(samples)
    return _nonfinite_sentence(count, first) if count else None


def file_nonfinite_problem(
    path: Path, info: "soundfile._SoundFileInfo"
) -> Optional[str]:
    """Decode a floating-point audio file and look for NaN or infinite samples.

    Args:
        path: The audio file.
        info: Its header, from ``soundfile.info``; files whose subtype is not in
            ``FLOAT_SUBTYPES`` are not read (they cannot hold such values).

    Returns:
        The sentence of :func:`nonfinite_problem` for the whole file, or None.
    """
    if info.subtype not in FLOAT_SUBTYPES:
        return None
    total, first, offset = 0, -1, 0
    with soundfile.SoundFile(str(path)) as f:
        for block in f.blocks(blocksize=_DECODE_BLOCK_FRAMES, dtype="float64"):
            count, block_first = _nonfinite(block)
            if count and first < 0:
                first = offset + block_first
            total, offset = total + count, offset + len(block)
    return _nonfinite_sentence(total, first) if total else None
