"""Waveform augmentation of SSL pretraining batches: noise, speed and volume.

``WaveformAugmentation`` perturbs each training utterance, each perturbation applied
independently with its own probability, in this order:

* **speed** (``speed_prob``, ``speed_factors``): resampling as Kaldi's
  ``perturb_data_dir_speed.sh`` does with sox ``speed``: the audio is read as if
  recorded at ``factor x sample_rate`` and resampled to ``sample_rate``, so tempo and
  pitch change together and the duration becomes ``duration / factor``. Frame labels
  follow: each frame of the new audio takes the label of the old frame nearest in time
  (new frame ``j``'s centre ``x factor``), one label per CNN frame of the new length;
* **noise** (``noise_scp``, ``noise_prob``, ``noise_snr_db``): a random recording of
  a noise data dir's ``wav.scp`` from a random offset, tiled when shorter than the
  utterance, scaled to an SNR drawn uniformly in dB between the powers of the
  utterance and of that noise segment (mean squares over all their samples);
* **volume** (``volume_prob``, ``volume_db``): a gain drawn uniformly in dB.

The collate (``espnet2/ssl/data/collate.py``, ``collate_fn_conf: {augmentation:
{...}}``)
applies it to training batches only, before cropping, and records what was applied in
``batch["augmented"]``: (B,) int64 bit flags ``AUG_NOISE | AUG_SPEED | AUG_VOLUME``;
``ESPnetSSLModel.forward`` reports their shares (:func:`augmentation_stats`). A
probability of 0 draws nothing and changes nothing; randomness comes from torch's
global generator (seeded by ESPnet every epoch) or an injected one.

References:
    T. Ko, V. Peddinti, D. Povey, S. Khudanpur, "Audio augmentation for speech
    recognition", Interspeech 2015 (speed perturbation 0.9/1.0/1.1; Kaldi
    ``utils/data/perturb_data_dir_speed.sh``, sox ``speed``).
    S. Chen et al., "WavLM", arXiv:2110.13900 (noise added during SSL pretraining).
    A. H. Liu et al., arXiv:2409.16295 (a compute-budget study of SSL: augmentation
    does not replace more data).
"""

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
import torch
import torchaudio.functional
from typeguard import typechecked

from espnet2.ssl.frame_geometry import frame_count

AUG_NOISE = 1
AUG_SPEED = 2
AUG_VOLUME = 4
AUGMENTED_KEY = "augmented"  # the batch key of the (B,) int64 flags
FLAG_NAMES = (("noise", AUG_NOISE), ("speed", AUG_SPEED), ("volume", AUG_VOLUME))
_NOISE_FIX = (
    "point augmentation.noise_scp at a Kaldi-style wav.scp of mono noise "
    "recordings at the model's sample rate (mini_synth: local/data.sh writes "
    "data/noise/wav.scp), or set augmentation.noise_prob: 0"
)


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"augmentation.{name} must be in [0, 1], got {value}")


def _check_range(name: str, values: Sequence[float]) -> Tuple[float, float]:
    if len(values) != 2 or not values[0] <= values[1]:
        raise ValueError(
            f"augmentation.{name} must be [low, high] with low <= high, got "
            f"{list(values)}"
        )
    return float(values[0]), float(values[1])


class NoiseBank:
    """The recordings of a noise ``wav.scp``, checked at start and read when used.

    Every file's header is checked when the bank is built (readable, at
    ``sample_rate``, mono, not empty); a file is read with soundfile (as ESPnet's
    sound reader) the first time it is drawn and then cached.
    """

    @typechecked
    def __init__(self, noise_scp: str, sample_rate: int):
        """Reads and checks the list.

        Args:
            noise_scp: Kaldi-style ``<noise id> <audio path>`` lines; relative paths
                start at the working directory, as in ESPnet's readers.
            sample_rate: Required sample rate in Hz.

        Raises:
            ValueError: When the list is missing or empty, or a file is unreadable,
                at another rate, multi-channel or empty; names the file and the fix.
        """
        self.noise_scp, self.sample_rate = noise_scp, sample_rate
        self.entries = self._read_list(Path(noise_scp))
        for noise_id, path in self.entries:
            self._check_header(noise_id, path)
        self._cache: Dict[int, np.ndarray] = {}

    def _read_list(self, scp: Path) -> List[Tuple[str, str]]:
        if not scp.is_file():
            raise ValueError(f"noise list {scp} does not exist: {_NOISE_FIX}")
        entries = []
        with open(scp, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                fields = line.strip().split(maxsplit=1)
                if len(fields) == 1:
                    raise ValueError(
                        f"{scp} line {line_no}: noise '{fields[0]}' has no audio "
                        f"path: write '<noise id> <path>' lines; {_NOISE_FIX}"
                    )
                if fields:
                    entries.append((fields[0], fields[1]))
        if not entries:
            raise ValueError(f"noise list {scp} lists no recordings: {_NOISE_FIX}")
        return entries

    def _error(self, noise_id: str, path: str, problem: str) -> ValueError:
        return ValueError(
            f"noise '{noise_id}' ({path}, listed in {self.noise_scp}) {problem}: "
            f"{_NOISE_FIX}"
        )

    def _check_header(self, noise_id: str, path: str) -> None:
        try:
            info = soundfile.info(path)
        except (soundfile.SoundFileError, RuntimeError, OSError) as error:
            raise self._error(noise_id, path, f"cannot be read ({error})") from None
        if info.samplerate != self.sample_rate:
            raise self._error(
                noise_id,
                path,
                f"is at {info.samplerate} Hz, not {self.sample_rate} Hz (resample "
                "it, e.g. `sox in.wav -r 16000 out.flac`)",
            )
        if info.channels != 1:
            raise self._error(noise_id, path, f"has {info.channels} channels, not 1")
        if info.frames == 0:
            raise self._error(noise_id, path, "holds no samples")

    def __len__(self) -> int:
        """Number of recordings."""
        return len(self.entries)

    def audio(self, index: int) -> np.ndarray:
        """Recording ``index`` (0-based, in list order) as float64 (N,), N > 0."""
        if index not in self._cache:
            noise_id, path = self.entries[index]
            try:
                samples = soundfile.read(path, dtype="float64", always_2d=False)[0]
            except (soundfile.SoundFileError, RuntimeError, OSError) as error:
                raise self._error(noise_id, path, f"cannot be read ({error})") from None
            if samples.ndim != 1 or samples.size == 0:
                raise self._error(noise_id, path, f"has shape {samples.shape}")
            if not np.isfinite(samples).all():
                raise self._error(noise_id, path, "holds NaN or infinite samples")
            self._cache[index] = samples
        return self._cache[index]


def stretch_labels(
    labels: np.ndarray,
    factor: float,
    num_frames: int,
    frame_field: int,
    frame_stride: int,
) -> np.ndarray:
    """Frame labels of speed-perturbed audio: each new frame takes the old frame
    nearest in time.

    Args:
        labels: Labels (L,) of the original audio, one per model frame.
        factor: Speed factor (> 1 faster: the audio became ``1 / factor`` as long).
        num_frames: Model frames of the perturbed audio (its label count).
        frame_field: Receptive field of a frame (samples).
        frame_stride: Hop between frames (samples).

    Returns:
        Labels (num_frames,) with ``labels``' dtype: new frame ``j`` (centre
        ``j * stride + field / 2`` samples) takes old frame ``i = round((centre *
        factor - field / 2) / stride)``, clamped to ``[0, L - 1]``; (0,) when L = 0.
    """
    if len(labels) == 0:
        return labels[:0]
    centres = np.arange(num_frames) * frame_stride + frame_field / 2
    old = np.rint((centres * factor - frame_field / 2) / frame_stride)
    return labels[np.clip(old, 0, len(labels) - 1).astype(np.int64)]


def augmentation_stats(flags: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Shares of a batch's utterances with any and with each augmentation.

    Args:
        flags: (B,) int64 bit flags (``AUG_NOISE | AUG_SPEED | AUG_VOLUME``).

    Returns:
        ``aug_share``, ``aug_noise_share``, ``aug_speed_share``,
        ``aug_volume_share``: 0-dim float32 tensors in [0, 1] on ``flags``' device
        (0 for an empty batch), computed without a host read.
    """
    flags = flags.detach().long()
    count = max(flags.numel(), 1)
    stats = {"aug_share": (flags != 0).sum().float() / count}
    for name, bit in FLAG_NAMES:
        stats[f"aug_{name}_share"] = ((flags & bit) != 0).sum().float() / count
    return stats


class WaveformAugmentation:
    """Noise, speed and volume perturbation of one utterance and its frame labels.

    The constructor's arguments are the keys of ``collate_fn_conf.augmentation``;
    the collate sets ``sample_rate``, ``frame_field``, ``frame_stride`` and
    ``generator``.
    """

    @typechecked
    def __init__(
        self,
        noise_scp: Optional[str] = None,
        noise_prob: float = 0.0,
        noise_snr_db: Sequence[float] = (5.0, 20.0),
        speed_prob: float = 0.0,
        speed_factors: Sequence[float] = (0.9, 1.1),
        volume_prob: float = 0.0,
        volume_db: Sequence[float] = (-6.0, 6.0),
        sample_rate: int = 16000,
        frame_field: int = 400,
        frame_stride: int = 320,
        generator: Optional[torch.Generator] = None,
    ):
        """Checks the options and, with ``noise_prob`` > 0, the noise files.

        Args:
            noise_scp: ``wav.scp`` of the noise recordings (mono, at
                ``sample_rate``); needed when ``noise_prob`` > 0.
            noise_prob: Probability of adding noise to an utterance.
            noise_snr_db: ``[low, high]`` SNR in dB, drawn uniformly.
            speed_prob: Probability of speed perturbation.
            speed_factors: Factors drawn uniformly (sox ``speed``; 1.1: 10 % faster
                and higher, duration / 1.1). ``factor x sample_rate`` is rounded to
                whole Hz, and that exact ratio is used.
            volume_prob: Probability of a volume change.
            volume_db: ``[low, high]`` gain in dB, drawn uniformly.
            sample_rate: Sample rate of the audio in Hz.
            frame_field: Receptive field of a model frame (samples; 400).
            frame_stride: Hop between model frames (samples; 320).
            generator: Random source (torch's global one when None).

        Raises:
            ValueError: On a probability outside [0, 1], a bad range or factor, or
                a bad noise list or file (naming it and the fix).
        """
        for name, prob in (
            ("noise_prob", noise_prob),
            ("speed_prob", speed_prob),
            ("volume_prob", volume_prob),
        ):
            _check_prob(name, prob)
        self.noise_snr_db = _check_range("noise_snr_db", noise_snr_db)
        self.volume_db = _check_range("volume_db", volume_db)
        self.speed_rates = self._speed_rates(speed_factors, sample_rate)
        self.noise_prob, self.speed_prob = noise_prob, speed_prob
        self.volume_prob, self.sample_rate = volume_prob, sample_rate
        self.frame_field, self.frame_stride = frame_field, frame_stride
        self.generator = generator
        self.noises = None
        if noise_prob > 0:
            if noise_scp is None:
                raise ValueError(
                    f"augmentation.noise_prob > 0 needs a noise_scp: {_NOISE_FIX}"
                )
            self.noises = NoiseBank(noise_scp, sample_rate)
            logging.info(f"noise augmentation: {len(self.noises)} recordings")

    @staticmethod
    def _speed_rates(factors: Sequence[float], sample_rate: int) -> List[int]:
        """``factor x sample_rate`` in whole Hz for each factor."""
        if not factors:
            raise ValueError("augmentation.speed_factors must not be empty")
        rates = [int(round(f * sample_rate)) for f in factors]
        if min(factors) <= 0 or min(rates) <= 0:
            raise ValueError(
                f"augmentation.speed_factors must be positive, got {list(factors)}"
            )
        return rates

    def _happens(self, prob: float) -> bool:
        """One Bernoulli draw; none at all for a probability of 0 or 1."""
        if prob <= 0.0 or prob >= 1.0:
            return prob >= 1.0
        return bool(torch.rand(1, generator=self.generator) < prob)

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand(1, generator=self.generator))

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def __call__(
        self, speech: np.ndarray, labels: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, Optional[np.ndarray], int]:
        """Perturbs one utterance.

        Args:
            speech: Waveform (S,) float.
            labels: Its frame labels (L,) at the model's frame rate, or None.

        Returns:
            The waveform (S',) with ``speech``'s dtype (S' = S unless speed
            changed it), its labels (one per model frame of S' samples, when
            ``labels`` had any; None when None), and the int bit flags of what was
            applied. Nothing applied: the very input arrays, flags 0.
        """
        flags, audio = 0, speech
        if self._happens(self.speed_prob):
            audio, labels = self._speed(audio, labels)
            flags |= AUG_SPEED
        if self._happens(self.noise_prob):
            noisy = self._noise(audio)
            if noisy is not None:
                audio, flags = noisy, flags | AUG_NOISE
        if self._happens(self.volume_prob):
            gain_db = self._uniform(*self.volume_db)
            audio = audio.astype(np.float64) * 10.0 ** (gain_db / 20.0)
            flags |= AUG_VOLUME
        if flags:
            audio = audio.astype(speech.dtype, copy=False)
        return audio, labels, flags

    def _speed(
        self, speech: np.ndarray, labels: Optional[np.ndarray]
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Resamples ``factor x sample_rate`` -> ``sample_rate``; labels follow."""
        orig_rate = self.speed_rates[self._randint(len(self.speed_rates))]
        waveform = torch.from_numpy(np.asarray(speech, dtype=np.float64))
        resampled = torchaudio.functional.resample(
            waveform, orig_rate, self.sample_rate
        ).numpy()
        if labels is not None:
            num_frames = frame_count(
                len(resampled), self.frame_field, self.frame_stride
            )
            labels = stretch_labels(
                labels,
                orig_rate / self.sample_rate,
                num_frames,
                self.frame_field,
                self.frame_stride,
            )
        return resampled, labels

    def _noise(self, speech: np.ndarray) -> Optional[np.ndarray]:
        """Speech plus a tiled noise segment at a random SNR; None when either is
        silent (no SNR to reach)."""
        if len(speech) == 0:
            return None
        snr_db = self._uniform(*self.noise_snr_db)
        noise = self.noises.audio(self._randint(len(self.noises)))
        offset = self._randint(len(noise))
        segment = noise[(offset + np.arange(len(speech))) % len(noise)]  # tiled
        speech = np.asarray(speech, dtype=np.float64)
        speech_power, noise_power = np.mean(speech**2), np.mean(segment**2)
        if speech_power == 0.0 or noise_power == 0.0:
            return None
        scale = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
        return speech + scale * segment
