"""Noise recordings for augmentation on mini_synth: babble, coloured noise and hum.

Written as a Kaldi-style data dir ``<out_dir>`` (``wav.scp``, ``utt2spk``,
``spk2utt``, ``utt2dur``; the noise kind is the speaker) with 16 kHz mono PCM_16 FLAC
under ``<audio_dir>``, for ``collate_fn_conf.augmentation.noise_scp``
(``espnet2/ssl/data/augment.py``). With the defaults, about 2.3 minutes:

* ``babble-NN``: ``babble_clips`` clips of ``babble_seconds``, each the sum of 3 to 5
  talkers; a talker is a stream of espeak utterances (train voices of the corpus,
  sentences of the grammar, from this module's own seed, so the corpus's sets are
  untouched) with short pauses, starting at a random point;
* ``white-00``, ``pink-00``, ``brown-00``: ``coloured_seconds`` each of Gaussian noise
  with a flat, 1/f and 1/f^2 power spectrum;
* ``hum-00``, ``hum-01``: ``hum_seconds`` each of 50 and 60 Hz mains hum (5 harmonics
  with random phases, falling as 1/k) over faint white noise.

Every clip is scaled to ``RMS_LEVEL`` and clipped to +-``PEAK_LIMIT``; the mixing
scales it to the drawn SNR anyway. The noise is a function of the config (its seed
gives the same samples); ``<audio_dir>/noise.json`` records it, and a rerun with the
same config and every file present returns at once.

References: S. Chen et al., "WavLM", arXiv:2110.13900 (noise and overlapped speech in
SSL pretraining); T. Ko et al., Interspeech 2015 (Kaldi-style augmentation data).
"""

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
from typeguard import typechecked

from espnet2.fileio.kaldi_data_dir import DataDirEntry, data_dir_lines
from espnet2.ssl.synth.corpus import (
    SetSummary,
    _write_audio_atomic,
    _write_lines_atomic,
    default_speakers,
    split_speakers,
)
from espnet2.ssl.synth.espeak import resample_audio, synthesize
from espnet2.ssl.synth.grammar import sentence_stream, speech_prompt

Seconds = float

NOISE_FILES = ("wav.scp", "utt2spk", "spk2utt", "utt2dur")
NOISE_MANIFEST = "noise.json"
NOISE_MANIFEST_VERSION = 1
COLOURS = (("white", 0.0), ("pink", 1.0), ("brown", 2.0))  # (name, power exponent)
HUM_FREQUENCIES = (50.0, 60.0)  # Hz, mains in Europe / North America
HUM_HARMONICS = 5
HUM_FLOOR_DB = -30.0  # white noise under the hum, dB relative to it
RMS_LEVEL = 0.05  # -26 dBFS
PEAK_LIMIT = 0.99
BABBLE_PAUSE_SECONDS = (0.05, 0.4)  # pause after each utterance of a talker


@dataclass(frozen=True)
class NoiseConfig:
    """What noise to generate; the recordings are a function of these values.

    Args:
        seed: Seed of the babble sentences, voices and mixing and of the noise.
        babble_clips: Number of babble clips.
        babble_seconds: Length of each babble clip (seconds).
        min_talkers: Fewest talkers in a babble clip.
        max_talkers: Most talkers in a babble clip.
        babble_pool: Distinct utterances synthesised for all babble talkers.
        coloured_seconds: Length of each white, pink and brown noise (seconds).
        hum_seconds: Length of each 50 / 60 Hz hum (seconds).
        sample_rate: Sampling rate in Hz.
    """

    seed: int = 0
    babble_clips: int = 6
    babble_seconds: Seconds = 10.0
    min_talkers: int = 3
    max_talkers: int = 5
    babble_pool: int = 16
    coloured_seconds: Seconds = 20.0
    hum_seconds: Seconds = 10.0
    sample_rate: int = 16000

    def __post_init__(self):
        for name in ("babble_seconds", "coloured_seconds", "hum_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 1 <= self.min_talkers <= self.max_talkers:
            raise ValueError(
                f"need 1 <= min_talkers ({self.min_talkers}) <= max_talkers "
                f"({self.max_talkers})"
            )
        if self.babble_clips < 0 or self.babble_pool < 1:
            raise ValueError("babble_clips must be >= 0 and babble_pool >= 1")

    def num_samples(self, seconds: Seconds) -> int:
        """``seconds`` in samples at ``sample_rate``, rounded."""
        return int(round(seconds * self.sample_rate))


def _normalise(audio: np.ndarray) -> np.ndarray:
    """Scaled to ``RMS_LEVEL``, clipped to +-``PEAK_LIMIT``, float32."""
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
    scaled = audio * (RMS_LEVEL / max(rms, 1e-12))
    return np.clip(scaled, -PEAK_LIMIT, PEAK_LIMIT).astype(np.float32)


def coloured_noise(
    num_samples: int, exponent: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise with a ``1 / f^exponent`` power spectrum.

    Args:
        num_samples: Length (samples).
        exponent: 0 white, 1 pink, 2 brown (red).
        rng: Source of the noise.

    Returns:
        float32 (num_samples,) at ``RMS_LEVEL``, no DC.
    """
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    bins = np.arange(len(spectrum), dtype=np.float64)
    bins[0] = 1.0
    spectrum *= bins ** (-exponent / 2.0)  # amplitude ~ f^(-exponent / 2)
    spectrum[0] = 0.0
    return _normalise(np.fft.irfft(spectrum, n=num_samples))


def mains_hum(
    num_samples: int, frequency: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Mains hum: ``HUM_HARMONICS`` harmonics of ``frequency`` over faint noise.

    Args:
        num_samples: Length (samples).
        frequency: Fundamental in Hz (50 or 60).
        sample_rate: Sampling rate in Hz.
        rng: Source of the phases and the noise floor.

    Returns:
        float32 (num_samples,) at ``RMS_LEVEL``.
    """
    t = np.arange(num_samples) / sample_rate
    hum = np.zeros(num_samples)
    for k in range(1, HUM_HARMONICS + 1):
        hum += np.sin(2 * np.pi * k * frequency * t + rng.uniform(0, 2 * np.pi)) / k
    floor = rng.standard_normal(num_samples) * np.sqrt(np.mean(hum**2))
    return _normalise(hum + floor * 10.0 ** (HUM_FLOOR_DB / 20.0))


def _babble_pool(config: NoiseConfig, rng: random.Random) -> List[np.ndarray]:
    """``babble_pool`` espeak utterances of the corpus's train voices."""
    voices = [speaker.voice for speaker in split_speakers(default_speakers())["train"]]
    sentences = sentence_stream(rng)
    pool = []
    for _ in range(config.babble_pool):
        result = synthesize(
            speech_prompt(next(sentences)), rng.choice(voices), rng.randrange(2**31)
        )
        audio = resample_audio(result.audio, result.sample_rate, config.sample_rate)
        pool.append(audio / max(np.sqrt(np.mean(audio**2)), 1e-12))  # unit RMS
    return pool


def _talker(
    pool: List[np.ndarray], num_samples: int, sample_rate: int, rng: random.Random
) -> np.ndarray:
    """One talker: pool utterances with pauses, from a random start, (num_samples,)."""
    pieces: List[np.ndarray] = []
    start, total = None, 0
    while start is None or total < start + num_samples:
        utterance = pool[rng.randrange(len(pool))]
        pause = np.zeros(int(rng.uniform(*BABBLE_PAUSE_SECONDS) * sample_rate))
        if start is None:
            start = rng.randrange(len(utterance))  # talkers do not start together
        pieces += [utterance, pause]
        total += len(utterance) + len(pause)
    return np.concatenate(pieces)[start : start + num_samples]


def babble(
    pool: List[np.ndarray], config: NoiseConfig, rng: random.Random
) -> np.ndarray:
    """One babble clip: the sum of 3 to 5 talkers (``min_talkers``-``max_talkers``).

    Args:
        pool: Unit-RMS utterances (S_i,) at ``config.sample_rate``.
        config: Clip length, talker counts, sample rate.
        rng: Source of the talker count, utterances, pauses and starts.

    Returns:
        float32 (babble_seconds x sample_rate,) at ``RMS_LEVEL``.
    """
    num_samples = config.num_samples(config.babble_seconds)
    talkers = rng.randint(config.min_talkers, config.max_talkers)
    mix = sum(
        _talker(pool, num_samples, config.sample_rate, rng) for _ in range(talkers)
    )
    return _normalise(mix)


def noise_clips(config: NoiseConfig) -> List[Tuple[str, str, np.ndarray]]:
    """Every noise clip as ``(noise id, kind, float32 audio (S,))``, sorted by id."""
    rng = random.Random(f"mini_synth/noise/{config.seed}")  # not the corpus's streams
    clips = []
    if config.babble_clips:
        pool = _babble_pool(config, rng)
        for index in range(config.babble_clips):
            clips.append((f"babble-{index:02d}", "babble", babble(pool, config, rng)))
    for name, exponent in COLOURS:
        generator = np.random.default_rng(rng.randrange(2**32))
        audio = coloured_noise(
            config.num_samples(config.coloured_seconds), exponent, generator
        )
        clips.append((f"{name}-00", name, audio))
    for index, frequency in enumerate(HUM_FREQUENCIES):
        generator = np.random.default_rng(rng.randrange(2**32))
        num_samples = config.num_samples(config.hum_seconds)
        audio = mains_hum(num_samples, frequency, config.sample_rate, generator)
        clips.append((f"hum-{index:02d}", "hum", audio))
    return sorted(clips, key=lambda clip: clip[0])


def _is_complete(out_dir: Path, audio_dir: Path, config: NoiseConfig) -> bool:
    """True when the manifest matches and every file of the data dir is there."""
    try:
        manifest = json.loads((audio_dir / NOISE_MANIFEST).read_text("utf-8"))
        SetSummary(**manifest["summary"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # missing or damaged: rebuild
    if {k: v for k, v in manifest.items() if k != "summary"} != _manifest(
        config, out_dir
    ):
        logging.info("%s differs from the requested noise", audio_dir / NOISE_MANIFEST)
        return False
    if not all((out_dir / name).is_file() for name in NOISE_FILES):
        return False
    with open(out_dir / "wav.scp", encoding="utf-8") as f:
        return all(Path(line.split(" ", 1)[1].strip()).is_file() for line in f)


def _manifest(config: NoiseConfig, out_dir: Path) -> dict:
    """What noise.json records besides the summary."""
    return {
        "format_version": NOISE_MANIFEST_VERSION,
        "config": asdict(config),
        "out_dir": str(out_dir),
    }


def _write_clips(
    clips: List[Tuple[str, str, np.ndarray]], audio_dir: Path, sample_rate: int
) -> List[DataDirEntry]:
    """Writes each clip as FLAC; removes other FLAC files of ``audio_dir``."""
    entries = []
    for noise_id, kind, audio in clips:
        path = audio_dir / f"{noise_id}.flac"
        _write_audio_atomic(path, audio, sample_rate, "flac")
        entries.append(
            DataDirEntry(noise_id, str(path), "", kind, len(audio) / sample_rate)
        )
    written = {entry.audio for entry in entries}
    for path in audio_dir.glob("*.flac"):
        if str(path) not in written:
            path.unlink()
    return entries


@typechecked
def build_noise_dir(
    config: NoiseConfig,
    out_dir: Union[str, Path],
    audio_dir: Union[str, Path],
) -> SetSummary:
    """Generates the noise data dir, or returns at once if an identical one is there.

    Args:
        config: What to generate.
        out_dir: The data dir to write, e.g. ``data/noise``.
        audio_dir: Where the FLAC files and ``noise.json`` go (only noise there:
            other FLAC files in it are removed).

    Returns:
        The recordings, kinds (as speakers) and seconds.

    Raises:
        EspeakError: If the babble synthesis fails.
    """
    out_dir, audio_dir = Path(out_dir).absolute(), Path(audio_dir).absolute()
    if _is_complete(out_dir, audio_dir, config):
        logging.info("noise in %s is complete and up to date; nothing to do", out_dir)
        manifest = json.loads((audio_dir / NOISE_MANIFEST).read_text("utf-8"))
        return SetSummary(**manifest["summary"])
    audio_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (audio_dir / NOISE_MANIFEST).unlink(missing_ok=True)
    entries = _write_clips(noise_clips(config), audio_dir, config.sample_rate)
    lines: Dict[str, List[str]] = data_dir_lines(entries, seconds_digits=7)
    for name in NOISE_FILES:
        _write_lines_atomic(out_dir / name, lines[name])
    summary = SetSummary(
        num_utterances=len(entries),
        num_speakers=len({entry.speaker for entry in entries}),
        seconds=sum(entry.seconds for entry in entries),
    )
    logging.info(
        "noise: %d recordings of %d kinds, %.2f minutes in %s",
        summary.num_utterances,
        summary.num_speakers,
        summary.minutes,
        out_dir,
    )
    manifest = dict(_manifest(config, out_dir), summary=asdict(summary))
    _write_lines_atomic(
        audio_dir / NOISE_MANIFEST, [json.dumps(manifest, indent=2, sort_keys=True)]
    )
    return summary
