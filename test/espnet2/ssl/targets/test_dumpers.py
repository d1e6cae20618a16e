"""Tests for espnet2/ssl/targets/dumpers/: MFCC, SSL-layer and ASR-encoder features.

The SSL and ASR models are tiny ones built by ESPnet's real task parsers and
builders (SSLTask, ASRTask) with random weights; the dumpers' handling of trained
checkpoints is tested in test_dumpers_trained_models.py.
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from espnet2.ssl.frame_geometry import (
    WAV2VEC2_CNN_SHAPES,
    cnn_frame_count,
    kaldi_frame_count,
    receptive_field,
)
from espnet2.ssl.model_files import ModelFileError
from espnet2.ssl.targets.dumpers import (
    ASRDumper,
    FeatureDumpError,
    MfccDumper,
    SSLDumper,
    get_dumper,
    resolve_device,
)

ASR_CONFIG = Path(__file__).parent / "conf" / "asr_tiny.yaml"
LENGTHS = (8000, 5600, 8000, 3000)  # samples; two equal lengths share a batch


def waves(lengths=LENGTHS, seed: int = 0):
    """Noisy chirps (B, S) zero-padded, and their lengths (B,)."""
    gen = torch.Generator().manual_seed(seed)
    speech = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        time = torch.arange(length) / 16000
        chirp = 0.3 * torch.sin(2 * torch.pi * (200 + 800 * time) * time)
        speech[row, :length] = chirp + 0.05 * torch.randn(length, generator=gen)
    return speech, torch.tensor(lengths)


def one_at_a_time(dumper, speech, lengths):
    return [
        dumper.extract(speech[b : b + 1, : lengths[b]], lengths[b : b + 1])[0]
        for b in range(len(lengths))
    ]


def build_asr_model(layer_type: str = "transformer"):
    """A tiny ESPnetASRModel from conf/asr_tiny.yaml (no global stats needed)."""
    from espnet2.tasks.asr import ASRTask

    parser = ASRTask.get_parser()
    args = parser.parse_args(
        ["--config", str(ASR_CONFIG), "--token_list", "none", "--normalize", "none"]
    )
    args.token_list = ["<blank>", "<unk>", "<space>", "A", "B", "<sos/eos>"]
    if layer_type == "conformer":
        args.encoder = "conformer"
        args.encoder_conf = dict(
            args.encoder_conf, cnn_module_kernel=5, pos_enc_layer_type="rel_pos"
        )
        args.encoder_conf["selfattention_layer_type"] = "rel_selfattn"
    torch.manual_seed(0)
    return ASRTask.build_model(args)


# MFCC


def test_mfcc_equals_torchaudio_kaldi_mfcc_with_two_delta_passes():
    speech, lengths = waves()
    feats = MfccDumper().extract(speech, lengths)
    for row, length in enumerate(lengths.tolist()):
        cepstra = torchaudio.compliance.kaldi.mfcc(
            speech[row : row + 1, :length], sample_frequency=16000, dither=0.0
        ).T  # (13, T)
        deltas = torchaudio.functional.compute_deltas(cepstra, win_length=5)
        accel = torchaudio.functional.compute_deltas(deltas, win_length=5)
        expected = torch.cat([cepstra, deltas, accel]).T.numpy()  # (T, 39)
        assert feats[row].dtype == np.float32 and feats[row].shape[1] == 39
        np.testing.assert_allclose(feats[row], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_samples", [400, 401, 559, 560, 16000, 16159])
def test_mfcc_gives_one_frame_per_10ms_as_kaldi_with_snip_edges(num_samples):
    speech, lengths = waves((num_samples,))
    (feats,) = MfccDumper().extract(speech, lengths)
    assert feats.shape == (kaldi_frame_count(num_samples), 39)
    assert MfccDumper().num_frames(num_samples) == feats.shape[0]


def test_mfcc_of_an_utterance_does_not_depend_on_its_batch_neighbours():
    speech, lengths = waves()
    dumper = MfccDumper()
    for batched, alone in zip(
        dumper.extract(speech, lengths), one_at_a_time(dumper, speech, lengths)
    ):
        np.testing.assert_array_equal(batched, alone)


def test_mfcc_reports_its_geometry():
    dumper = get_dumper("mfcc")
    assert (dumper.dim, dumper.frame_rate, dumper.min_samples()) == (39, 100.0, 400)
    assert dumper.describe()["feature_type"] == "mfcc"
    assert dumper.describe()["layer"] is None


# SSL


@pytest.mark.parametrize("norm_mode", ["layer_norm", "group_norm"])
def test_ssl_features_do_not_depend_on_batch_neighbours(
    build_ssl_model, ssl_configs, norm_mode
):
    config = copy.deepcopy(ssl_configs["wav2vec2"])
    config["frontend_conf"]["norm_mode"] = norm_mode
    model, _ = build_ssl_model(config)
    dumper = SSLDumper(model, layer=1, device="cpu")
    # GroupNorm over time sees the padding; only equal lengths may share a batch
    assert dumper.padding_invariant == (norm_mode == "layer_norm")
    speech, lengths = waves()
    batched = dumper.extract(speech, lengths)
    for row, (got, alone) in enumerate(
        zip(batched, one_at_a_time(dumper, speech, lengths))
    ):
        assert got.shape == (cnn_frame_count(int(lengths[row]), dumper.shapes), 32)
        np.testing.assert_allclose(got, alone, rtol=0, atol=1e-5)


def test_ssl_layers_are_block_outputs_and_none_is_the_final_output(
    build_ssl_model, ssl_configs
):
    model, _ = build_ssl_model(ssl_configs["hubert"])
    model.eval()
    speech, lengths = waves((6000,))
    with torch.no_grad():
        final, layers, _ = model.inference_encode(speech, lengths)
    assert len(layers) == 2
    for layer, expected in ((1, layers[0]), (2, layers[1]), (None, final)):
        (got,) = SSLDumper(model, layer=layer, device="cpu").extract(speech, lengths)
        np.testing.assert_allclose(got, expected[0].numpy(), atol=1e-6)
    assert not np.allclose(layers[0].numpy(), layers[1].numpy())


def test_ssl_dumper_reports_50hz_and_the_cnn_frame_count(build_ssl_model, ssl_configs):
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    dumper = SSLDumper(model, layer=2, device="cpu")
    assert dumper.frame_rate == 50.0 and dumper.dim == 32
    assert dumper.num_frames(16000) == cnn_frame_count(16000, WAV2VEC2_CNN_SHAPES)
    assert dumper.min_samples() == receptive_field(WAV2VEC2_CNN_SHAPES) == 400
    assert dumper.describe()["layer"] == 2
    assert dumper.describe()["num_layers"] == 2


@pytest.mark.parametrize("layer", [0, 3, -1])
def test_ssl_layer_out_of_range_names_the_number_of_layers(
    build_ssl_model, ssl_configs, layer
):
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    with pytest.raises(FeatureDumpError, match=f"layer {layer} is out of range.*2 "):
        SSLDumper(model, layer=layer, device="cpu")


def test_ssl_dumper_runs_in_eval_mode_so_outputs_are_deterministic(
    build_ssl_model, ssl_configs
):
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    model.train()
    dumper = SSLDumper(model, device="cpu")
    speech, lengths = waves((7000,))
    first, second = (dumper.extract(speech, lengths)[0] for _ in range(2))
    assert not dumper.model.training
    np.testing.assert_array_equal(first, second)


# ASR


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_asr_layers_are_block_outputs_and_none_is_model_encode(encoder):
    model = build_asr_model(encoder).eval()
    speech, lengths = waves((8000,))
    with torch.no_grad():
        encoded, encoded_lengths = model.encode(speech, lengths)
    final = ASRDumper(model, device="cpu")
    (got,) = final.extract(speech, lengths)
    assert got.shape == (int(encoded_lengths[0]), 32)
    np.testing.assert_allclose(got, encoded[0].numpy(), atol=1e-6)
    (first,) = ASRDumper(model, layer=1, device="cpu").extract(speech, lengths)
    (second,) = ASRDumper(model, layer=2, device="cpu").extract(speech, lengths)
    assert first.shape == second.shape == got.shape
    assert not np.allclose(first, second)
    # pre-LN: the final output is the last block's output after the final LayerNorm
    norm = model.encoder.after_norm
    np.testing.assert_allclose(
        norm(torch.from_numpy(second)).detach().numpy(), got, atol=1e-5
    )


def test_asr_features_do_not_depend_on_batch_neighbours():
    # In a padded batch ESPnet's conv2d subsampling gives a shorter utterance more
    # frames than it has alone (its mask is subsampled from the padded length).
    dumper = ASRDumper(build_asr_model(), device="cpu")
    assert not dumper.padding_invariant
    speech, lengths = waves()
    for got, alone in zip(
        dumper.extract(speech, lengths), one_at_a_time(dumper, speech, lengths)
    ):
        np.testing.assert_allclose(got, alone, rtol=0, atol=1e-5)


def test_asr_dumper_reports_25hz_for_fbank_and_conv2d_subsampling():
    dumper = ASRDumper(build_asr_model(), layer=1, device="cpu")
    assert (dumper.frame_rate, dumper.dim, dumper.num_layers) == (25.0, 32, 2)
    with pytest.raises(FeatureDumpError, match="has 2 layers"):
        ASRDumper(dumper.model, layer=5, device="cpu")


def test_asr_utterance_too_short_for_subsampling_is_a_clear_error():
    dumper = ASRDumper(build_asr_model(), device="cpu")
    speech, lengths = waves((600,))
    with pytest.raises(FeatureDumpError, match="too short.*min_wav_duration"):
        dumper.extract(speech, lengths)


# Registry and devices


def test_get_dumper_rejects_unknown_names_and_options():
    with pytest.raises(FeatureDumpError, match="unknown feature type 'fbank'"):
        get_dumper("fbank")
    with pytest.raises(FeatureDumpError, match="take no option layer"):
        get_dumper("mfcc", layer=6)


def test_ssl_and_asr_need_exactly_one_model_source(tmp_path):
    with pytest.raises(ModelFileError, match="not neither"):
        get_dumper("ssl")
    with pytest.raises(ModelFileError, match="does not exist"):
        get_dumper("asr", model_file=str(tmp_path / "missing.pth"))


def test_auto_device_is_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(FeatureDumpError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_dump_names_the_utterance_too_short_for_the_asr_encoder(tmp_path):
    from espnet2.ssl.targets.dump import dump_features

    lines = []
    for utt, samples in (("a", 8000), ("b", 600), ("c", 8000)):
        speech, _ = waves((samples,))
        soundfile.write(tmp_path / f"{utt}.wav", speech[0].numpy(), 16000)
        lines.append(f"{utt} {tmp_path / utt}.wav\n")
    (tmp_path / "wav.scp").write_text("".join(lines))
    dumper = ASRDumper(build_asr_model(), device="cpu")
    with pytest.raises(FeatureDumpError) as err:  # all three share one batch
        dump_features(tmp_path / "wav.scp", tmp_path / "out", dumper)
    assert "wav.scp:2: utterance 'b'" in str(err.value)
    assert "b.wav" in str(err.value) and "too short" in str(err.value)
