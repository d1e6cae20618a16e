"""Speech synthesis with libespeak-ng, driven through its C API with ctypes.

The library and its voice data come from the PyPI wheel ``espeakng-loader``
(libespeak-ng 1.52), so no system package or root access is needed. The C API is
documented in ``speak_lib.h`` of espeak-ng; this module uses ``espeak_Initialize``
(synchronous retrieval mode, with phoneme events), ``espeak_SetSynthCallback``,
``espeak_SetVoiceByName``, ``espeak_SetParameter``, ``espeak_ng_SetRandSeed``,
``espeak_Synth``, ``espeak_Synchronize`` and ``espeak_Terminate``.

libespeak-ng keeps process-global state, so synthesis is serialised by one module-level
engine guarded by a lock. That state also carries over from one utterance to the next
(the pitch-flutter phase, the automatic gain and the glottal cycle counter are C
``static`` variables that only a fresh library image resets), which makes the audio of
an utterance depend on everything synthesised before it in the process. To make the
audio a function of ``(text, voice, noise_seed)`` alone, the engine loads a fresh
image of the library for every utterance and unloads it afterwards (measured cost:
under 1 ms on top of about 5 ms of synthesis).

Pitfalls of this wheel that the driver turns into errors:

* ``"en-gb+m1"`` is not a voice name here (``"en+m1"`` and ``"gmw/en+m1"`` are), and a
  failed ``espeak_SetVoiceByName`` silently keeps the previous voice;
* an unknown variant (``"en+nosuch"``) is accepted and silently ignored.

Example:
    >>> result = synthesize("the red cat", Voice("en+m1", rate=160, pitch=45))
    >>> audio_16k = resample_audio(result.audio, result.sample_rate, 16000)
"""

import _ctypes  # CPython's dlclose, which ctypes does not export
import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

import espeakng_loader
import numpy as np
import torch
import torchaudio

Seconds = float

# Values from speak_lib.h (ESPEAK_API_REVISION 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() when data is missing
_EE_OK = 0
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_BUFFER_MS = 0  # 0 = the library default (60 ms per callback buffer)
_INT16_SCALE = 32768.0

RATE_MIN, RATE_MAX = 80, 450  # words per minute (espeakRATE_MINIMUM, _MAXIMUM)


class EspeakError(RuntimeError):
    """libespeak-ng failed, or was asked for something it cannot do."""


class _EventId(ctypes.Union):
    """The ``id`` member of ``espeak_EVENT``: a number, a name or a phoneme."""

    _fields_ = [
        ("number", ctypes.c_int),  # WORD and SENTENCE events
        ("name", ctypes.c_char_p),  # MARK and PLAY events
        ("string", ctypes.c_char * 8),  # PHONEME events, not always NUL-terminated
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (40 bytes on LP64)."""

    _fields_ = [
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the text
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


# int callback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice with its prosody settings.

    Args:
        name: Voice name with an optional variant, e.g. ``"en+m1"``, ``"gmw/en+m1"``
            or ``"en-us+f2"``. ``"en-gb+m1"`` does not exist in this wheel.
        rate: Speaking rate in words per minute (80 to 450, espeak default 175).
        pitch: Base pitch, 0 to 100 (espeak default 50).
        pitch_range: Pitch range, 0 (monotone) to 100 (espeak default 50).
    """

    name: str
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(
                f"Voice name must be a non-empty string, got {self.name!r}"
            )
        for field, low, high in (
            ("rate", RATE_MIN, RATE_MAX),
            ("pitch", 0, 100),
            ("pitch_range", 0, 100),
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Voice {field} must be an int, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"Voice {field}={value} is outside [{low}, {high}]")


@dataclass(frozen=True)
class SynthResult:
    """Audio and phone onsets of one synthesised text.

    Attributes:
        audio: Waveform, float32 of shape (S,), in [-1, 1].
        sample_rate: Sampling rate of ``audio`` in Hz.
        phones: ``(start_seconds, phone)`` pairs in ascending time, one per phoneme
            event; ``phone`` is espeak's mnemonic (e.g. ``"'E"``, ``"D"``, ``"_:"``
            for a pause), stress marks included.
    """

    audio: np.ndarray
    sample_rate: int
    phones: List[Tuple[Seconds, str]]

    @property
    def duration(self) -> Seconds:
        """Length of ``audio`` in seconds."""
        return len(self.audio) / self.sample_rate


def data_path() -> str:
    """Return the espeak-ng-data directory shipped in the ``espeakng-loader`` wheel."""
    return espeakng_loader.get_data_path()


@lru_cache(maxsize=1)
def list_variants() -> Tuple[str, ...]:
    """Return the names of the voice variants (``"m1"``, ``"f3"``, ...) available.

    Returns:
        Sorted variant names, usable after ``+`` in a voice name.
    """
    return tuple(sorted(os.listdir(os.path.join(data_path(), "voices", "!v"))))


def _check_variant(name: str) -> None:
    """Raise EspeakError if ``name`` has a ``+variant`` that does not exist.

    espeak-ng accepts an unknown variant and silently uses the base voice.
    """
    if "+" not in name:
        return
    variant = name.split("+", 1)[1]
    if variant not in list_variants():
        raise EspeakError(
            f"espeak-ng voice {name!r}: unknown variant {variant!r}; espeak-ng would "
            f"silently ignore it. Use one of espeakng_loader's variants, e.g. "
            f"{', '.join(list_variants()[:8])}, ... (see list_variants())."
        )


def _decode_phone(event: _Event) -> str:
    """Return the phoneme mnemonic of a PHONEME event as text."""
    raw = bytes(event.id.string)  # ctypes stops at a NUL, or takes all 8 bytes
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class _Engine:
    """The process-wide libespeak-ng driver (get it with ``_engine()``).

    Every call loads a fresh library image (see the module docstring for why),
    registers the callback, synthesises and unloads the image again.
    """

    def __init__(self, library_path: str, espeak_data_path: str):
        self.library_path = library_path
        self.espeak_data_path = espeak_data_path.encode("utf-8")
        self.lock = threading.Lock()
        self.sample_rate = 0  # Hz, set by espeak_Initialize
        # Kept referenced: a collected callback would crash the library.
        self.callback = _SynthCallback(self._on_audio)
        self._chunks: List[bytes] = []
        self._phones: List[Tuple[int, str]] = []
        self._warned_shared = False

    def _on_audio(self, wav, num_samples, events) -> int:
        """Collect one buffer of int16 audio and its events (called from C)."""
        if wav and num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_PHONEME:
                self._phones.append((event.audio_position, _decode_phone(event)))
            index += 1
        return 0  # 0 = continue synthesis

    def _open(self) -> ctypes.CDLL:
        """Load a fresh library image and initialise it; return the handle."""
        lib = ctypes.CDLL(self.library_path)
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, self.espeak_data_path, options
        )
        if rate < 0:
            self._close(lib, terminate=False)
            raise EspeakError(
                f"espeak_Initialize failed ({rate}) with data at "
                f"{self.espeak_data_path.decode()}; reinstall espeakng-loader."
            )
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(self.callback)
        return lib

    def _close(self, lib: ctypes.CDLL, terminate: bool = True) -> None:
        """Terminate and unload the library image opened by ``_open``."""
        if terminate:
            lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
        self._warn_if_still_loaded()

    def _warn_if_still_loaded(self) -> None:
        """Warn once if another user keeps the library loaded (state would leak)."""
        if self._warned_shared:
            return
        try:
            ctypes.CDLL(self.library_path, mode=os.RTLD_NOLOAD)
        except OSError:
            return  # unloaded, as intended
        self._warned_shared = True
        logging.warning(
            "%s stays loaded after dlclose (another user in this process?); "
            "synthesised audio may depend on what was synthesised before.",
            self.library_path,
        )

    @staticmethod
    def _configure(lib: ctypes.CDLL, voice: Voice, noise_seed: int) -> None:
        """Select the voice and set rate, pitch, range and the noise seed."""
        status = lib.espeak_SetVoiceByName(voice.name.encode("utf-8"))
        if status != _EE_OK:
            raise EspeakError(
                f"espeak_SetVoiceByName({voice.name!r}) failed with status {status}"
                " (2 = not found; espeak-ng would silently keep the previous voice)."
                " Fix: name the language as espeakng-loader's data does, e.g. "
                "'en+m1' or 'gmw/en+m1' (not 'en-gb+m1'), or 'en-us+f2'."
            )
        for param, value in (
            (_PARAM_RATE, voice.rate),
            (_PARAM_PITCH, voice.pitch),
            (_PARAM_RANGE, voice.pitch_range),
        ):
            status = lib.espeak_SetParameter(param, value, 0)
            if status != _EE_OK:
                raise EspeakError(
                    f"espeak_SetParameter({param}, {value}) failed with status "
                    f"{status} for voice {voice}"
                )
        lib.espeak_ng_SetRandSeed(noise_seed)  # breath noise (e.g. whisper variants)

    @staticmethod
    def _speak(lib: ctypes.CDLL, text: str) -> None:
        """Run espeak_Synth and espeak_Synchronize on ``text``, checking both."""
        data = text.encode("utf-8")
        status = lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status} on {text!r}")
        status = lib.espeak_Synchronize()
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synchronize failed with status {status}")

    def synthesize(self, text: str, voice: Voice, noise_seed: int) -> SynthResult:
        """Synthesise ``text``; see the module-level :func:`synthesize`."""
        with self.lock:
            self._chunks, self._phones = [], []
            lib = self._open()
            try:
                self._configure(lib, voice, noise_seed)
                self._speak(lib, text)
            finally:
                self._close(lib)
            pcm = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
            phones = sorted(self._phones, key=lambda item: item[0])  # stable
        audio = pcm.astype(np.float32) / _INT16_SCALE  # (S,) in [-1, 1)
        phone_onsets = [(position_ms / 1000.0, phone) for position_ms, phone in phones]
        return SynthResult(audio, self.sample_rate, phone_onsets)


_ENGINE: Optional[_Engine] = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    """Return the process-wide engine, creating it on first use."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine(espeakng_loader.get_library_path(), data_path())
        return _ENGINE


def synthesize(text: str, voice: Voice, noise_seed: int = 0) -> SynthResult:
    """Synthesise ``text`` with ``voice`` at espeak's native rate.

    The result depends only on the arguments, not on earlier calls (thread-safe;
    calls are serialised).

    Args:
        text: Text to speak (UTF-8; punctuation shapes the intonation).
        voice: Voice name and prosody.
        noise_seed: Seed of espeak's noise generator (breathy voices use it).

    Returns:
        SynthResult with float32 audio (S,) in [-1, 1] at the native rate (22050 Hz)
        and the phone onsets in seconds.

    Raises:
        EspeakError: On an empty text, an unknown voice, a library failure, or when
            no audio comes out.
    """
    if not text or not text.strip():
        raise EspeakError(f"cannot synthesise an empty text ({text!r})")
    if not -(2**31) <= noise_seed < 2**31:
        raise EspeakError(f"noise_seed must fit in 32 bits, got {noise_seed}")
    _check_variant(voice.name)
    result = _engine().synthesize(text, voice, noise_seed)
    if result.audio.size == 0:
        raise EspeakError(f"espeak-ng produced no audio for {text!r} with {voice}")
    return result


@lru_cache(maxsize=8)
def _resampler(orig_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    """Return a cached torchaudio resampler (its sinc kernel is built once)."""
    return torchaudio.transforms.Resample(orig_rate, target_rate)


def resample_audio(
    audio: np.ndarray, orig_rate: int, target_rate: int = 16000
) -> np.ndarray:
    """Resample mono audio with torchaudio's band-limited sinc interpolation.

    Same algorithm and defaults as ``torchaudio.functional.resample``, with the
    kernel cached per rate pair (building it takes ~100 ms, applying it ~4 ms).

    Args:
        audio: Waveform of shape (S,) (or (S, C), averaged to mono), any float dtype.
        orig_rate: Sampling rate of ``audio`` in Hz.
        target_rate: Wanted sampling rate in Hz.

    Returns:
        float32 waveform of shape (ceil(S * target_rate / orig_rate),), clipped to
        [-1, 1].
    """
    if audio.ndim == 2:
        audio = audio.mean(axis=1)  # (S, C) -> (S,)
    if audio.ndim != 1:
        raise ValueError(f"expected audio of shape (S,) or (S, C), got {audio.shape}")
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if orig_rate != target_rate:
        with torch.no_grad():
            waveform = _resampler(orig_rate, target_rate)(waveform)
    return np.clip(waveform.numpy(), -1.0, 1.0).astype(np.float32, copy=False)
