"""What makes one SSL training example bad: its audio, and its frame labels.

ESPnet's data loader trains on whatever it reads: a truncated WAV on the part that is
left, a float WAV with NaN samples into non-finite steps, HuBERT labels of the wrong
length cut or padded silently; a stereo or empty file fails deep in the collate or
the CNN with an assertion. The functions here judge one example against
:class:`ExampleRules` (the model's sample rate and CNN) and return a
:class:`Problem` (what is wrong, how to fix it) or None;
:mod:`espnet2.ssl.data.checked_dataset` turns it into an error naming the utterance and
the data file, or skips the example (``--bad_utterances skip``).

The audio checks are those of the stage-1 validator
(:mod:`espnet2.fileio.audio_check`); the label rule is the one labels are written
with (:mod:`espnet2.ssl.targets.labels`): exactly one label per CNN frame, after
``label_downsampling``.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np
import soundfile

from espnet2.fileio.audio_check import (
    NONFINITE_FIX,
    format_problem,
    nonfinite_problem,
    wav_truncation,
)
from espnet2.ssl.frame_geometry import cnn_frame_count

Shapes = Tuple[Tuple[int, int, int], ...]

UNREADABLE_FIX = (
    "re-create the file, or remove the utterance from every file of the data dir "
    "(utils/fix_data_dir.sh); `python -m espnet2.bin.validate_data_dir` finds every "
    "such file."
)


class Problem(NamedTuple):
    """A bad example: ``problem`` (one sentence, no final period) and ``fix``."""

    problem: str
    fix: str


@dataclass(frozen=True)
class ExampleRules:
    """What a good example is for the model being trained.

    Attributes:
        sample_rate: The model's sample rate in Hz (``frontend_conf.fs``).
        cnn_shapes: ``(channels, kernel, stride)`` of the CNN frontend, first layer
            first; None when the model has no CNN frontend (no label count rule).
        label_downsampling: Every n-th label is kept (``collate_fn_conf``).
    """

    sample_rate: int
    cnn_shapes: Optional[Shapes] = None
    label_downsampling: int = 1


def header_problem(
    path: str, rules: ExampleRules
) -> Tuple[Optional[Problem], Optional["soundfile._SoundFileInfo"]]:
    """Check an audio file by its header: readable, complete (WAV), rate, mono, length.

    Args:
        path: The audio file (a ``wav.scp`` value).
        rules: The expected sample rate.

    Returns:
        (the problem or None, the header or None when it cannot be read).
    """
    try:
        info = soundfile.info(path)
    except (soundfile.SoundFileError, RuntimeError, OSError) as err:
        problem = f"cannot read audio file '{path}': {str(err).rstrip('.')}"
        return Problem(problem, UNREADABLE_FIX), None
    truncated = wav_truncation(Path(path))
    if truncated is not None:
        return Problem(f"{truncated} (file '{path}')", UNREADABLE_FIX), info
    if info.samplerate != rules.sample_rate:
        problem = (
            f"sample rate is {info.samplerate} Hz, the model's is {rules.sample_rate} "
            f"Hz (file '{path}')"
        )
        fix = (
            f"resample the audio to {rules.sample_rate} Hz (the recipe's audio "
            "formatting stage does this), or train a model for "
            f"{info.samplerate} Hz (frontend_conf: fs)."
        )
        return Problem(problem, fix), info
    bad = format_problem(info, rules.sample_rate)
    if bad is not None:
        return Problem(f"{bad[0]} (file '{path}')", bad[1]), info
    return None, info


def samples_problem(
    speech: np.ndarray, header_samples: Optional[int] = None
) -> Optional[Problem]:
    """Check loaded audio: one channel, not empty, complete, finite.

    Args:
        speech: The audio as loaded (S,) float; (S, C) for a multi-channel file.
        header_samples: The length its header declares (samples), if known.

    Returns:
        The problem, or None.
    """
    if speech.ndim != 1:
        problem = f"audio has shape {tuple(speech.shape)}, expected (samples,) (mono)"
        fix = "downmix to mono, e.g. `sox in.wav out.wav remix -`, or keep one channel."
        return Problem(problem, fix)
    if speech.size == 0:
        fix = "re-create the file, or remove the utterance from the data dir."
        return Problem("audio has no samples (zero length)", fix)
    if header_samples is not None and len(speech) < header_samples:
        problem = (
            f"file is truncated or corrupt: its header declares {header_samples} "
            f"samples but only {len(speech)} were read"
        )
        return Problem(problem, UNREADABLE_FIX)
    problem = nonfinite_problem(speech)
    return None if problem is None else Problem(problem, NONFINITE_FIX)


def label_count_problem(
    num_labels: int, num_samples: int, rules: ExampleRules
) -> Optional[Problem]:
    """Check the project's label rule: one label per CNN frame of the audio.

    Args:
        num_labels: Labels of the utterance, as in the labels file.
        num_samples: Its audio length in samples.
        rules: The CNN and ``label_downsampling``.

    Returns:
        The problem, or None (also when ``rules.cnn_shapes`` is None).
    """
    if rules.cnn_shapes is None:
        return None
    frames = cnn_frame_count(num_samples, rules.cnn_shapes)
    step = rules.label_downsampling
    kept = -(-num_labels // step)  # len(labels[::step]) = ceil(num_labels / step)
    if kept == frames:
        return None
    counted = "" if step == 1 else f" ({kept} after label_downsampling {step})"
    problem = (
        f"has {num_labels} labels{counted} but its {num_samples} samples give "
        f"{frames} CNN frames ({kept - frames:+d}); the rule is one label per frame"
    )
    fix = (
        "make the labels from this audio with `python -m espnet2.bin.ssl_kmeans apply` "
        "(its --tolerance fits small differences); `ssl_kmeans check` lists every "
        "utterance whose count differs."
    )
    return Problem(problem, fix)


def missing_label_problem(wav_scp: str) -> Problem:
    """The problem of an utterance of ``wav_scp`` that has no line in the labels."""
    problem = f"has audio in {wav_scp} but no line in the labels file"
    fix = (
        "make labels for every utterance (`python -m espnet2.bin.ssl_kmeans apply`; "
        "`ssl_kmeans check` lists the missing ones), or remove the utterance from "
        "wav.scp (utils/fix_data_dir.sh)."
    )
    return Problem(problem, fix)
