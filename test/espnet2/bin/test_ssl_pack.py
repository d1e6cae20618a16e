"""espnet2.bin.ssl_pack: model zoo zip with its model card, and the hub folder.

The models are the tiny mini_synth HuBERT and wav2vec 2.0 built by SSLTask with
seeded weights; the zips are unpacked by espnet_model_zoo's own ModelDownloader
(its local-file path, and the path it takes for a Hugging Face hub repository), and
loaded by SSLTask.build_model_from_file.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet2.bin.ssl_pack import main as pack_main

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
SAMPLE_RATE = 16000
SEEN_SAMPLES = 16000 * 1800  # half an hour
UPDATES = 1234
TARGETS = "dump/targets/mfcc_km50"
QUALITY = {"name": "mfcc_km50", "phone_purity": 0.354, "cluster_purity": 0.312,
           "pnmi": 0.398, "num_frames": 1000, "num_clusters_used": 50,
           "num_phones": 40, "labels": "x"}  # fmt: skip
VALID_LINE = (
    "2026-12-02 10:00:00 (trainer:1) INFO: 3epoch results: [train] loss=4.1, "
    "[valid] loss=3.9, hubert_acc_m_2=0.134, time=2.1 seconds\n"
)


def write_labels_data(root: Path) -> None:
    """dump/raw/{train,dev} and the targets dir stage 3 writes (k=50)."""
    for dset, count in (("train", 4), ("dev", 2)):
        raw = root / "dump/raw" / dset
        raw.mkdir(parents=True)
        lines = [f"utt{i} {SAMPLE_RATE * (i + 1)}\n" for i in range(count)]
        (raw / "utt2num_samples").write_text("".join(lines))
        (root / TARGETS / dset).mkdir(parents=True)
        (root / TARGETS / dset / "text").write_text("utt0 1 2 3\n")
    targets = root / TARGETS
    (targets / "tokens.txt").write_text(
        "".join(f"{i}\n" for i in range(50)) + "<unk>\n"
    )
    (targets / "kmeans").mkdir()
    np.save(targets / "kmeans/centroids.npy", np.arange(50 * 39, dtype=np.float32))
    meta = {"feature_type": "mfcc", "layer": None, "backend": "faiss",
            "sample_frames": 9000, "n_clusters": 50, "dim": 39}  # fmt: skip
    (targets / "kmeans/kmeans.yaml").write_text(yaml.safe_dump(meta))
    (targets / "quality.json").write_text(json.dumps({"results": [QUALITY]}))


def write_exp(root: Path, objective: str, encoder: str = "") -> Path:
    """exp/ssl_<objective><encoder>_tiny as ssl_train leaves it: config, model, log."""
    from espnet2.tasks.ssl import SSLTask

    exp = root / f"exp/ssl_{objective}{encoder}_tiny"
    exp.mkdir(parents=True)
    data = [
        "--train_data_path_and_name_and_type",
        "dump/raw/train/wav.scp,speech,sound",
    ]
    if objective == "hubert":
        tokens = f"{TARGETS}/tokens.txt"
        data += [
            "--train_data_path_and_name_and_type",
            f"{TARGETS}/train/text,text,text",
        ]
    else:
        tokens = "tokens.txt"
        (root / tokens).write_text("<unk>\n")
    args = SSLTask.get_parser().parse_args(
        ["--config", str(CONF / f"train_{exp.name}.yaml")]
        + ["--token_list", str(root / tokens), "--token_type", "word"]
        + ["--output_dir", str(exp), *data]
    )
    config = vars(args)
    (exp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    torch.manual_seed(0)
    model = SSLTask.build_model(args)
    model.num_updates.fill_(UPDATES)
    model.seen_audio.seen_samples.fill_(SEEN_SAMPLES)
    torch.save(model.state_dict(), exp / "valid.loss.best.pth")
    (exp / "train.log").write_text(VALID_LINE)
    return exp


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A recipe dir with a HuBERT and a wav2vec 2.0 experiment."""
    root = tmp_path_factory.mktemp("recipe")
    write_labels_data(root)
    for objective in ("hubert", "wav2vec2"):
        write_exp(root, objective)
    write_exp(root, "hubert", "_summary_mixing")
    (root / "RESULTS.md").write_text("# asr: CTC\n\n| system | dev |\n|---|---|\n"
                                     "| pretrained | 45.4 |\n")  # fmt: skip
    return root


def pack(root: Path, objective: str, *extra: str) -> Path:
    """Run ``ssl_pack pack`` from the recipe dir; return the zip."""
    exp = f"exp/ssl_{objective}_tiny"
    cwd = os.getcwd()
    os.chdir(root)  # the zip's paths are relative to the recipe dir
    try:
        pack_main(
            ["pack", "--exp_dir", exp, "--model_file", f"{exp}/valid.loss.best.pth",
             "--train_data", "dump/raw/train", "--valid_data", "dump/raw/dev",
             "--recipe", "mini_synth/ssl2", "--outpath", f"{exp}/packed.zip", *extra]
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    return root / exp / "packed.zip"


@pytest.fixture(scope="module")
def hubert_zip(recipe) -> Path:
    return pack(recipe, "hubert", "--results", "RESULTS.md")


def zoo_unpack(zip_path: Path, cachedir: Path) -> dict:
    from espnet_model_zoo.downloader import ModelDownloader

    return ModelDownloader(cachedir=cachedir).download_and_unpack(str(zip_path))


def assert_same_weights(files: dict, original: Path) -> None:
    from espnet2.tasks.ssl import SSLTask

    model, _ = SSLTask.build_model_from_file(
        files["ssl_train_config"], files["ssl_model_file"], "cpu"
    )
    expected = torch.load(original, map_location="cpu")
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("objective", ["hubert", "wav2vec2"])
def test_pack_unpack_with_the_model_zoo_loads_identical_weights(
    recipe, hubert_zip, objective, tmp_path
):
    zip_path = hubert_zip if objective == "hubert" else pack(recipe, objective)
    files = zoo_unpack(zip_path, tmp_path / "cache")
    assert Path(files["ssl_model_file"]).is_relative_to(tmp_path / "cache")
    assert_same_weights(files, recipe / f"exp/ssl_{objective}_tiny/valid.loss.best.pth")
    card = Path(files["ssl_model_file"]).with_name("README.md").read_text()
    assert card.startswith("---\nlibrary_name: espnet\n")


def test_a_hubert_pack_carries_its_token_list_and_k_means_centroids(
    recipe, hubert_zip, tmp_path
):
    files = zoo_unpack(hubert_zip, tmp_path / "cache")
    assert (
        Path(files["token_list"]).read_text()
        == (recipe / TARGETS / "tokens.txt").read_text()
    )
    centroids = np.load(files["kmeans_centroids"])
    assert np.array_equal(centroids, np.load(recipe / TARGETS / "kmeans/centroids.npy"))
    kmeans_yaml = Path(files["kmeans_centroids"]).with_name("kmeans.yaml")
    assert yaml.safe_load(kmeans_yaml.read_text())["n_clusters"] == 50


def test_a_wav2vec2_pack_has_no_targets(recipe, tmp_path):
    files = zoo_unpack(pack(recipe, "wav2vec2"), tmp_path / "cache")
    assert set(files) == {"ssl_train_config", "ssl_model_file"}


def test_the_card_states_what_was_trained_and_how(recipe, hubert_zip):
    from espnet2.tasks.ssl import SSLTask

    exp = recipe / "exp/ssl_hubert_tiny"
    facts = json.loads((exp / "model_card.json").read_text())
    model, _ = SSLTask.build_model_from_file(
        exp / "config.yaml", exp / "valid.loss.best.pth", "cpu"
    )
    arch = facts["architecture"]
    assert arch["parameters"] == sum(p.numel() for p in model.parameters())
    assert arch["objective"] == "hubert" and arch["num_blocks"] == 3
    assert facts["training"]["updates"] == UPDATES
    assert facts["training"]["hours_seen"] == pytest.approx(0.5)
    assert facts["training"]["batch_bins"] == 300000
    assert facts["data"]["train"] == {"name": "train", "utterances": 4,
                                      "hours": 10 / 3600}  # fmt: skip
    assert facts["targets"]["kmeans"]["n_clusters"] == 50
    valid = {"epoch": 3, "loss": "3.9", "hubert_acc_m_2": "0.134"}
    valid["time"] = "2.1 seconds"
    assert facts["validation"] == valid
    card = (exp / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert "hubert" in header["tags"] and header["language"] == ["en"]
    assert "| hours of audio seen | 0.50 |" in card
    assert f"| optimizer updates | {UPDATES} |" in card
    assert "| mfcc_km50 | 0.354 | 0.312 | 0.398 | 1000 |" in card
    assert "### asr: CTC" in card and "| pretrained | 45.4 |" in card


def test_a_card_without_fine_tuning_results_says_so(recipe):
    pack(recipe, "wav2vec2", "--results", "missing/RESULTS.md")
    card = (recipe / "exp/ssl_wav2vec2_tiny/README.md").read_text()
    assert "Not fine-tuned yet" in card
    assert "## Targets" not in card


def test_missing_centroids_stop_the_pack_naming_the_file_and_stage(
    recipe, tmp_path, capsys
):
    broken = tmp_path / "broken"
    shutil.copytree(recipe, broken, symlinks=True)
    (broken / TARGETS / "kmeans/centroids.npy").unlink()
    (broken / "exp/ssl_hubert_tiny/packed.zip").unlink()
    with pytest.raises(SystemExit) as err:
        pack(broken, "hubert")
    assert err.value.code == 1
    message = capsys.readouterr().err
    assert "kmeans/centroids.npy: no such file" in message and "stage" in message
    assert not (broken / "exp/ssl_hubert_tiny/packed.zip").exists()


def test_a_missing_model_file_is_named(recipe, tmp_path, capsys):
    with pytest.raises(SystemExit):
        pack_main(
            ["pack", "--exp_dir", str(recipe / "exp/ssl_hubert_tiny"),
             "--model_file", str(tmp_path / "none.pth"),
             "--outpath", str(tmp_path / "x.zip")]
        )  # fmt: skip
    assert "none.pth: no such model file" in capsys.readouterr().err


def hub(zip_path: Path, out_dir: Path, *extra: str) -> None:
    pack_main(["hub", "--zip", str(zip_path), "--out_dir", str(out_dir),
               "--hf_repo", "someone/tiny", *extra])  # fmt: skip


def test_the_hub_folder_loads_the_way_the_zoo_loads_a_hub_repository(
    recipe, hubert_zip, tmp_path, capsys
):
    from espnet_model_zoo.downloader import ModelDownloader

    exported = tmp_path / "transformers"
    exported.mkdir()
    (exported / "config.json").write_text("{}")
    hub(hubert_zip, tmp_path / "hf_hub", "--transformers_dir", str(exported))
    printed = capsys.readouterr().out
    assert f"hf upload someone/tiny {tmp_path / 'hf_hub'} ." in printed
    folder = tmp_path / "hf_hub"
    assert (folder / "meta.yaml").is_file() and (folder / "config.json").is_file()
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: espnet")
    # what ModelDownloader does after snapshot_download of a hub repository
    downloaded = shutil.copytree(folder, tmp_path / "snapshot")
    files = ModelDownloader._unpack_cache_dir_for_huggingfase(str(downloaded))
    assert_same_weights(files, recipe / "exp/ssl_hubert_tiny/valid.loss.best.pth")


def test_the_hub_refuses_an_archive_that_is_not_a_pack(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("../evil.txt", "x")
        archive.writestr("README.md", "card")
    with pytest.raises(SystemExit):
        hub(bad, tmp_path / "out")
    assert "'../evil.txt' is not a relative path" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_the_command_line_tool_runs_as_a_module(recipe, hubert_zip, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.ssl_pack", "hub", "--zip", str(hubert_zip),
         "--out_dir", str(tmp_path / "hub"), "--hf_repo", "a/b"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hf upload a/b" in result.stdout


def release(root: Path, tag: str) -> Path:
    """Run ``ssl_pack release`` from the recipe dir; return the release folder."""
    exp = f"exp/{tag}"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        pack_main(
            ["release", "--exp_dir", exp, "--model_file", f"{exp}/valid.loss.best.pth",
             "--results", "RESULTS.md", "--hf_repo", "someone/tiny",
             "--out_dir", f"{exp}/release"]
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    return root / exp / "release"


def test_a_hubert_release_is_also_a_transformers_hubert_repository(recipe):
    from transformers import HubertModel

    out = release(recipe, "ssl_hubert_tiny")
    hub = out / "hf_hub"
    names = {p.name for p in hub.iterdir()}
    assert {"meta.yaml", "README.md", "config.json", "model.safetensors"} <= names
    assert "espnet_ssl_head.safetensors" in names  # HuBERT's head, for the way back
    hf_model = HubertModel.from_pretrained(hub, local_files_only=True)
    assert hf_model.config.num_hidden_layers == 3
    with zipfile.ZipFile(out / "ssl_hubert_tiny.zip") as archive:
        card = next(n for n in archive.namelist() if n.endswith("README.md"))
        assert "| pretrained | 45.4 |" in archive.read(card).decode()
    assert "hf upload someone/tiny" in (out / "upload_command.txt").read_text()


def test_a_release_transformers_cannot_express_has_the_espnet_files_only(
    recipe, caplog
):
    out = release(recipe, "ssl_hubert_summary_mixing_tiny")
    assert "no transformers export" in caplog.text and "summary_mixing" in caplog.text
    hub = out / "hf_hub"
    assert (hub / "meta.yaml").is_file() and not (hub / "config.json").exists()
    assert not (out / "transformers").exists()
