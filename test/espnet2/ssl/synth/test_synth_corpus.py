"""Tests of the synthetic corpus writer (espnet2/ssl/synth/corpus.py)."""

import json
import os
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile

from espnet2.fileio.kaldi_data_dir import validate_data_dir
from espnet2.ssl.synth import corpus
from espnet2.ssl.synth.corpus import (
    DATA_FILES,
    SET_NAMES,
    SynthCorpusConfig,
    build_corpus,
    default_speakers,
    split_speakers,
)
from espnet2.ssl.synth.espeak import EspeakError, synthesize
from espnet2.ssl.synth.grammar import vocabulary

# Big enough that train_labeled reaches its target after covering the 18 train voices.
SMALL = dict(
    train_minutes=1.5, labeled_minutes=1.2, dev_minutes=0.25, test_minutes=0.25
)
TINY = dict(train_minutes=0.3, labeled_minutes=0.2, dev_minutes=0.1, test_minutes=0.1)


def _build(root: Path, seed: int, sizes: dict) -> Path:
    config = SynthCorpusConfig(seed=seed, **sizes)
    build_corpus(config, root / "data", root / "audio", show_progress=False)
    return root


def _read(root: Path, set_name: str, name: str) -> Dict[str, str]:
    lines = (root / "data" / set_name / name).read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) for line in lines)


def _durations(root: Path, set_name: str) -> List[float]:
    return [float(value) for value in _read(root, set_name, "utt2dur").values()]


@pytest.fixture(scope="module")
def corpus_a(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("seed0_a"), 0, SMALL)


@pytest.fixture(scope="module")
def corpus_b(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("seed0_b"), 0, SMALL)


@pytest.fixture(scope="module")
def corpus_seed1(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("seed1"), 1, SMALL)


def test_same_seed_gives_byte_identical_text_files_and_identical_audio(
    corpus_a, corpus_b
):
    for set_name in SET_NAMES:
        for name in DATA_FILES:
            if name == "wav.scp":
                continue  # absolute paths differ; compared through the audio below
            a = (corpus_a / "data" / set_name / name).read_bytes()
            assert a == (corpus_b / "data" / set_name / name).read_bytes()
        scp_a, scp_b = _read(corpus_a, set_name, "wav.scp"), _read(
            corpus_b, set_name, "wav.scp"
        )
        assert list(scp_a) == list(scp_b)
        for utt in scp_a:
            audio_a, _ = soundfile.read(scp_a[utt], dtype="int16")
            audio_b, _ = soundfile.read(scp_b[utt], dtype="int16")
            assert np.array_equal(audio_a, audio_b), utt


def test_different_seed_gives_different_sentences(corpus_a, corpus_seed1):
    for set_name in ("train", "dev", "test"):
        text_a = set(_read(corpus_a, set_name, "text").values())
        text_1 = set(_read(corpus_seed1, set_name, "text").values())
        assert len(text_a & text_1) <= 1


def test_no_speaker_is_in_two_of_train_dev_and_test(corpus_a):
    speakers = {s: set(_read(corpus_a, s, "utt2spk").values()) for s in SET_NAMES}
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert len(speakers["dev"]) == len(speakers["test"]) == 3


def test_no_sentence_of_dev_or_test_is_in_train_and_dev_and_test_share_none(corpus_a):
    texts = {s: list(_read(corpus_a, s, "text").values()) for s in SET_NAMES}
    for set_name in ("train", "dev", "test"):
        assert len(set(texts[set_name])) == len(texts[set_name])  # distinct in a set
    assert not set(texts["dev"]) & set(texts["train"])
    assert not set(texts["test"]) & set(texts["train"])
    assert not set(texts["dev"]) & set(texts["test"])


def test_train_labeled_is_a_subset_of_train_covering_every_train_speaker(corpus_a):
    for name in ("wav.scp", "text", "utt2spk", "utt2dur"):
        train, labeled = _read(corpus_a, "train", name), _read(
            corpus_a, "train_labeled", name
        )
        assert labeled.items() <= train.items()
    train_speakers = set(_read(corpus_a, "train", "utt2spk").values())
    assert set(_read(corpus_a, "train_labeled", "utt2spk").values()) == train_speakers
    assert len(train_speakers) == len(split_speakers(default_speakers())["train"])
    assert len(_read(corpus_a, "train_labeled", "text")) < len(
        _read(corpus_a, "train", "text")
    )


def test_utt2dur_equals_the_length_of_each_audio_file(corpus_a):
    for set_name in SET_NAMES:
        scp, dur = _read(corpus_a, set_name, "wav.scp"), _read(
            corpus_a, set_name, "utt2dur"
        )
        for utt, path in scp.items():
            info = soundfile.info(path)
            assert float(dur[utt]) == pytest.approx(
                info.frames / info.samplerate, abs=1e-9
            )


def test_each_set_reaches_its_target_by_less_than_one_utterance(corpus_a):
    config = SynthCorpusConfig(**SMALL)
    for set_name in SET_NAMES:
        durations = _durations(corpus_a, set_name)
        target = config.target_seconds(set_name)
        assert target <= sum(durations) < target + max(durations), set_name


def test_audio_is_16khz_mono_pcm16_flac_of_plausible_length(corpus_a):
    for path in _read(corpus_a, "train", "wav.scp").values():
        info = soundfile.info(path)
        assert (info.samplerate, info.channels) == (16000, 1)
        assert (info.format, info.subtype) == ("FLAC", "PCM_16")
        assert 0.5 <= info.frames / info.samplerate <= 10.0
        assert os.path.isabs(path)


def test_files_are_sorted_newline_terminated_without_trailing_spaces(corpus_a):
    for set_name in SET_NAMES:
        utts = list(_read(corpus_a, set_name, "wav.scp"))
        for name in DATA_FILES:
            raw = (corpus_a / "data" / set_name / name).read_bytes()
            assert raw.endswith(b"\n") and b"\r" not in raw and b" \n" not in raw
            ids = [line.split(b" ", 1)[0] for line in raw.splitlines()]
            assert ids == sorted(ids), f"{set_name}/{name}"
            if name not in ("spk2utt", "phones.ctm"):
                assert [i.decode() for i in ids] == utts  # one line per utterance


def test_no_temporary_files_are_left_behind(corpus_a):
    leftovers = [p for p in corpus_a.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_spk2utt_is_the_inverse_of_utt2spk(corpus_a):
    for set_name in SET_NAMES:
        utt2spk = _read(corpus_a, set_name, "utt2spk")
        spk2utt = {
            s: u.split(" ") for s, u in _read(corpus_a, set_name, "spk2utt").items()
        }
        inverse = {}
        for utt, spk in utt2spk.items():
            inverse.setdefault(spk, []).append(utt)
        assert spk2utt == inverse


def test_utterance_ids_are_speaker_dash_five_digits(corpus_a):
    for set_name in SET_NAMES:
        for utt, spk in _read(corpus_a, set_name, "utt2spk").items():
            prefix, index = utt.rsplit("-", 1)
            assert prefix == spk and len(index) == 5 and index.isdigit()
            assert spk.isalnum() and spk.islower()


def test_transcripts_use_only_the_grammar_vocabulary(corpus_a):
    words = vocabulary()
    for set_name in SET_NAMES:
        for text in _read(corpus_a, set_name, "text").values():
            assert set(text.split(" ")) <= words


def test_phone_ctm_covers_every_utterance_in_order_inside_the_audio(corpus_a):
    durations = _read(corpus_a, "dev", "utt2dur")
    lines = (corpus_a / "data" / "dev" / "phones.ctm").read_text().splitlines()
    segments: Dict[str, list] = {}
    for line in lines:
        utt, channel, start, dur, phone = line.split(" ")
        assert channel == "1" and float(dur) > 0 and phone
        segments.setdefault(utt, []).append((float(start), float(dur)))
    assert set(segments) == set(durations)
    for utt, segs in segments.items():
        for (start, dur), (next_start, _) in zip(segs, segs[1:]):
            assert next_start >= start + dur - 1e-6  # ascending, no overlap
        assert segs[-1][0] + segs[-1][1] <= float(durations[utt]) + 1e-6
        assert len(segs) >= 8


def test_rerun_with_the_same_config_rewrites_nothing(corpus_a):
    audio = sorted((corpus_a / "audio").rglob("*.flac"))
    text_files = sorted((corpus_a / "data").rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in audio + text_files}
    summaries = build_corpus(
        SynthCorpusConfig(**SMALL), corpus_a / "data", corpus_a / "audio", False
    )
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert summaries["dev"].num_speakers == 3
    assert summaries["train"].num_utterances == len(_read(corpus_a, "train", "text"))


def test_corpus_json_records_the_config_and_the_counts(corpus_a):
    manifest = json.loads((corpus_a / "audio" / "corpus.json").read_text())
    assert manifest["config"]["train_minutes"] == SMALL["train_minutes"]
    assert manifest["config"]["seed"] == 0
    assert manifest["sets"]["dev"]["num_utterances"] == len(
        _read(corpus_a, "dev", "text")
    )


def test_rerun_with_another_config_regenerates_and_removes_stale_audio(tmp_path):
    _build(tmp_path, 0, SMALL | {"train_minutes": 0.6, "labeled_minutes": 0.1})
    first = _read(tmp_path, "dev", "text")
    _build(tmp_path, 5, TINY)
    assert _read(tmp_path, "dev", "text") != first
    listed = {
        p
        for s in ("train", "dev", "test")
        for p in _read(tmp_path, s, "wav.scp").values()
    }
    assert {str(p) for p in (tmp_path / "audio").rglob("*.flac")} == listed
    assert (
        json.loads((tmp_path / "audio" / "corpus.json").read_text())["config"]["seed"]
        == 5
    )


def test_missing_audio_file_triggers_regeneration(tmp_path):
    _build(tmp_path, 0, TINY)
    victim = Path(next(iter(_read(tmp_path, "test", "wav.scp").values())))
    victim.unlink()
    _build(tmp_path, 0, TINY)
    assert victim.is_file()


def test_synthesis_failure_names_the_utterance_voice_and_sentence(
    tmp_path, monkeypatch
):
    def fail(text, voice, noise_seed=0):
        raise EspeakError("boom")

    monkeypatch.setattr(corpus, "synthesize", fail)
    with pytest.raises(EspeakError) as error:
        _build(tmp_path, 0, TINY)
    message = str(error.value)
    assert "boom" in message and "utterance " in message
    assert "en" in message and "+" in message  # the voice name
    assert any(w in message for w in vocabulary() if len(w) > 3)  # the sentence
    assert not (tmp_path / "audio" / "corpus.json").exists()


def test_default_speakers_are_unique_distinct_voices_that_all_synthesize():
    speakers = default_speakers()
    assert len(speakers) == 24
    assert len({s.speaker_id for s in speakers}) == len(speakers)
    assert len({s.voice for s in speakers}) == len(speakers)
    assert all(s.speaker_id.isalnum() and " " not in s.speaker_id for s in speakers)
    audio = [synthesize("hello there", s.voice).audio.tobytes() for s in speakers]
    assert len(set(audio)) == len(speakers)


def test_split_speakers_is_a_partition_with_held_out_dev_and_test():
    speakers = default_speakers()
    split = split_speakers(speakers)
    ids = {name: {s.speaker_id for s in group} for name, group in split.items()}
    assert ids["train"] | ids["dev"] | ids["test"] == {s.speaker_id for s in speakers}
    assert sum(len(group) for group in ids.values()) == len(speakers)
    assert len(ids["dev"]) == len(ids["test"]) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"train_minutes": 0}, "train_minutes must be positive"),
        ({"dev_minutes": -1.0}, "dev_minutes must be positive"),
        ({"labeled_minutes": 30.0}, "must not exceed train_minutes"),
        ({"sample_rate": 100}, "sample_rate"),
        ({"audio_format": "mp3"}, "audio_format"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SynthCorpusConfig(**kwargs)


def test_config_rejects_wrong_types():
    with pytest.raises(TypeError, match="seed"):
        SynthCorpusConfig(seed="0")


def test_data_dirs_pass_the_project_validator(corpus_a):
    for set_name in SET_NAMES:
        validate_data_dir(corpus_a / "data" / set_name)
