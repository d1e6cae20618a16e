"""espnet2/ssl/release/s3prl/upstream.py: SSLTask checkpoints as s3prl 0.4.18 upstreams.

Tiny seeded models of every SSLTask encoder (mini_synth's tiny HuBERT configs: the
wav2vec 2.0 transformer with the GroupNorm CNN and with a LayerNorm CNN, ESPnet's
conformer and e_branchformer, SummaryMixing) are saved as config.yaml + .pth, as
``espnet2.bin.ssl_train`` writes them, and one is packed by ``espnet2.bin.pack ssl``.
Each is loaded through the hub entry, directly or through the real ``s3prl.hub``
(``S3PRLUpstream``, and the call ``run_downstream.py`` makes), and run on a padded
batch of three utterances of different lengths; the expected values come from
``inference_encode`` on each utterance alone, in a model loaded separately.
``run_downstream.py`` itself runs in a subprocess from s3prl's package folder: its
help, and the launcher of the module docstring training s3prl's ``example``
downstream (random data) for one step on the packed model.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import s3prl
import torch
import yaml
from s3prl.upstream.interfaces import Featurizer

from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count
from espnet2.ssl.release.s3prl.upstream import (
    HUB_NAME,
    SSLUpstreamError,
    espnet_ssl_local,
    register_on_s3prl_hub,
)
from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[5]
TUNING = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
EXAMPLE_DOWNSTREAM = Path(__file__).parent / "conf/s3prl_example_downstream_tiny.yaml"
S3PRL_DIR = Path(s3prl.__file__).parent  # run_downstream.py's configs are relative
LAUNCHER = (
    "import runpy\n"
    "from espnet2.ssl.release.s3prl.upstream import register_on_s3prl_hub\n"
    "register_on_s3prl_hub()\n"
    'runpy.run_module("s3prl.run_downstream", run_name="__main__")\n'
)  # the module docstring's run_superb.py
STDERR_TAIL = 4000  # characters of stderr shown when a run fails
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
MODEL_OF = {"packed": "transformer"}  # the model a zip was packed from


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


@pytest.fixture(scope="module")
def hub():
    """The real ``s3prl.hub``, with :func:`espnet_ssl_local` registered on it."""
    register_on_s3prl_hub()
    from s3prl import hub

    assert getattr(hub, HUB_NAME) is espnet_ssl_local
    return hub


@pytest.mark.parametrize("name", ["packed", "e_branchformer", "summary_mixing"])
def test_s3prl_nn_upstream_from_the_real_hub_gives_our_layers(
    name, saved, expected, wavs, hub
):
    from s3prl.nn import Featurizer as NNFeaturizer
    from s3prl.nn import S3PRLUpstream

    assert HUB_NAME in S3PRLUpstream.available_names()
    upstream = S3PRLUpstream(HUB_NAME, path_or_url=str(saved[name]))
    upstream.eval()  # S3PRLUpstream leaves the upstream in training mode
    assert upstream.num_layers == 4 and upstream.hidden_sizes == [96] * 4
    assert upstream.downsample_rates == [RATE] * 4
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)  # (B, S)
    with torch.no_grad():
        hs, hs_len = upstream(padded, torch.tensor(LENGTHS))
    # s3prl counts ceil(S / 320) frames, one more than the CNN's here
    ceil_frames = [(n - 1) // RATE + 1 for n in LENGTHS]
    assert all(n.tolist() == ceil_frames for n in hs_len)
    assert all(h.shape == (3, 23, 96) for h in hs)
    for b, (layers, _) in enumerate(expected(MODEL_OF.get(name, name))):
        frames = len(layers[0])
        for h, want in zip(hs, layers):
            torch.testing.assert_close(h[b, :frames], want, rtol=0, atol=ATOL)
            extra = h[b, frames - 1] if frames == 22 else torch.zeros(96)
            torch.testing.assert_close(h[b, frames], extra, rtol=0, atol=0)
    featurizer = NNFeaturizer(upstream)
    weights = torch.tensor([1.0, 0.0, -0.5, 0.25])
    with torch.no_grad():
        featurizer.weights.copy_(weights)
        feats, feats_len = featurizer(hs, hs_len)
    assert feats_len.tolist() == ceil_frames
    for b, (layers, _) in enumerate(expected(MODEL_OF.get(name, name))):
        want = weighted(layers, weights)
        torch.testing.assert_close(feats[b, : len(want)], want, rtol=0, atol=ATOL)


def test_run_downstreams_way_to_build_an_upstream_takes_a_packed_model(
    saved, expected, wavs, hub
):
    # s3prl/downstream/runner.py: Runner._get_upstream, then _get_featurizer
    upstream = getattr(hub, HUB_NAME)(
        ckpt=str(saved["packed"]), model_config=None, refresh=False
    )
    featurizer = Featurizer(
        upstream=upstream, feature_selection="hidden_states",
        upstream_device="cpu", layer_selection=None, normalize=False,
    )  # fmt: skip
    weights = torch.tensor([0.25, 1.0, -1.0, 0.5])
    with torch.no_grad():
        featurizer.weights.copy_(weights)
        feats = featurizer(wavs, upstream.eval()(wavs))
    for b, (layers, _) in enumerate(expected("transformer")):
        want = weighted(layers, weights)
        torch.testing.assert_close(feats[b][: len(want)], want, rtol=0, atol=ATOL)


def run_in_s3prl_dir(*args: str) -> subprocess.CompletedProcess:
    """``python *args`` in s3prl's package folder, as its README runs it."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=S3PRL_DIR,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
    )


def test_run_downstream_help_runs_and_lists_our_upstream():
    result = run_in_s3prl_dir("run_downstream.py", "-h")
    assert result.returncode == 0, result.stderr[-STDERR_TAIL:]
    assert "--upstream_ckpt" in result.stdout
    assert f"'{HUB_NAME}'" in result.stdout  # "Available options in S3PRL: [...]"


@pytest.mark.recipe  # end to end in other processes
def test_the_docstring_launcher_trains_s3prls_example_downstream_on_a_zip(
    saved, tmp_path
):
    result = run_in_s3prl_dir(
        "-c", LAUNCHER, "-m", "train", "-u", HUB_NAME, "-k", str(saved["packed"]),
        "-d", "example", "-c", str(EXAMPLE_DOWNSTREAM), "-p", str(tmp_path / "exp"),
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-STDERR_TAIL:]
    # a file this test made; it holds the run's argparse Namespace, not only tensors
    states = torch.load(tmp_path / "exp/states-1.ckpt", weights_only=False)
    assert states["Step"] == 1
    assert {"Featurizer", "Downstream"} <= set(states) and "Upstream" not in states
    weights = states["Featurizer"]["weights"]  # one per layer, from zeros
    assert weights.shape == (4,) and weights.abs().min() > 1e-4


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
