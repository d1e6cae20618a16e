"""A reconstruction model (mini_synth's tiny config) through the tools around SSLTask.

The recipe's label query, the run planner, ssl_pack (zip + model card), the
Hugging Face export (refused: transformers has no such pretraining model), the ASR
fine-tuning frontend ``espnet_ssl`` and the s3prl upstream each get a seeded tiny
reconstruction model saved as ``espnet2.bin.ssl_train`` leaves it.
"""

import os
from pathlib import Path

import pytest
import torch
import yaml

from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "egs2/mini_synth/ssl2/conf/train_ssl_reconstruction_tiny.yaml"
LENGTHS = (8000, 5600)  # samples: 26 and 18 frames of 20 ms (centred STFT)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the tiny models run 10-100x faster on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    """exp/ssl_reconstruction_tiny of a recipe dir: config.yaml, model, train.log."""
    root = tmp_path_factory.mktemp("recipe")
    exp = root / "exp/ssl_reconstruction_tiny"
    exp.mkdir(parents=True)
    raw = root / "dump/raw/train"
    raw.mkdir(parents=True)
    (raw / "utt2num_samples").write_text("utt0 16000\nutt1 32000\n")
    (root / "tokens.txt").write_text("<unk>\n")
    args = SSLTask.get_parser().parse_args(
        ["--config", str(CONFIG), "--token_list", str(root / "tokens.txt")]
        + ["--token_type", "word", "--output_dir", str(exp)]
        + ["--train_data_path_and_name_and_type", f"{raw}/wav.scp,speech,sound"]
    )
    (exp / "config.yaml").write_text(yaml.safe_dump(vars(args), sort_keys=False))
    torch.manual_seed(0)
    model = SSLTask.build_model(args)
    torch.save(model.state_dict(), exp / "valid.loss.best.pth")
    (exp / "train.log").write_text(
        "x (trainer:1) INFO: 2epoch results: [train] loss=0.8, [valid] loss=0.62, "
        "loss_reconstruction=0.62\n"
    )
    return exp


def _speech():
    generator = torch.Generator().manual_seed(0)
    speech = torch.zeros(len(LENGTHS), max(LENGTHS))
    for b, n in enumerate(LENGTHS):
        speech[b, :n] = 0.1 * torch.randn(n, generator=generator)
    return speech, torch.tensor(LENGTHS)


def test_the_recipe_trains_it_without_labels(capsys):
    from espnet2.bin.ssl_recipe_config import main

    main(["needs_labels", str(CONFIG)])
    assert capsys.readouterr().out.strip() == "false"


def test_the_planner_measures_it_and_skips_the_cnn_only_flops_check(capsys):
    from espnet2.bin.ssl_plan import main
    from espnet2.ssl.study.planner import _batch

    result = main(
        ["--config", str(CONFIG), "--crop_seconds", "1", "--batch_seconds", "60"]
        + ["--updates", "10"]
    )
    assert result["flops_check"] is None  # the analytic count models the CNN
    assert result["flops"]["training_per_audio_s"] > 0
    assert 0 < result["parameters"]["encoder"] < result["parameters"]["total"]
    assert "| GPU-hours |" in capsys.readouterr().out
    assert set(_batch(yaml.safe_load(CONFIG.read_text()), 1.0, 16000)) == {
        "speech",
        "speech_lengths",
    }


def test_ssl_pack_packs_it_with_a_card_that_describes_the_objective(exp, tmp_path):
    from espnet_model_zoo.downloader import ModelDownloader

    from espnet2.bin.ssl_pack import main

    root, cwd = exp.parents[1], os.getcwd()
    os.chdir(root)
    try:
        main(
            ["pack", "--exp_dir", "exp/ssl_reconstruction_tiny", "--model_file",
             "exp/ssl_reconstruction_tiny/valid.loss.best.pth", "--train_data",
             "dump/raw/train", "--recipe", "mini_synth/ssl2", "--outpath",
             "exp/ssl_reconstruction_tiny/packed.zip"]
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    files = ModelDownloader(cachedir=tmp_path).download_and_unpack(
        str(exp / "packed.zip")
    )
    assert set(files) == {"ssl_train_config", "ssl_model_file"}  # no targets
    model, _ = SSLTask.build_model_from_file(
        files["ssl_train_config"], files["ssl_model_file"], "cpu"
    )
    expected = torch.load(exp / "valid.loss.best.pth", map_location="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    card = Path(files["ssl_model_file"]).with_name("README.md").read_text()
    assert "(reconstruction objective, transformer encoder)" in card
    assert "Objective: `reconstruction`: generative" in card
    assert "loss_reconstruction=0.62" in card


def test_the_hugging_face_export_is_refused_with_status_3(exp, tmp_path, capsys):
    from espnet2.bin.ssl_hf_convert import main

    with pytest.raises(SystemExit) as err:
        main(
            ["--to_hf", "--ssl_train_config", str(exp / "config.yaml"),
             "--ssl_model_file", str(exp / "valid.loss.best.pth"),
             "--out_dir", str(tmp_path / "hf")]
        )  # fmt: skip
    assert err.value.code == 3
    message = capsys.readouterr().err
    assert "NotExpressibleError" in message and "'reconstruction'" in message
    assert not (tmp_path / "hf" / "config.json").exists()


def test_the_asr_frontend_espnet_ssl_loads_it_and_encodes(exp):
    from espnet2.asr.frontend.espnet_ssl import ESPnetSSLFrontend

    frontend = ESPnetSSLFrontend(
        frontend_conf={"path_or_url": str(exp / "valid.loss.best.pth")},
        multilayer_feature=True,
    )
    speech, lengths = _speech()
    frontend.train()  # fine-tuning: time masking on, frequency masking never
    feats, feats_lengths = frontend(speech, lengths)
    assert feats.shape == (2, 26, 96) and feats_lengths.tolist() == [26, 18]
    assert torch.isfinite(feats).all()
    upstream = frontend.upstream
    upstream.eval()
    with torch.no_grad():
        final, layers, _ = upstream.inference_encode(speech, lengths)
        upstream.util_modules["freq_mask"].num_masks = 0  # inference never masks
        final_off, layers_off, _ = upstream.inference_encode(speech, lengths)
    assert torch.equal(final, final_off) and len(layers) == 3


def test_the_s3prl_upstream_gives_every_layer(exp):
    from espnet2.ssl.release.s3prl.upstream import espnet_ssl_local

    upstream = espnet_ssl_local(str(exp / "valid.loss.best.pth"))
    upstream.eval()
    speech, lengths = _speech()
    with torch.no_grad():
        out = upstream([speech[b, :n] for b, n in enumerate(lengths.tolist())])
    hidden = out["hidden_states"]
    assert len(hidden) == 4 and hidden[-1].shape == (2, 26, 96)
    assert torch.isfinite(hidden[-1]).all()
