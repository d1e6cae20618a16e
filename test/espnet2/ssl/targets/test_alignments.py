"""Tests of the CTM reader and the frame rule (espnet2/ssl/targets/alignments.py)."""

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
import soundfile

from espnet2.fileio.kaldi_data_dir import DataDirError
from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count
from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus
from espnet2.ssl.targets.alignments import (
    PhoneSegment,
    frame_centres_us,
    frame_phones,
    frames_spanned,
    normalize_phone,
    phone_sequence,
    phone_transcripts,
    read_ctm,
)

SAMPLE_RATE = 16000
TINY = SynthCorpusConfig(
    seed=3, train_minutes=0.3, labeled_minutes=0.1, dev_minutes=0.1, test_minutes=0.1
)


def write_ctm(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_utt2dur(path: Path) -> Dict[str, float]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {utt: float(dur) for utt, dur in (line.split() for line in lines)}


@pytest.fixture(scope="module")
def synth_train(tmp_path_factory) -> Path:
    """The train data dir of a tiny mini_synth corpus (about 20 s of audio)."""
    root = tmp_path_factory.mktemp("mini_synth")
    build_corpus(TINY, root / "data", root / "audio", show_progress=False)
    return root / "data" / "train"


def test_read_ctm_groups_by_utterance_and_sorts_by_onset(tmp_path):
    ctm = write_ctm(
        tmp_path / "phones.ctm",
        [
            "b 1 0.000 0.100 k",
            "a 1 0.050 0.030 'eI 0.9",  # a confidence column is ignored
            "",
            "a 1 0.010 0.040 dZ",
            "b 1 0.100 0.050 _:",
        ],
    )
    assert read_ctm(ctm) == {
        "a": [PhoneSegment(0.01, 0.04, "dZ"), PhoneSegment(0.05, 0.03, "'eI")],
        "b": [PhoneSegment(0.0, 0.1, "k"), PhoneSegment(0.1, 0.05, "_:")],
    }


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("u 1 0.1 0.2", "expected 5 or 6 fields, got 4"),
        ("u 1 0.1 0.2 a 0.5 extra", "expected 5 or 6 fields, got 7"),
        ("u 1 zero 0.2 a", "is not a number"),
        ("u 1 0.1 nan a", "is not finite"),
        ("u 1 0.1 -0.2 a", "negative start"),
        ("u 1 0.1 0.2 a b", "confidence 'b' is not a number"),  # phone 'a b'
    ],
)
def test_read_ctm_names_file_and_line_of_a_malformed_line(tmp_path, bad_line, problem):
    ctm = write_ctm(tmp_path / "phones.ctm", ["u 1 0.0 0.1 a", bad_line])
    with pytest.raises(DataDirError, match=problem) as info:
        read_ctm(ctm)
    assert str(info.value).startswith(f"{ctm}:2: ")
    assert "Fix:" in str(info.value)


def test_read_ctm_rejects_overlapping_segments_of_one_utterance(tmp_path):
    ctm = write_ctm(
        tmp_path / "phones.ctm",
        ["u 1 0.000 0.100 a", "v 1 0.050 0.100 b", "u 1 0.090 0.050 c"],
    )
    with pytest.raises(DataDirError, match="overlaps segment 'a' of line 1") as info:
        read_ctm(ctm)
    assert str(info.value).startswith(f"{ctm}:3: utterance 'u': ")


def test_read_ctm_accepts_segments_that_touch_despite_float_rounding(tmp_path):
    # 0.1 + 0.2 == 0.30000000000000004 > 0.3 in floating point
    ctm = write_ctm(tmp_path / "phones.ctm", ["u 1 0.1 0.2 a", "u 1 0.3 0.1 b"])
    assert [seg.phone for seg in read_ctm(ctm)["u"]] == ["a", "b"]


@pytest.mark.parametrize(
    "phone, merge_stress, pauses, expected",
    [
        ("'eI", True, True, "eI"),
        (",eI", True, True, "eI"),
        ("'eI", False, True, "'eI"),
        ("@2", True, True, "@2"),  # digits name other espeak phonemes: kept
        ("_:", True, True, "sil"),
        ("_", True, True, "sil"),
        ("_:", True, False, "_:"),
        ("'", True, True, "'"),  # nothing left after stripping: unchanged
    ],
)
def test_normalize_phone_merges_stress_and_pauses_as_documented(
    phone, merge_stress, pauses, expected
):
    assert normalize_phone(phone, merge_stress, pauses) == expected


def test_frame_centres_of_the_wav2vec2_cnn_are_the_receptive_field_centres():
    # frame t covers samples [320 t, 320 t + 400): centre at 320 t + 200 samples
    centres = frame_centres_us(4, 0.02, 0.025)
    expected = [(320 * t + 200) * 1_000_000 // SAMPLE_RATE for t in range(4)]
    assert centres.tolist() == expected == [12500, 32500, 52500, 72500]


def test_frame_phones_gives_a_centre_on_a_boundary_to_the_later_phone():
    # Frame centres: 12.5, 32.5, 52.5, 72.5, 92.5, 112.5 ms.
    segments = [
        (0.0125, 0.020, "a"),  # [12.5, 32.5): frame 0 starts exactly here
        (0.0325, 0.020, "b"),  # [32.5, 52.5): frame 1 on its onset
        (0.0600, 0.010, "c"),  # no centre inside: c is never seen
        (0.0700, 0.030, "'d"),  # [70, 100): frame 3 and frame 4
    ]
    labels = frame_phones(segments, 6)
    # frame 2 (52.5 ms) lies in the gap [52.5, 60): silence; frame 5 is past the end
    assert labels == ["a", "b", "sil", "d", "d", "sil"]


def test_frame_phones_fills_a_leading_gap_and_the_frames_past_the_end_with_silence():
    segments = [(0.045, 0.040, "m"), (0.085, 0.010, "_:")]
    assert frame_phones(segments, 5, silence="<sil>", pauses_as_silence=False) == [
        "<sil>",
        "<sil>",
        "m",
        "m",
        "_:",
    ]
    assert frame_phones(segments, 0) == []
    assert frame_phones([], 2) == ["sil", "sil"]


def test_frame_phones_follows_a_different_framing():
    segments = [(0.0, 0.010, "a"), (0.010, 0.010, "b")]
    # 10 ms hop, 10 ms window: centres 5, 15, 25 ms
    assert frame_phones(segments, 3, frame_shift_s=0.01, frame_length_s=0.01) == [
        "a",
        "b",
        "sil",
    ]


def test_frame_phones_does_not_lose_a_phone_to_an_empty_segment_at_its_onset():
    segments = [(0.010, 0.020, "a"), (0.010, 0.0, "x")]
    assert frame_phones(segments, 1) == ["a"]


@pytest.mark.parametrize("num_samples", [0, 399, 400, 719, 720, 16000, 54963])
def test_frames_spanned_matches_the_cnn_frame_count(num_samples):
    end_s = num_samples / SAMPLE_RATE
    expected = cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
    assert frames_spanned(end_s) == expected


def test_synth_ctm_is_contiguous_and_reaches_the_end_of_the_audio(synth_train):
    ctm = read_ctm(synth_train / "phones.ctm")
    durations = read_utt2dur(synth_train / "utt2dur")
    assert sorted(ctm) == sorted(durations)
    for utt, segments in ctm.items():
        ends = [round(seg.start_s + seg.dur_s, 6) for seg in segments]
        starts = [round(seg.start_s, 6) for seg in segments]
        assert starts[1:] == ends[:-1], f"{utt}: gap between phones"
        assert 0 <= durations[utt] - ends[-1] < 0.001, utt  # end rounded down to ms
        assert segments[-1].phone.startswith("_"), utt  # ends with a pause event
        assert 0 <= starts[0] <= 0.1, utt


def test_synth_audio_before_the_first_phone_is_silent(synth_train):
    ctm = read_ctm(synth_train / "phones.ctm")
    wav_scp = (synth_train / "wav.scp").read_text(encoding="utf-8").splitlines()
    for utt, path in (line.split(" ", 1) for line in wav_scp):
        audio, rate = soundfile.read(path, dtype="float32")
        lead = audio[: int(ctm[utt][0].start_s * rate)]
        assert np.abs(lead).max(initial=0.0) == 0.0, utt


def test_synth_frames_are_silence_only_before_the_first_phone(synth_train):
    ctm = read_ctm(synth_train / "phones.ctm")
    durations = read_utt2dur(synth_train / "utt2dur")
    for utt, segments in ctm.items():
        num_samples = round(durations[utt] * SAMPLE_RATE)
        num_frames = cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
        labels = frame_phones(segments, num_frames, pauses_as_silence=False)
        uncovered = [t for t, phone in enumerate(labels) if phone == "sil"]
        centres_s = frame_centres_us(num_frames, 0.02, 0.025) / 1e6
        assert all(centres_s[t] < segments[0].start_s for t in uncovered), utt
        assert len(labels) == num_frames > 0


def test_phone_sequence_is_in_time_order_without_pauses_and_stress():
    segments = [(0.3, 0.1, "_:"), (0.2, 0.1, ",eI"), (0.0, 0.1, "h"), (0.1, 0.1, "'@")]
    assert phone_sequence(segments) == ["h", "@", "eI"]
    assert phone_sequence(segments, merge_stress=False, drop_pauses=False) == [
        "h", "'@", ",eI", "_:",
    ]  # fmt: skip


def test_phone_transcripts_sorts_the_utterances_and_keeps_only_the_set(tmp_path):
    ctm = write_ctm(
        tmp_path / "phones.ctm",
        [
            "spk-b 1 0.20 0.10 t",
            "spk-a 1 0.10 0.10 'a",
            "spk-b 1 0.00 0.20 s",
            "spk-c 1 0.00 0.10 k",  # not in the set
            "spk-a 1 0.00 0.10 _",
            "spk-a 1 0.20 0.10 b",
        ],
    )
    assert phone_transcripts(ctm, ["spk-b", "spk-a"]) == [
        ("spk-a", ["a", "b"]),
        ("spk-b", ["s", "t"]),
    ]
    assert [utt for utt, _ in phone_transcripts(ctm)] == ["spk-a", "spk-b", "spk-c"]


@pytest.mark.parametrize(
    "lines, problem",
    [
        (["a 1 0.0 0.1 x"], "utterance 'b': no segment in this CTM"),
        (["a 1 0.0 0.1 x", "b 1 0.0 0.1 _:"], "utterance 'b': only pauses"),
        ([], "the CTM holds no segment"),
    ],
    ids=["missing", "only-pauses", "empty"],
)
def test_phone_transcripts_refuses_a_set_utterance_without_phones(
    tmp_path, lines, problem
):
    ctm = write_ctm(tmp_path / "phones.ctm", lines)
    with pytest.raises(DataDirError, match=problem) as info:
        phone_transcripts(ctm, ["a", "b"])
    assert str(info.value).startswith(f"{ctm}: ")
    assert "--phone_probe false" in str(info.value)


def test_synth_phone_transcripts_cover_every_utterance_with_spaceless_phones(
    synth_train,
):
    utts = [line.split()[0] for line in (synth_train / "wav.scp").open()]
    transcripts = phone_transcripts(synth_train / "phones.ctm", utts)
    assert [utt for utt, _ in transcripts] == sorted(utts)
    for utt, phones in transcripts:
        assert len(phones) >= 3, utt
        assert all(p and not any(c.isspace() for c in p) for p in phones)
        assert not any(p.startswith("_") or "'" in p or "," in p for p in phones)
