"""Tests of the ctypes driver of libespeak-ng (espnet2/ssl/synth/espeak.py)."""

import ctypes
import threading

import numpy as np
import pytest

from espnet2.ssl.synth import espeak
from espnet2.ssl.synth.espeak import (
    EspeakError,
    Voice,
    list_variants,
    resample_audio,
    synthesize,
)

TEXT = "the red cat sat on the mat."


def test_synthesis_returns_float32_audio_in_unit_range_at_the_reported_rate():
    result = synthesize(TEXT, Voice("en+m1"))
    assert result.sample_rate == 22050
    assert result.audio.dtype == np.float32
    assert result.audio.ndim == 1
    assert 0.8 < result.duration < 4.0  # seven words at 175 words per minute
    assert np.abs(result.audio).max() <= 1.0
    assert np.abs(result.audio).max() > 0.05  # not silence


def test_phone_events_are_ascending_and_lie_inside_the_audio():
    result = synthesize(TEXT, Voice("en+f2"))
    starts = [start for start, _ in result.phones]
    assert len(result.phones) >= 15  # D @ r 'E d k 'a t s 'a t 0 n D @ m 'a t
    assert starts == sorted(starts)
    assert 0.0 <= starts[0] and starts[-1] <= result.duration + 1e-3
    assert all(phone and " " not in phone for _, phone in result.phones)
    assert {"D", "@", "r", "k", "t", "m"} <= {phone for _, phone in result.phones}


def test_two_different_voices_give_different_audio():
    male = synthesize(TEXT, Voice("en+m1")).audio
    female = synthesize(TEXT, Voice("en+f3")).audio
    assert male.shape != female.shape or not np.array_equal(male, female)


def test_same_text_and_voice_give_identical_audio_whatever_was_synthesised_before():
    voice = Voice("en+m3", rate=160, pitch=40)
    first = synthesize(TEXT, voice).audio
    synthesize("something else entirely, with a different voice?", Voice("en+f1"))
    second = synthesize(TEXT, voice).audio
    assert np.array_equal(first, second)


def test_noise_seed_reproduces_and_varies_breath_noise_of_a_breathy_voice():
    voice = Voice("en+whisper")
    first = synthesize(TEXT, voice, noise_seed=1).audio
    again = synthesize(TEXT, voice, noise_seed=1).audio
    other = synthesize(TEXT, voice, noise_seed=2).audio
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_faster_rate_gives_shorter_audio():
    slow = synthesize(TEXT, Voice("en+m1", rate=120)).duration
    fast = synthesize(TEXT, Voice("en+m1", rate=300)).duration
    assert fast < 0.7 * slow


def test_pitch_and_range_change_the_audio():
    base = synthesize(TEXT, Voice("en+m1", pitch=30, pitch_range=50)).audio
    high = synthesize(TEXT, Voice("en+m1", pitch=80, pitch_range=50)).audio
    flat = synthesize(TEXT, Voice("en+m1", pitch=30, pitch_range=0)).audio
    assert not np.array_equal(base[: len(high)], high[: len(base)])
    assert not np.array_equal(base[: len(flat)], flat[: len(base)])


@pytest.mark.parametrize("name", ["en-gb+m1", "xx-nosuchlanguage", "en+nosuchvariant"])
def test_bad_voice_name_raises_espeak_error_naming_the_voice(name):
    with pytest.raises(EspeakError, match=name.replace("+", r"\+")):
        synthesize(TEXT, Voice(name))


def test_bad_voice_right_after_a_good_voice_raises_instead_of_keeping_the_old_one():
    synthesize(TEXT, Voice("en-us+m1"))
    with pytest.raises(EspeakError, match=r"en-gb\+m1.*'en\+m1' or 'gmw/en\+m1'"):
        synthesize(TEXT, Voice("en-gb+m1"))


@pytest.mark.parametrize("name", ["en+m1", "gmw/en+m1", "en-us+f2", "en"])
def test_documented_voice_name_forms_work(name):
    assert synthesize("hello", Voice(name)).audio.size > 0


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_raises_espeak_error(text):
    with pytest.raises(EspeakError, match="empty"):
        synthesize(text, Voice("en+m1"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "en", "rate": 79},
        {"name": "en", "rate": 451},
        {"name": "en", "pitch": 101},
        {"name": "en", "pitch_range": -1},
        {"name": "en", "pitch": 50.5},
    ],
)
def test_voice_rejects_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        Voice(**kwargs)


def test_voice_variants_include_the_male_and_female_series():
    variants = set(list_variants())
    assert {f"m{i}" for i in range(1, 8)} <= variants
    assert {f"f{i}" for i in range(1, 6)} <= variants


def test_event_struct_matches_the_layout_of_speak_lib_h():
    event = espeak._Event
    assert event.audio_position.offset == 16
    assert event.user_data.offset == 24
    assert event.id.offset == 32
    assert ctypes.sizeof(event) == 32 + 8
    assert ctypes.sizeof(espeak._EventId) == 8


def test_concurrent_calls_give_the_same_audio_as_sequential_ones():
    voices = [Voice("en+m2"), Voice("en+f4"), Voice("en-us+m5")]
    expected = [synthesize(TEXT, voice).audio for voice in voices]
    results = [None] * len(voices)

    def run(index):
        results[index] = synthesize(TEXT, voices[index]).audio

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(voices))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(a, b) for a, b in zip(expected, results))


def test_resampling_to_16k_gives_float32_of_the_expected_length():
    result = synthesize(TEXT, Voice("en+m1"))
    audio = resample_audio(result.audio, result.sample_rate)
    expected = int(np.ceil(len(result.audio) * 16000 / result.sample_rate))
    assert audio.dtype == np.float32
    assert audio.shape == (expected,)
    assert np.abs(audio).max() <= 1.0


def test_resampling_keeps_the_frequency_of_a_sine():
    seconds, frequency = 1.0, 440.0
    time = np.arange(int(22050 * seconds)) / 22050
    sine = 0.5 * np.sin(2 * np.pi * frequency * time)
    audio = resample_audio(sine, 22050, 16000)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 16000 / len(audio)
    assert abs(peak_hz - frequency) <= 1.0


def test_resampling_averages_channels_to_mono():
    stereo = np.stack([np.full(2205, 0.2), np.full(2205, 0.4)], axis=1)  # (S, 2)
    mono = resample_audio(stereo, 22050, 22050)
    assert mono.shape == (2205,)
    assert np.allclose(mono, 0.3)
