"""espnet2/ssl/s3prl_upstream.py: SSLTask checkpoints as s3prl 0.4.18 upstreams.

Tiny seeded models of every SSLTask encoder (mini_synth's tiny HuBERT configs: the
wav2vec 2.0 transformer with the GroupNorm CNN and with a LayerNorm CNN, ESPnet's
conformer and e_branchformer, SummaryMixing) are saved as config.yaml + .pth, as
``espnet2.bin.ssl_train`` writes them, and one is packed by ``espnet2.bin.pack ssl``.
Each is loaded through the hub entry and run on a padded batch of three utterances of
different lengths; the expected values come from ``inference_encode`` on each
utterance alone, in a model loaded separately.

s3prl 0.4.18's ``s3prl.hub`` does not import with the pinned torchaudio (see the
module docstring), and ``s3prl.nn.upstream`` imports it at the top; the tests of
``S3PRLUpstream`` and ``s3prl.nn.Featurizer`` put an empty module in its place, and
``register_on_s3prl_hub`` fills it as it would fill the real hub.
"""

import importlib
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from s3prl.upstream.interfaces import Featurizer

from espnet2.ssl.s3prl_upstream import (
    HUB_NAME,
    SSLUpstreamError,
    espnet_ssl_local,
    register_on_s3prl_hub,
)
from espnet2.ssl.targets.frames import WAV2VEC2_CNN_SHAPES, cnn_frame_count
from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[3]
TUNING = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
LENGTHS = (7200, 5555, 4321)  # samples: 22, 17 and 13 CNN frames
RATE = 320  # samples per frame of the wav2vec 2.0 CNN
ATOL = 1e-5
BLOCKS = dict(output_size=96, attention_heads=4, linear_units=192, num_blocks=3)
BLOCKS.update(input_layer=None, dropout_rate=0.1, positional_dropout_rate=0.0)
BLOCKS.update(attention_dropout_rate=0.1, pos_enc_layer_type="rel_pos")
CONFORMER = dict(BLOCKS, cnn_module_kernel=5, rel_pos_type="latest")
CONFORMER.update(selfattention_layer_type="rel_selfattn")
E_BRANCHFORMER = dict(BLOCKS, cgmlp_linear_units=192, cgmlp_conv_kernel=5)
E_BRANCHFORMER.update(attention_layer_type="rel_selfattn")
# name: (config, overrides of the parsed config)
MODELS = {
    "transformer": ("train_ssl_hubert_tiny.yaml", {}),
    "transformer_ln_cnn": ("train_ssl_hubert_tiny.yaml", {"norm_mode": "layer_norm"}),
    "conformer": (
        "train_ssl_hubert_tiny.yaml",
        dict(encoder="conformer", encoder_conf=CONFORMER),
    ),
    "e_branchformer": (
        "train_ssl_hubert_tiny.yaml",
        dict(encoder="e_branchformer", encoder_conf=E_BRANCHFORMER),
    ),
    "summary_mixing": ("train_ssl_hubert_summary_mixing_tiny.yaml", {}),
}


def save_model(name: str, out_dir: Path) -> Path:
    """Builds model ``name`` (seed 0); writes config.yaml and model.pth in out_dir."""
    config, overrides = MODELS[name]
    token_list = [str(i) for i in range(50)] + ["<unk>"]
    args = SSLTask.get_parser().parse_args(
        ["--config", str(TUNING / config), "--token_list", "none"]
        + ["--token_type", "word"]
    )
    overrides = dict(overrides)
    if "norm_mode" in overrides:
        args.frontend_conf = dict(
            args.frontend_conf, norm_mode=overrides.pop("norm_mode")
        )
    for key, value in overrides.items():
        setattr(args, key, value)
    args.token_list = token_list
    torch.manual_seed(0)
    model = SSLTask.build_model(args)
    out_dir.mkdir(parents=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), out_dir / "model.pth")
    return out_dir / "model.pth"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> model.pth (config.yaml beside it) of every model; "packed" -> a zip."""
    root = tmp_path_factory.mktemp("s3prl_upstream")
    paths = {name: save_model(name, root / name) for name in MODELS}
    from espnet2.bin.pack import main as pack

    pack(
        ["ssl", "--ssl_train_config", str(root / "transformer/config.yaml"),
         "--ssl_model_file", str(paths["transformer"]),
         "--outpath", str(root / "packed/ssl.zip")]
    )  # fmt: skip
    paths["packed"] = root / "packed/ssl.zip"
    return paths


@pytest.fixture(scope="module")
def wavs():
    """Three waveforms (S_b,) of different lengths, a seeded chirp plus noise."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for length in LENGTHS:
        time = torch.arange(length) / 16000
        chirp = 0.3 * torch.sin(2 * torch.pi * (200 + 800 * time) * time)
        out.append(chirp + 0.05 * torch.randn(length, generator=gen))
    return out


def reference_layers(model_file: Path, wavs):
    """Per utterance alone: [block input, block 1..N outputs] (T_b, D) and final."""
    model, _ = SSLTask.build_model_from_file(
        model_file.parent / "config.yaml", model_file, "cpu"
    )
    model.eval()
    expected = []
    for wav in wavs:
        captured = []
        handle = model.encoder.encoders[0].register_forward_pre_hook(
            lambda module, args: captured.append(
                args[0][0] if isinstance(args[0], tuple) else args[0]
            )
        )
        with torch.no_grad():
            final, layers, frames = model.inference_encode(
                wav[None], torch.tensor([len(wav)])
            )
        handle.remove()
        assert frames.tolist() == [cnn_frame_count(len(wav), WAV2VEC2_CNN_SHAPES)]
        expected.append(([captured[0][0], *(h[0] for h in layers)], final[0]))
    return expected


@pytest.fixture(scope="module")
def expected(saved, wavs):
    """``expected(name)``: :func:`reference_layers` of model ``name`` (cached)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = reference_layers(saved[name], wavs)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def loaded(saved):
    """``loaded(name)``: model ``name`` through the hub entry (cached; eval mode)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = espnet_ssl_local(str(saved[name]))
        return cache[name].eval()

    return get


def weighted(layers, weights):
    """The softmax-weighted sum of a list of (T, D) layers, by hand."""
    probs = torch.softmax(weights, dim=0)
    return sum(p * h for p, h in zip(probs, layers))


@pytest.mark.parametrize("name", MODELS)
def test_hidden_states_are_the_blocks_input_then_each_block_per_utterance(
    name, loaded, expected, wavs
):
    upstream = loaded(name)
    with torch.no_grad():
        out = upstream(wavs)
    states = out["hidden_states"]
    assert len(states) == upstream.num_layers == 3 + 1  # num_blocks + 1
    assert upstream.get_downsample_rates("hidden_states") == RATE
    assert upstream.hidden_sizes == [96] * 4
    assert upstream.padding_invariant == (name == "transformer_ln_cnn")
    for b, (layers, final) in enumerate(expected(name)):
        frames = len(final)
        assert all(h.shape == (3, 22, 96) for h in states)  # T = the longest's
        for got, want in zip(states, layers):
            torch.testing.assert_close(got[b, :frames], want, rtol=0, atol=ATOL)
            assert not got[b, frames:].any()  # zeros beyond the utterance
        torch.testing.assert_close(
            out["last_hidden_state"][b, :frames], final, rtol=0, atol=ATOL
        )


@pytest.mark.parametrize("name", ["transformer", "transformer_ln_cnn", "conformer"])
def test_a_batch_gives_each_utterance_what_it_gives_alone_in_any_order(
    name, loaded, wavs
):
    upstream = loaded(name)
    with torch.no_grad():
        batch = upstream(wavs)["hidden_states"]
        flipped = upstream(wavs[::-1])["hidden_states"]
        alone = [upstream([wav])["hidden_states"] for wav in wavs]
    for b in range(len(wavs)):
        frames = alone[b][0].shape[1]
        for k in range(len(batch)):
            torch.testing.assert_close(
                batch[k][b, :frames], alone[b][k][0], rtol=0, atol=ATOL
            )
            torch.testing.assert_close(
                flipped[k][len(wavs) - 1 - b], batch[k][b], rtol=0, atol=ATOL
            )


@pytest.mark.parametrize("name", MODELS)
def test_s3prl_featurizer_gives_the_weighted_sum_of_our_layers(
    name, loaded, expected, wavs
):
    upstream = loaded(name)
    featurizer = Featurizer(upstream, upstream_device="cpu")
    assert (featurizer.layer_num, featurizer.output_dim) == (4, 96)
    assert featurizer.downsample_rate == RATE
    weights = torch.tensor([0.5, -1.0, 2.0, 0.0])
    with torch.no_grad():
        featurizer.weights.copy_(weights)
        feats = featurizer(wavs, upstream(wavs))
    for b, (layers, _) in enumerate(expected(name)):
        frames = len(layers[0])
        # s3prl keeps round(S / 320) frames: one zero frame past the CNN's here
        assert len(feats[b]) == min(round(LENGTHS[b] / RATE), 22)
        want = weighted(layers, weights)
        torch.testing.assert_close(feats[b][:frames], want, rtol=0, atol=ATOL)
        assert not feats[b][frames:].any()


@pytest.fixture
def s3prl_nn(monkeypatch):
    """``s3prl.nn.upstream`` imported over an empty ``s3prl.hub``; entry registered."""
    import s3prl

    hub = types.ModuleType("s3prl.hub")
    monkeypatch.setitem(sys.modules, "s3prl.hub", hub)
    monkeypatch.setattr(s3prl, "hub", hub, raising=False)
    module = importlib.import_module("s3prl.nn.upstream")
    monkeypatch.setattr(module, "hub", hub)
    register_on_s3prl_hub()
    assert getattr(hub, HUB_NAME) is espnet_ssl_local
    return module


@pytest.mark.parametrize("name", ["transformer", "e_branchformer", "summary_mixing"])
def test_s3prl_nn_upstream_and_featurizer_via_the_hub_name(
    name, saved, expected, wavs, s3prl_nn
):
    upstream = s3prl_nn.S3PRLUpstream(HUB_NAME, path_or_url=str(saved[name]))
    upstream.eval()  # S3PRLUpstream leaves the upstream in training mode
    assert upstream.num_layers == 4 and upstream.hidden_sizes == [96] * 4
    assert upstream.downsample_rates == [RATE] * 4
    featurizer = s3prl_nn.Featurizer(upstream)
    weights = torch.tensor([1.0, 0.0, -0.5, 0.25])
    lengths = torch.tensor(LENGTHS)
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)  # (B, S)
    with torch.no_grad():
        featurizer.weights.copy_(weights)
        hs, hs_len = featurizer(*upstream(padded, lengths))
    # s3prl counts ceil(S / 320) frames (one more than the CNN's here)
    assert hs_len.tolist() == [(n - 1) // RATE + 1 for n in LENGTHS]
    for b, (layers, _) in enumerate(expected(name)):
        frames = len(layers[0])
        want = weighted(layers, weights)
        torch.testing.assert_close(hs[b, :frames], want, rtol=0, atol=ATOL)


def test_a_packed_model_gives_the_states_of_its_files(saved, wavs):
    with torch.no_grad():
        packed = espnet_ssl_local(str(saved["packed"]))(wavs)["hidden_states"]
        files = espnet_ssl_local(str(saved["transformer"]))(wavs)["hidden_states"]
    for got, want in zip(packed, files):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


class NotWeights:
    """A pickled Python object: what a malicious or wrong file could hold."""


def test_bad_model_files_and_archives_are_errors_that_say_the_fix(saved, tmp_path):
    config = str(saved["transformer"].parent / "config.yaml")
    with pytest.raises(SSLUpstreamError, match="needs a checkpoint. Fix: pass ckpt"):
        espnet_ssl_local(None)
    with pytest.raises(SSLUpstreamError, match="model file .* does not exist"):
        espnet_ssl_local(str(tmp_path / "missing.pth"))
    state = torch.load(saved["transformer"], map_location="cpu", weights_only=True)
    state["payload"] = NotWeights()
    torch.save(state, tmp_path / "objects.pth")
    with pytest.raises(SSLUpstreamError, match="as weights only.*are refused"):
        espnet_ssl_local(str(tmp_path / "objects.pth"), model_config=config)
    with zipfile.ZipFile(tmp_path / "asr.zip", "w") as archive:
        meta = dict(yaml_files={"asr_train_config": "c.yaml"}, files={})
        archive.writestr("meta.yaml", yaml.safe_dump(meta))
        archive.writestr("c.yaml", "{}")
    with pytest.raises(SSLUpstreamError, match="holds no ssl_train_config.*pack"):
        espnet_ssl_local(str(tmp_path / "asr.zip"))
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(SSLUpstreamError, match="cannot unpack.*meta.yaml.*Fix"):
        espnet_ssl_local(str(tmp_path / "plain.zip"))
    with pytest.raises(SSLUpstreamError, match="its own config. Fix: drop"):
        espnet_ssl_local(str(saved["packed"]), model_config=config)


def test_wrong_inputs_and_an_unimportable_hub_are_errors(saved, monkeypatch):
    import s3prl

    upstream = espnet_ssl_local(str(saved["transformer"]))
    with pytest.raises(SSLUpstreamError, match="1-D waveforms.*Fix"):
        upstream([torch.zeros(2, 8000)])
    monkeypatch.setitem(sys.modules, "s3prl.hub", None)  # import fails
    monkeypatch.delattr(s3prl, "hub", raising=False)
    with pytest.raises(SSLUpstreamError, match="cannot import s3prl.hub.*Fix"):
        register_on_s3prl_hub()
