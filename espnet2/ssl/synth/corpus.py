"""The embedded synthetic corpus: plan, synthesise and write Kaldi-style data dirs.

Sentences come from :mod:`espnet2.ssl.synth.grammar`, speech from espeak-ng
(:mod:`espnet2.ssl.synth.espeak`). Four sets are written:

* ``train``: unlabeled pretraining audio, about ``train_minutes`` (utterances are added
  until the total reaches the target);
* ``train_labeled``: a prefix of ``train`` of about ``labeled_minutes`` that covers
  every speaker of ``train`` (for fine-tuning);
* ``dev`` and ``test``: about ``dev_minutes`` / ``test_minutes`` each, from held-out
  speakers (no speaker is in two of train, dev and test) and held-out sentences (no
  sentence of dev or test occurs in train, dev and test share none).

Audio goes to ``<audio_dir>/<set>/<utt>.flac`` (16 kHz mono PCM_16); each data dir
``<out_dir>/<set>`` gets ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur``
and ``phones.ctm`` (espeak's phoneme onsets, ``<utt> 1 <start> <dur> <phone>`` in
seconds). Every file is written atomically and sorted by id in C-locale byte order.

The corpus is a function of the config: the same seed gives byte-identical text files
and identical audio samples. ``<audio_dir>/corpus.json`` records the config; a rerun
with the same config and all outputs present returns at once, any other config
regenerates everything.
"""

import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import soundfile
from tqdm import tqdm
from typeguard import TypeCheckError, check_type, typechecked

from espnet2.fileio.kaldi_data_dir import DataDirEntry
from espnet2.fileio.kaldi_data_dir import data_dir_lines as kaldi_data_dir_lines
from espnet2.ssl.synth.espeak import (
    EspeakError,
    SynthResult,
    Voice,
    resample_audio,
    synthesize,
)
from espnet2.ssl.synth.grammar import sentence_stream, speech_prompt

Seconds = float

SET_NAMES = ("train", "train_labeled", "dev", "test")
AUDIO_SETS = ("train", "dev", "test")  # train_labeled reuses train's audio
DATA_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "phones.ctm")
MANIFEST_NAME = "corpus.json"
MANIFEST_VERSION = 1
_SOUNDFILE_FORMATS = {"flac": "FLAC", "wav": "WAV"}
_BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"

# Voices: espeak accents x voice variants, each with its own pitch, rate and range.
ACCENTS = (("gb", "en"), ("us", "en-us"))  # (speaker-id prefix, espeak language)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
PITCHES = (35, 45, 55, 65)  # espeak pitch, 0-100
RATES = (130, 145, 160, 175, 190)  # words per minute
PITCH_RANGES = (40, 50, 60)  # espeak range, 0-100
# Held-out speakers, as (accent prefix, variant): male, female, both accents.
DEV_VOICES = (("gb", "m4"), ("us", "f2"), ("us", "m6"))
TEST_VOICES = (("us", "m3"), ("gb", "f4"), ("gb", "m7"))


@dataclass(frozen=True)
class SynthCorpusConfig:
    """What to generate; the corpus is a deterministic function of these values.

    Args:
        seed: Seed of the sentences, voice order and noise; different seeds give
            different sentences.
        train_minutes: Target audio of ``train`` in minutes (reached or just passed).
        labeled_minutes: Target audio of ``train_labeled`` (<= ``train_minutes``).
        dev_minutes: Target audio of ``dev`` in minutes.
        test_minutes: Target audio of ``test`` in minutes.
        sample_rate: Sampling rate of the written audio in Hz.
        audio_format: ``"flac"`` or ``"wav"`` (both PCM_16).
    """

    seed: int = 0
    train_minutes: float = 20.0
    labeled_minutes: float = 5.0
    dev_minutes: float = 2.0
    test_minutes: float = 2.0
    sample_rate: int = 16000
    audio_format: str = "flac"

    def __post_init__(self):
        for field in fields(self):
            try:
                check_type(getattr(self, field.name), field.type)
            except TypeCheckError as error:
                raise TypeError(f"SynthCorpusConfig.{field.name}: {error}") from None
        for name in ("train_minutes", "labeled_minutes", "dev_minutes", "test_minutes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.labeled_minutes > self.train_minutes:
            raise ValueError(
                f"labeled_minutes ({self.labeled_minutes}) must not exceed "
                f"train_minutes ({self.train_minutes}): train_labeled is part of train"
            )
        if not 8000 <= self.sample_rate <= 48000:
            raise ValueError(
                f"sample_rate must be 8000-48000 Hz, got {self.sample_rate}"
            )
        if self.audio_format not in _SOUNDFILE_FORMATS:
            raise ValueError(
                f"audio_format must be one of {sorted(_SOUNDFILE_FORMATS)}, "
                f"got {self.audio_format!r}"
            )

    def target_seconds(self, set_name: str) -> Seconds:
        """Return the audio target of ``set_name`` (one of SET_NAMES) in seconds."""
        minutes = {
            "train": self.train_minutes,
            "train_labeled": self.labeled_minutes,
            "dev": self.dev_minutes,
            "test": self.test_minutes,
        }[set_name]
        return 60.0 * minutes


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a Kaldi speaker id and the voice that speaks.

    Attributes:
        speaker_id: Short sortable id without spaces, e.g. ``"gbm1p35r145"``
            (accent, variant, pitch, rate).
        voice: The espeak voice.
    """

    speaker_id: str
    voice: Voice


@dataclass(frozen=True)
class Utterance:
    """One synthesised and written utterance.

    Attributes:
        utt_id: ``<speaker_id>-<5-digit index within its set>``.
        speaker_id: The speaker's id.
        text: Transcript (upper-case words).
        audio_path: Absolute path of the audio file.
        num_samples: Length of the written audio in samples.
        sample_rate: Its sampling rate in Hz.
        phones: ``(start, duration, phone)`` in seconds, ascending, no overlap.
    """

    utt_id: str
    speaker_id: str
    text: str
    audio_path: str
    num_samples: int
    sample_rate: int
    phones: Tuple[Tuple[Seconds, Seconds, str], ...]

    @property
    def duration(self) -> Seconds:
        """Length of the audio in seconds."""
        return self.num_samples / self.sample_rate


@dataclass(frozen=True)
class SetSummary:
    """Size of one written set.

    Attributes:
        num_utterances: Number of utterances.
        num_speakers: Number of distinct speakers.
        seconds: Total audio in seconds.
    """

    num_utterances: int
    num_speakers: int
    seconds: Seconds

    @property
    def minutes(self) -> float:
        """Total audio in minutes."""
        return self.seconds / 60.0


def default_speakers() -> List[Speaker]:
    """Return the corpus' speakers: every accent with every variant (24 in all).

    Pitch, rate and pitch range cycle through PITCHES, RATES and PITCH_RANGES with
    coprime periods, so neighbouring speakers differ in all three.

    Returns:
        Speakers in a fixed order, with unique ids.
    """
    speakers = []
    for accent, language in ACCENTS:
        for variant in VARIANTS:
            index = len(speakers)
            pitch, rate = PITCHES[index % len(PITCHES)], RATES[index % len(RATES)]
            voice = Voice(
                f"{language}+{variant}",
                rate=rate,
                pitch=pitch,
                pitch_range=PITCH_RANGES[index % len(PITCH_RANGES)],
            )
            speakers.append(Speaker(f"{accent}{variant}p{pitch:02d}r{rate:03d}", voice))
    assert len({s.speaker_id for s in speakers}) == len(speakers)
    return speakers


def split_speakers(speakers: Sequence[Speaker]) -> Dict[str, List[Speaker]]:
    """Partition speakers into ``train``, ``dev`` and ``test`` (disjoint).

    Args:
        speakers: From :func:`default_speakers`.

    Returns:
        ``{"train": [...], "dev": [...], "test": [...]}``; dev and test are the
        speakers named by DEV_VOICES and TEST_VOICES, train all others.
    """

    def key(speaker: Speaker) -> Tuple[str, str]:
        accent = speaker.speaker_id[:2]
        return accent, speaker.voice.name.split("+", 1)[1]

    split: Dict[str, List[Speaker]] = {"train": [], "dev": [], "test": []}
    for speaker in speakers:
        if key(speaker) in DEV_VOICES:
            split["dev"].append(speaker)
        elif key(speaker) in TEST_VOICES:
            split["test"].append(speaker)
        else:
            split["train"].append(speaker)
    return split


def _set_rng(seed: int, set_name: str) -> random.Random:
    """Return the generator of one set (a string seed hashes the same everywhere)."""
    return random.Random(f"mini_synth/{seed}/{set_name}")


def _speaker_cycle(
    speakers: Sequence[Speaker], rng: random.Random
) -> Iterator[Speaker]:
    """Yield the speakers round after round, each round in a new random order."""
    while True:
        order = list(speakers)
        rng.shuffle(order)
        yield from order


def _phone_segments(
    onsets: Sequence[Tuple[Seconds, str]], duration: Seconds
) -> Tuple[Tuple[Seconds, Seconds, str], ...]:
    """Turn phone onsets into (start, duration, phone), each phone up to the next.

    Times are rounded to milliseconds (espeak's resolution) and kept inside
    ``duration`` (rounded down); zero-length phones are dropped, whitespace in names
    becomes "_".
    """
    limit = math.floor(duration * 1000 + 1e-6) / 1000  # last whole ms in the audio
    segments = []
    ends = [start for start, _ in onsets[1:]] + [duration]
    for (start, phone), end in zip(onsets, ends):
        start, end = min(round(start, 3), limit), min(round(end, 3), limit)
        if end > start:
            segments.append((start, round(end - start, 3), "_".join(phone.split())))
    return tuple(segments)


def _write_audio_atomic(
    path: Path, audio: np.ndarray, sample_rate: int, audio_format: str
) -> None:
    """Write float audio (S,) as PCM_16 via a temporary file and os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        soundfile.write(
            tmp,
            audio,
            sample_rate,
            subtype="PCM_16",
            format=_SOUNDFILE_FORMATS[audio_format],
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _synthesize_utterance(
    utt_id: str,
    speaker: Speaker,
    text: str,
    noise_seed: int,
    audio_dir: Path,
    config: SynthCorpusConfig,
) -> Utterance:
    """Synthesise ``text``, resample it, write it and return the Utterance."""
    try:
        result: SynthResult = synthesize(speech_prompt(text), speaker.voice, noise_seed)
    except EspeakError as error:
        raise EspeakError(
            f"synthesis of utterance {utt_id} failed (speaker {speaker.speaker_id}, "
            f"voice {speaker.voice}, sentence {text!r}): {error}"
        ) from error
    audio = resample_audio(result.audio, result.sample_rate, config.sample_rate)
    path = audio_dir / f"{utt_id}.{config.audio_format}"
    _write_audio_atomic(path, audio, config.sample_rate, config.audio_format)
    duration = len(audio) / config.sample_rate
    return Utterance(
        utt_id=utt_id,
        speaker_id=speaker.speaker_id,
        text=text,
        audio_path=str(path),
        num_samples=len(audio),
        sample_rate=config.sample_rate,
        phones=_phone_segments(result.phones, duration),
    )


def synthesize_set(
    set_name: str,
    speakers: Sequence[Speaker],
    target_seconds: Seconds,
    rng: random.Random,
    exclude_sentences: Set[str],
    audio_dir: Path,
    config: SynthCorpusConfig,
    show_progress: bool = True,
) -> List[Utterance]:
    """Synthesise new sentences until the set holds ``target_seconds`` of audio.

    Speakers take turns (each round in a random order); sentences are distinct and
    never in ``exclude_sentences``.

    Args:
        set_name: Name for ids, logs and the audio subdirectory.
        speakers: Who speaks in this set.
        target_seconds: Stop once the total duration reaches this (seconds).
        rng: Source of all randomness of this set.
        exclude_sentences: Sentences this set must not use.
        audio_dir: Root audio directory; files go to ``audio_dir/set_name``.
        config: Sample rate and audio format.
        show_progress: Show a tqdm bar over seconds of audio.

    Returns:
        The utterances in the order synthesised.
    """
    set_dir = audio_dir / set_name
    set_dir.mkdir(parents=True, exist_ok=True)
    sentences = sentence_stream(rng, exclude_sentences)
    voices = _speaker_cycle(speakers, rng)
    utterances: List[Utterance] = []
    total: Seconds = 0.0
    with tqdm(
        total=target_seconds,
        desc=set_name,
        disable=not show_progress,
        bar_format=_BAR_FORMAT,
    ) as bar:
        while total < target_seconds:
            speaker, text = next(voices), next(sentences)
            utt_id = f"{speaker.speaker_id}-{len(utterances):05d}"
            utt = _synthesize_utterance(
                utt_id, speaker, text, rng.randrange(2**31), set_dir, config
            )
            utterances.append(utt)
            total += utt.duration
            bar.update(min(utt.duration, target_seconds - bar.n))
            bar.set_postfix(utts=len(utterances), refresh=False)
    return utterances


def select_labeled(
    train: Sequence[Utterance], target_seconds: Seconds
) -> List[Utterance]:
    """Return the shortest prefix of ``train`` that reaches the target and the speakers.

    Args:
        train: Train utterances in the order synthesised.
        target_seconds: Minimum total duration in seconds.

    Returns:
        A prefix of ``train`` with total duration >= ``target_seconds`` (or all of
        train) that contains every speaker of ``train``.
    """
    all_speakers = {utt.speaker_id for utt in train}
    covered: Set[str] = set()
    total: Seconds = 0.0
    for count, utt in enumerate(train, start=1):
        covered.add(utt.speaker_id)
        total += utt.duration
        if total >= target_seconds and covered == all_speakers:
            return list(train[:count])
    return list(train)


def _write_lines_atomic(path: Path, lines: Sequence[str]) -> None:
    """Write newline-terminated lines via a temporary file and os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def data_dir_lines(utterances: Sequence[Utterance]) -> Dict[str, List[str]]:
    """Return the lines of each data-dir file, sorted by id in C-locale byte order.

    Args:
        utterances: The utterances of one set (any order).

    Returns:
        ``{file name: lines}`` for every name in DATA_FILES.
    """
    utts = sorted(utterances, key=lambda utt: utt.utt_id)
    entries = [
        DataDirEntry(u.utt_id, str(u.audio_path), u.text, u.speaker_id, u.duration)
        for u in utts
    ]
    lines = kaldi_data_dir_lines(entries, seconds_digits=7)
    lines["phones.ctm"] = [
        f"{u.utt_id} 1 {start:.3f} {dur:.3f} {phone}"
        for u in utts
        for start, dur, phone in u.phones
    ]
    return lines


def write_data_dir(data_dir: Path, utterances: Sequence[Utterance]) -> None:
    """Write a Kaldi-style data directory (every file atomically).

    Args:
        data_dir: Directory to create or update.
        utterances: The set's utterances.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in data_dir_lines(utterances).items():
        _write_lines_atomic(data_dir / name, lines)


def summarize(utterances: Sequence[Utterance]) -> SetSummary:
    """Count utterances, speakers and seconds of a set."""
    return SetSummary(
        num_utterances=len(utterances),
        num_speakers=len({utt.speaker_id for utt in utterances}),
        seconds=sum(utt.duration for utt in utterances),
    )


def _manifest(
    config: SynthCorpusConfig, out_dir: Path, summaries: Dict[str, SetSummary]
) -> dict:
    """Return the content of corpus.json."""
    return {
        "format_version": MANIFEST_VERSION,
        "config": asdict(config),
        "out_dir": str(out_dir),
        "sets": {name: asdict(summary) for name, summary in summaries.items()},
    }


def _load_if_complete(
    audio_dir: Path, out_dir: Path, config: SynthCorpusConfig
) -> Optional[Dict[str, SetSummary]]:
    """Return the summaries of an up-to-date corpus, or None if it must be built."""
    try:
        manifest = json.loads((audio_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        manifest.get("format_version") != MANIFEST_VERSION
        or manifest.get("config") != asdict(config)
        or manifest.get("out_dir") != str(out_dir)
    ):
        logging.info("%s differs from the requested corpus", audio_dir / MANIFEST_NAME)
        return None
    for name in SET_NAMES:
        if not all((out_dir / name / f).is_file() for f in DATA_FILES):
            return None
        with open(out_dir / name / "wav.scp", encoding="utf-8") as f:
            if not all(os.path.isfile(line.split(" ", 1)[1].strip()) for line in f):
                return None
    try:
        return {name: SetSummary(**manifest["sets"][name]) for name in SET_NAMES}
    except (KeyError, TypeError):
        return None  # a damaged corpus.json: rebuild


def _remove_stale_audio(audio_dir: Path, keep: Set[str]) -> None:
    """Delete audio and temporary files of earlier configs in the set directories."""
    for set_name in AUDIO_SETS:
        set_dir = audio_dir / set_name
        if not set_dir.is_dir():
            continue
        for path in set_dir.iterdir():
            ours = path.suffix in (".flac", ".wav") or path.name.endswith(".tmp")
            if path.is_file() and ours and str(path) not in keep:
                path.unlink()


def _synthesize_sets(
    config: SynthCorpusConfig, audio_dir: Path, show_progress: bool
) -> Dict[str, List[Utterance]]:
    """Synthesise dev, test, then train (avoiding their sentences) and pick labeled."""
    speakers = split_speakers(default_speakers())
    held_out: Set[str] = set()
    sets: Dict[str, List[Utterance]] = {}
    for set_name in ("dev", "test", "train"):
        sets[set_name] = synthesize_set(
            set_name,
            speakers[set_name],
            config.target_seconds(set_name),
            _set_rng(config.seed, set_name),
            held_out,
            audio_dir,
            config,
            show_progress,
        )
        held_out |= {utt.text for utt in sets[set_name]}
    if len(sets["train"]) < len(speakers["train"]):
        logging.warning(
            "train has %d utterances for %d train voices; raise train_minutes to hear "
            "them all",
            len(sets["train"]),
            len(speakers["train"]),
        )
    sets["train_labeled"] = select_labeled(
        sets["train"], config.target_seconds("train_labeled")
    )
    return {name: sets[name] for name in SET_NAMES}


@typechecked
def build_corpus(
    config: SynthCorpusConfig,
    out_dir: Union[str, Path],
    audio_dir: Union[str, Path],
    show_progress: bool = True,
) -> Dict[str, SetSummary]:
    """Generate the corpus, or return at once if an identical one is complete.

    Args:
        config: What to generate.
        out_dir: Parent of the data dirs ``train``, ``train_labeled``, ``dev``,
            ``test``.
        audio_dir: Where the audio files and ``corpus.json`` go.
        show_progress: Show tqdm bars.

    Returns:
        ``{set name: SetSummary}`` for every name in SET_NAMES.

    Raises:
        EspeakError: If synthesis fails (the message names utterance, voice and
            sentence).
    """
    out_dir, audio_dir = Path(out_dir).absolute(), Path(audio_dir).absolute()
    summaries = _load_if_complete(audio_dir, out_dir, config)
    if summaries is not None:
        logging.info("corpus in %s is complete and up to date; nothing to do", out_dir)
        return summaries
    audio_dir.mkdir(parents=True, exist_ok=True)
    (audio_dir / MANIFEST_NAME).unlink(missing_ok=True)  # not complete until rewritten
    sets = _synthesize_sets(config, audio_dir, show_progress)
    for name, utterances in sets.items():
        write_data_dir(out_dir / name, utterances)
    written = {utt.audio_path for name in AUDIO_SETS for utt in sets[name]}
    _remove_stale_audio(audio_dir, written)
    summaries = {name: summarize(utts) for name, utts in sets.items()}
    for name, summary in summaries.items():
        logging.info(
            "%s: %d utterances, %d speakers, %.2f minutes (target %.2f)",
            name,
            summary.num_utterances,
            summary.num_speakers,
            summary.minutes,
            config.target_seconds(name) / 60.0,
        )
    manifest = json.dumps(
        _manifest(config, out_dir, summaries), indent=2, sort_keys=True
    )
    _write_lines_atomic(audio_dir / MANIFEST_NAME, [manifest])
    return summaries
