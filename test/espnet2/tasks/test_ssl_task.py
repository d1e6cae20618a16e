"""espnet2/tasks/ssl.py: the replaced SSLTask keeps ESPnet's options, adds wav2vec2."""

import argparse

import pytest

from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet2.ssl.loss.hubert import HuBERTLoss
from espnet2.ssl.loss.hubert_weighted import WeightedHuBERTLoss
from espnet2.ssl.loss.wav2vec2 import Wav2Vec2Loss
from espnet2.ssl.mask.span import SpanMasking
from espnet2.tasks import ssl as task_module
from espnet2.tasks.ssl import SSLTask


def test_new_choices_are_registered_next_to_espnet_ones():
    assert task_module.loss_choices.get_class("wav2vec2") is Wav2Vec2Loss
    assert task_module.loss_choices.get_class("hubert") is WeightedHuBERTLoss
    assert issubclass(WeightedHuBERTLoss, HuBERTLoss)  # ESPnet's, plus sample_size
    assert task_module.util_choices.get_class("mask") is SpanMasking
    encoder = task_module.encoder_choices.get_class("transformer")
    assert issubclass(encoder, TransformerEncoder)
    for name in ("conformer", "e_branchformer"):
        assert task_module.encoder_choices.get_class(name) is not None


def test_every_option_of_espnet_202511_still_parses():
    parser = SSLTask.get_parser()
    args = parser.parse_args(
        ["--token_list", "t.txt", "--token_type", "word", "--num_classes", "5"]
        + ["--noise_db_range", "5_10", "--rir_apply_prob", "0.5", "--window_size", "3"]
        + ["--speech_volume_normalize", "0.9", "--cleaner", "none", "--g2p", "none"]
        + [
            "--input_size",
            "none",
            "--init",
            "xavier_uniform",
            "--use_preprocessor",
            "true",
        ]
    )
    assert args.loss == [{"name": "hubert", "conf": {}}]
    assert args.util == [{"name": "mask", "conf": {}}]
    assert args.speech_volume_normalize == pytest.approx(0.9)
    assert args.init == "xavier_uniform"


def test_volume_normalisation_reaches_the_preprocessor_not_the_rir_path():
    args = SSLTask.get_parser().parse_args(
        [
            "--token_list",
            "none",
            "--token_type",
            "word",
            "--speech_volume_normalize",
            "0.5",
        ]
    )
    args.token_list = ["a", "<unk>"]
    preprocess = SSLTask.build_preprocess_fn(args, train=True)
    assert preprocess.speech_volume_normalize == pytest.approx(0.5)


def _collate_args(**collate_fn_conf) -> argparse.Namespace:
    return argparse.Namespace(
        frontend_conf={"fs": "16k", "shapes": [[8, 10, 5], [8, 3, 2]]},
        encoder_conf={},
        collate_fn_conf=collate_fn_conf,
        collect_stats=False,
    )


def test_collate_window_follows_the_cnn_frontend_shapes():
    collate = SSLTask.build_collate_fn(_collate_args(), train=True)
    assert (collate.frame_field, collate.frame_stride) == (20, 10)
    assert collate.window_size == pytest.approx(20 / 16)
    assert collate.window_shift == pytest.approx(10 / 16)
    assert collate.crop_samples is None and collate.crop_audio


def test_collate_crop_seconds_reaches_the_collate_except_in_collect_stats():
    args = _collate_args(crop_seconds=0.5, short_utterances="drop")
    collate = SSLTask.build_collate_fn(args, train=False)
    assert (collate.crop_samples, collate.short_utterances) == (8000, "drop")
    assert not collate.train
    args.collect_stats = True
    assert SSLTask.build_collate_fn(args, train=True).crop_samples is None


def test_collate_rejects_an_unknown_option():
    with pytest.raises(TypeError, match="crop_second"):
        SSLTask.build_collate_fn(_collate_args(crop_second=2), train=True)


def test_wav2vec2_config_builds_with_its_required_inputs(build_ssl_model, ssl_configs):
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    assert isinstance(model.losses[0], Wav2Vec2Loss)
    assert {"features", "features_penalty", "mask_info"} <= model.required_inputs
    assert isinstance(model.util_modules["mask"], SpanMasking)
