"""Tests for espnet2/ssl/targets/precision.py: bf16 dumps checked against fp32.

bf16 autocast runs here on the CPU (the dump tool turns it on by default only on
CUDA); the model is a tiny wav2vec 2.0 built by ESPnet's real SSLTask builder.
"""

import numpy as np
import pytest
import torch

from espnet2.ssl.targets.dumpers import FeatureDumpError, SSLDumper
from espnet2.ssl.targets.precision import check_bf16, relative_error, resolve_bf16


@pytest.fixture
def dumper(build_ssl_model, ssl_configs) -> SSLDumper:
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    return SSLDumper(model, layer=2, device="cpu")


@pytest.mark.parametrize(
    "requested, device, expected",
    [
        (None, "cuda", True),
        (None, "cpu", False),
        (False, "cuda", False),
        (True, "cpu", True),
    ],
)
def test_bf16_is_on_by_default_for_cuda_only(requested, device, expected):
    assert resolve_bf16(requested, torch.device(device)) is expected


def test_relative_error_is_the_frobenius_ratio_over_all_utterances():
    reference = [np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)]
    approximate = [np.ones((2, 3), np.float32), np.full((1, 3), 0.5, np.float32)]
    expected = (3 * 0.25 / 6) ** 0.5
    assert relative_error(reference, approximate) == pytest.approx(expected)
    assert relative_error(reference, reference) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(reference, [np.ones((2, 3)), np.ones((2, 3))])


def test_bf16_features_are_close_to_float32_and_pass_the_check(dumper, audio_batch):
    speech, lengths = audio_batch((8000, 5600, 7000))
    reference = dumper.extract(speech, lengths)
    dumper.bf16 = True
    approximate = dumper.extract(speech, lengths)
    error = check_bf16(dumper, speech, lengths, approximate, tolerance=0.05)
    assert 0.0 < error < 0.05  # autocast ran: bf16 rounding, but small
    assert error == pytest.approx(relative_error(reference, approximate))
    assert dumper.bf16  # left on for the rest of the shard
    assert all(a.dtype == np.float32 for a in approximate)


def test_bf16_features_beyond_the_tolerance_stop_the_dump(dumper, audio_batch):
    speech, lengths = audio_batch()
    dumper.bf16 = True
    approximate = dumper.extract(speech, lengths)
    with pytest.raises(FeatureDumpError, match="more than the tolerance 1e-09. Fix: "):
        check_bf16(dumper, speech, lengths, approximate, tolerance=1e-9, where="s1: ")
