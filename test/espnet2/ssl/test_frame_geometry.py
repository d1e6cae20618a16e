"""espnet2/ssl/frame_geometry.py: exact frame counts against the real modules, CNN
shapes from a config."""

from pathlib import Path

import pytest
import torch
import torchaudio
import yaml

from espnet2.asr.frontend.cnn import CNNFrontend
from espnet2.ssl.frame_geometry import (
    WAV2VEC2_CNN_SHAPES,
    cnn_frame_count,
    config_cnn_shapes,
    frame_count,
    kaldi_frame_count,
    read_cnn_shapes,
    receptive_field,
    total_stride,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY_CONFIG = (
    REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml"
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


def _layer_by_layer(num_samples, shapes):
    """Frames of unpadded convolutions, one layer at a time."""
    length = num_samples
    for _, kernel, stride in shapes:
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


@pytest.mark.parametrize("seed", range(5))
def test_cnn_count_equals_the_layer_by_layer_count_for_any_shapes(seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(200):
        num_layers = int(torch.randint(1, 7, (1,), generator=generator))
        sizes = torch.randint(1, 12, (num_layers, 2), generator=generator).tolist()
        shapes = [(1, kernel, stride) for kernel, stride in sizes]
        num_samples = int(torch.randint(0, 5000, (1,), generator=generator))
        expected = _layer_by_layer(num_samples, shapes)
        assert cnn_frame_count(num_samples, shapes) == expected


def test_wav2vec2_cnn_sees_400_samples_every_320():
    assert receptive_field(WAV2VEC2_CNN_SHAPES) == 400
    assert total_stride(WAV2VEC2_CNN_SHAPES) == 320
    assert frame_count(720, 400, 320) == 2 and frame_count(719, 400, 320) == 1


def test_an_encoder_cnn_in_the_config_wins_over_frontend_shapes():
    layers = [[64, 10, 5], [64, 2, 2]]
    config = {"encoder_conf": {"extractor_conv_layer_config": layers}}
    config["frontend_conf"] = {"shapes": [[8, 3, 3]]}
    assert config_cnn_shapes(config, "args") == ((64, 10, 5), (64, 2, 2))
    with pytest.raises(ValueError, match="args: frontend_conf.shapes must be"):
        config_cnn_shapes({"frontend_conf": {"shapes": [[8, 3]]}}, "args")


def test_cnn_shapes_come_from_the_ssl_config(tmp_path):
    shapes = read_cnn_shapes(TINY_CONFIG)
    assert [s[1:] for s in shapes] == [s[1:] for s in WAV2VEC2_CNN_SHAPES]
    assert shapes[0][0] == 128
    assert read_cnn_shapes(None) == WAV2VEC2_CNN_SHAPES
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"frontend": "wav2vec_cnn", "frontend_conf": {"bias": False}})
    )
    assert read_cnn_shapes(config) == WAV2VEC2_CNN_SHAPES  # CNNFrontend's default
    config.write_text(yaml.safe_dump({"frontend": "default"}))
    with pytest.raises(ValueError, match="frontend 'default' is not"):
        read_cnn_shapes(config)
