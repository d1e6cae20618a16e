"""Tests for espnet2/ssl/data/example_check.py: what makes one SSL training example
bad."""

import numpy as np
import pytest
import soundfile

from espnet2.ssl.data.example_check import (
    ExampleRules,
    header_problem,
    label_count_problem,
    samples_problem,
)
from espnet2.ssl.frame_geometry import (
    WAV2VEC2_CNN_SHAPES,
    cnn_frame_count,
    kaldi_frame_count,
)
from espnet2.ssl.targets.labels import listing

RULES = ExampleRules(sample_rate=16000, cnn_shapes=WAV2VEC2_CNN_SHAPES)


@pytest.mark.parametrize("num_samples", [400, 719, 720, 16000, 16321, 48000])
def test_one_label_per_cnn_frame_passes_and_one_more_or_less_does_not(num_samples):
    frames = cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
    assert label_count_problem(frames, num_samples, RULES) is None
    for wrong in (frames - 1, frames + 1):
        problem = label_count_problem(wrong, num_samples, RULES)
        assert f"has {wrong} labels but its {num_samples} samples give {frames}" in (
            problem.problem
        )


@pytest.mark.parametrize("num_samples", [400, 16000, 16321, 48000])
def test_100_hz_labels_pass_with_label_downsampling_2(num_samples):
    """MFCC-rate labels (one per 10 ms Kaldi frame) halve to one per CNN frame."""
    rules = ExampleRules(16000, WAV2VEC2_CNN_SHAPES, label_downsampling=2)
    labels = kaldi_frame_count(num_samples)
    assert label_count_problem(labels, num_samples, rules) is None
    problem = label_count_problem(labels + 2, num_samples, rules)
    assert "after label_downsampling 2" in problem.problem


def test_without_a_cnn_frontend_there_is_no_label_count_rule():
    assert label_count_problem(3, 16000, ExampleRules(16000)) is None


def test_loaded_audio_must_be_mono_not_empty_complete_and_finite():
    good = np.zeros(1000, np.float32)
    assert samples_problem(good, header_samples=1000) is None
    assert "(1000, 2)" in samples_problem(np.zeros((1000, 2), np.float32)).problem
    assert "zero length" in samples_problem(good[:0]).problem
    short = samples_problem(good, header_samples=1500).problem
    assert "declares 1500 samples but only 1000 were read" in short
    good[3] = np.inf
    assert "the first at sample 3" in samples_problem(good).problem


def test_a_good_header_has_no_problem_and_is_returned(tmp_path):
    path = str(tmp_path / "a.wav")
    soundfile.write(path, np.zeros(800, np.float32), 16000, subtype="PCM_16")
    problem, info = header_problem(path, RULES)
    assert problem is None and info.frames == 800
    problem, info = header_problem(str(tmp_path / "gone.wav"), RULES)
    assert "cannot read audio file" in problem.problem and info is None


def test_listing_names_at_most_ten_and_counts_the_rest():
    assert listing(["a", "b"]) == "a, b"
    assert listing([str(i) for i in range(12)]).endswith("9 (and 2 more)")
