"""Tests for espnet2/ssl/data/crop.py and espnet2/ssl/data/collate.py (fixed-length
crops)."""

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from espnet2.ssl.data.collate import SSLCollateFn
from espnet2.ssl.data.crop import crop_offset, crop_utterance, frame_count

FIELD, STRIDE, FS = 400, 320, 16000


def utterance(uid: str, num_samples: int, label_rate: int = 1):
    """Audio whose sample j is j, and labels whose entry i is the frame index i.

    With ``label_rate`` 2 the labels are at twice the frame rate (entry k = k / 2).
    """
    frames = frame_count(num_samples, FIELD, STRIDE) * label_rate
    labels = np.arange(frames, dtype=np.int64) // label_rate
    return uid, dict(speech=np.arange(num_samples, dtype=np.float32), text=labels)


def assert_labels_belong_to_their_frames(speech, labels, length, label_length):
    """Label i (an original frame index) names the frame that audio frame i is."""
    assert label_length == frame_count(length, FIELD, STRIDE)
    for i in range(label_length):
        first_sample = int(speech[i * STRIDE])
        assert first_sample == int(labels[i]) * STRIDE, (i, first_sample, labels[i])


@pytest.mark.parametrize("seed", range(5))
def test_crop_keeps_audio_and_labels_aligned_at_random_offsets(seed):
    generator = torch.Generator().manual_seed(seed)
    collate = SSLCollateFn(crop_seconds=0.5, generator=generator, int_pad_value=-1)
    data = [utterance(f"u{n}", n) for n in (8000, 9999, 16000, 40321)]
    _, batch = collate(data)
    assert batch["speech"].shape == (4, 8000)
    assert batch["speech_lengths"].tolist() == [8000] * 4
    for b in range(4):
        assert_labels_belong_to_their_frames(
            batch["speech"][b], batch["text"][b], 8000, int(batch["text_lengths"][b])
        )


def test_random_offsets_cover_every_aligned_position_and_nothing_else():
    generator = torch.Generator().manual_seed(0)
    offsets = {
        crop_offset(8000 + 3 * STRIDE + 17, 8000, STRIDE, True, generator)
        for _ in range(200)
    }
    assert offsets == {0, STRIDE, 2 * STRIDE, 3 * STRIDE}


def test_validation_crop_is_centred_and_the_same_every_time():
    collate = SSLCollateFn(crop_seconds=0.5, train=False)
    data = [utterance("u", 8000 + 10 * STRIDE)]
    first = collate(data)[1]
    second = collate(data)[1]
    assert torch.equal(first["speech"], second["speech"])
    assert int(first["speech"][0, 0]) == 5 * STRIDE
    assert_labels_belong_to_their_frames(
        first["speech"][0], first["text"][0], 8000, int(first["text_lengths"][0])
    )


def test_the_same_seed_gives_the_same_crops_and_another_seed_other_crops():
    data = [utterance(f"u{i}", 48000) for i in range(4)]

    def starts(seed):
        collate = SSLCollateFn(
            crop_seconds=0.5, generator=torch.Generator().manual_seed(seed)
        )
        return collate(data)[1]["speech"][:, 0].tolist()

    assert starts(1) == starts(1)
    assert starts(1) != starts(2)


def test_labels_at_twice_the_frame_rate_are_downsampled_before_the_crop():
    generator = torch.Generator().manual_seed(3)
    collate = SSLCollateFn(crop_seconds=0.5, label_downsampling=2, generator=generator)
    _, batch = collate([utterance("u", 30000, label_rate=2)])
    assert_labels_belong_to_their_frames(
        batch["speech"][0], batch["text"][0], 8000, int(batch["text_lengths"][0])
    )


def test_short_utterances_are_padded_with_their_true_length():
    collate = SSLCollateFn(crop_seconds=0.5, int_pad_value=-1)
    _, batch = collate([utterance("long", 20000), utterance("short", 5000)])
    assert batch["speech_lengths"].tolist() == [8000, 5000]
    assert batch["speech"].shape == (2, 8000)
    assert torch.equal(batch["speech"][1, :5000], torch.arange(5000.0))
    assert batch["speech"][1, 5000:].abs().sum() == 0
    short_labels = int(batch["text_lengths"][1])
    assert short_labels == frame_count(5000, FIELD, STRIDE)
    assert (batch["text"][1, short_labels:] == -1).all()


def test_short_utterances_are_dropped_with_a_warning_that_names_them(caplog):
    collate = SSLCollateFn(crop_seconds=0.5, short_utterances="drop")
    with caplog.at_level(logging.WARNING):
        ids, batch = collate([utterance("long", 20000), utterance("tiny", 5000)])
    assert ids == ["long"]
    assert batch["speech"].shape == (1, 8000)
    assert "tiny" in caplog.text and "dropped 1 of 2" in caplog.text


def test_a_batch_with_only_short_utterances_and_drop_is_an_error_naming_the_fix():
    collate = SSLCollateFn(crop_seconds=0.5, short_utterances="drop")
    with pytest.raises(ValueError, match=r"tiny.*min_wav_duration >= 0.5"):
        collate([utterance("tiny", 5000)])


def test_without_crop_seconds_training_crops_to_the_shortest_as_espnet():
    collate = SSLCollateFn(crop_seconds=None, generator=None)
    _, batch = collate([utterance("a", 20000), utterance("b", 12000)])
    assert batch["speech_lengths"].tolist() == [12000, 12000]


def test_utterances_without_labels_are_cropped_too():
    collate = SSLCollateFn(crop_seconds=0.25)
    _, batch = collate([("a", dict(speech=np.zeros(9000, dtype=np.float32)))])
    assert batch["speech"].shape == (1, 4000) and "text" not in batch


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crop_seconds=0.01), "shorter than one model frame"),
        (dict(crop_seconds=1.0, short_utterances="skip"), "short_utterances"),
    ],
)
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SSLCollateFn(**kwargs)


def test_crop_helpers_reject_misaligned_or_oversized_crops():
    speech = np.zeros(1000, dtype=np.float32)
    with pytest.raises(ValueError, match="multiple of 320"):
        crop_utterance(speech, None, 100, 400, FIELD, STRIDE)
    with pytest.raises(ValueError, match="exceeds 1000 samples"):
        crop_utterance(speech, None, 640, 400, FIELD, STRIDE)
    with pytest.raises(ValueError, match="crop of 2000"):
        crop_offset(1000, 2000, STRIDE, True)


def test_frame_count_matches_the_wav2vec2_cnn():
    from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count

    for n in (0, 399, 400, 719, 720, 16000, 16001, 123457):
        assert frame_count(n, FIELD, STRIDE) == cnn_frame_count(n, WAV2VEC2_CNN_SHAPES)


# ---- properties (hypothesis): any lengths, crop and seed
@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(400, 40000), min_size=1, max_size=5),
    crop_samples=st.integers(400, 24000),
    seed=st.integers(0, 2**31 - 1),
    train=st.booleans(),
)
def test_any_crop_keeps_every_label_with_its_frame(lengths, crop_samples, seed, train):
    generator = torch.Generator().manual_seed(seed)
    collate = SSLCollateFn(
        crop_seconds=crop_samples / FS, generator=generator, train=train
    )
    ids, batch = collate([utterance(f"u{i}", n) for i, n in enumerate(lengths)])
    assert len(ids) == len(lengths)  # pad: nobody is dropped
    for b, n in enumerate(lengths):
        length = int(batch["speech_lengths"][b])
        assert length == min(n, crop_samples)
        first = int(batch["speech"][b, 0])
        assert first % STRIDE == 0 and first + length <= n  # aligned, inside
        assert_labels_belong_to_their_frames(
            batch["speech"][b], batch["text"][b], length, int(batch["text_lengths"][b])
        )


@given(st.integers(0, 500_000))
def test_frame_count_is_the_cnn_rule_and_grows_by_one_per_stride(num_samples):
    from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count

    frames = frame_count(num_samples, FIELD, STRIDE)
    assert frames == cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
    if num_samples >= FIELD:
        assert frame_count(num_samples + STRIDE, FIELD, STRIDE) == frames + 1
        assert (frames - 1) * STRIDE + FIELD <= num_samples < frames * STRIDE + FIELD
    else:
        assert frames == 0


@pytest.mark.parametrize("crop_seconds", [None, 0.5])
def test_examples_skipped_as_bad_are_dropped_from_their_batch(crop_seconds):
    """``(uid, {})`` is what the dataset returns with ``--bad_utterances skip``."""
    collate = SSLCollateFn(crop_seconds=crop_seconds, int_pad_value=-1)
    data = [utterance("u0", 9000), ("bad", {}), utterance("u2", 12000)]
    ids, batch = collate(data)
    assert ids == ["u0", "u2"] and batch["speech"].shape[0] == 2


def test_a_batch_emptied_by_skipping_is_an_error_naming_its_utterances():
    with pytest.raises(ValueError, match=r"every utterance of this batch \(b1, b2\)"):
        SSLCollateFn()([("b1", {}), ("b2", {})])
