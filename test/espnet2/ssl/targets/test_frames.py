"""espnet2/ssl/targets/frames.py: exact frame counts against the real modules."""

import pytest
import torch
import torchaudio

from espnet2.asr.frontend.cnn import CNNFrontend
from espnet2.ssl.targets.frames import (
    WAV2VEC2_CNN_SHAPES,
    cnn_frame_count,
    kaldi_frame_count,
)

BOUNDARIES = [0, 1, 399, 400, 401, 719, 720, 721, 1039, 1040, 16000, 16319, 16320]


@pytest.fixture(scope="module")
def cnn():
    shapes = [[8, k, s] for _, k, s in WAV2VEC2_CNN_SHAPES]
    return CNNFrontend(
        norm_mode="group_norm", conv_mode="standard", bias=False, shapes=shapes
    )


@pytest.mark.parametrize("num_samples", [n for n in BOUNDARIES if n >= 400])
def test_cnn_count_equals_espnet_cnn_frontend_output(cnn, num_samples):
    with torch.no_grad():
        feats, _ = cnn(torch.randn(1, num_samples), torch.tensor([num_samples]))
    assert cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES) == feats.shape[1]


@pytest.mark.parametrize("num_samples", BOUNDARIES)
def test_cnn_count_is_the_wav2vec2_closed_form(num_samples):
    expected = max((num_samples - 400) // 320 + 1, 0) if num_samples >= 400 else 0
    assert cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES) == expected


@pytest.mark.parametrize("num_samples", [n for n in BOUNDARIES if n >= 400])
def test_kaldi_count_equals_torchaudio_mfcc_frames(num_samples):
    wave = torch.randn(1, num_samples)
    mfcc = torchaudio.compliance.kaldi.mfcc(wave, sample_frequency=16000, dither=0.0)
    assert kaldi_frame_count(num_samples) == mfcc.shape[0]


def test_too_short_gives_zero_and_negative_is_refused():
    assert (
        kaldi_frame_count(399) == 0 and cnn_frame_count(399, WAV2VEC2_CNN_SHAPES) == 0
    )
    with pytest.raises(ValueError, match="num_samples"):
        cnn_frame_count(-1, WAV2VEC2_CNN_SHAPES)
