"""egs2/mini_synth/ssl2/run.sh end to end, stages 1-9, in a copy of the recipe.

The copy keeps the recipe's links to egs2/TEMPLATE and links tools/ and espnet2/ of this
checkout, so run.sh and path.sh run exactly as in the repository while data/, dump/ and
exp/ land in a temporary folder. Sizes are the smallest that run every stage: a
36-second corpus, k=8, one epoch per model (pretraining and fine-tuning), two for the
phone probe (run.sh's --phone_probe, turned on here).
"""

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet2.fileio.kaldi_data_dir import read_two_column_file, validate_data_dir
from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count
from espnet2.ssl.targets.dumpers.ssl_model import build_ssl_dumper

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY = (
    "--config conf/corpus.conf --train_minutes 0.4 --labeled_minutes 0.15"
    " --dev_minutes 0.1 --test_minutes 0.1"
)
SETS = ("train", "train_labeled", "dev", "test")

pytestmark = pytest.mark.recipe


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for sub in ("TEMPLATE", "mini_synth"):
        shutil.copytree(
            REPO_ROOT / "egs2" / sub,
            root / "egs2" / sub,
            symlinks=True,
            ignore=shutil.ignore_patterns("data", "downloads", "dump", "exp"),
        )
    for link in ("tools", "espnet2"):
        (root / link).symlink_to(REPO_ROOT / link)
    return root / "egs2" / "mini_synth" / "ssl2"


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        ["./run.sh", *args],
        cwd=recipe,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard (stages 2-9: 6 min alone, 9 beside a busy worker)
    )


@pytest.fixture(scope="module")
def first_run(recipe: Path) -> subprocess.CompletedProcess:
    return run(recipe, "--stage", "1", "--stop_stage", "1", "--local_data_opts", TINY)


def test_stage_1_synthesises_and_validates_every_data_dir(recipe, first_run):
    assert first_run.returncode == 0, first_run.stderr[-3000:]
    for dset in SETS:
        assert f"data/{dset}:" in first_run.stdout + first_run.stderr
        summary = validate_data_dir(recipe / "data" / dset)
        assert summary.num_utterances > 0
    assert "Successfully finished" in first_run.stderr


def test_stage_1_is_skipped_when_run_again_with_the_same_options(recipe, first_run):
    wav_scp = recipe / "data" / "train" / "wav.scp"
    before = wav_scp.stat().st_mtime_ns
    again = run(recipe, "--stage", "1", "--stop_stage", "1", "--local_data_opts", TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done with the same options" in again.stderr
    assert wav_scp.stat().st_mtime_ns == before


# one pass over the labeled set: conf/tuning/train_asr_ctc_tiny.yaml validates every 80
# updates (num_iters_per_epoch), "none" restores one epoch per pass
ONE_PASS = "--max_epoch 1 --num_iters_per_epoch none"
# stages 2-9 of HuBERT, two iterations, at the smallest sizes
HUBERT = (
    "--stage", "2", "--stop_stage", "9", "--local_data_opts", TINY,
    "--n_clusters", "8", "--next_n_clusters", "8", "--ssl_iterations", "2",
    "--ssl_args", "--max_epoch 1", "--asr_args", ONE_PASS,
    "--probe_args", "--max_epoch 2", "--phone_probe", "true",
)  # fmt: skip
HUBERT_EXP = "exp/ssl_hubert_tiny"
ASR_EXP = "exp/asr_ssl_hubert_tiny_iter2"
PROBE_EXP = f"{ASR_EXP}_phones"  # --phone_probe true


@pytest.fixture(scope="module")
def hubert_run(recipe: Path, first_run) -> subprocess.CompletedProcess:
    assert first_run.returncode == 0, first_run.stderr[-3000:]
    return run(recipe, *HUBERT)


def labels_match_cnn_frames(recipe: Path, tag: str, dset: str) -> int:
    """Assert every label line has one label per CNN frame; return the line count."""
    samples = read_two_column_file(recipe / "dump/raw" / dset / "utt2num_samples")
    labels = (recipe / "dump/targets" / tag / dset / "text").read_text().splitlines()
    assert [line.split()[0] for line in labels] == [x.id for x in samples]
    for line, entry in zip(labels, samples):
        count = cnn_frame_count(int(entry.value), WAV2VEC2_CNN_SHAPES)
        assert len(line.split()) - 1 == count, line.split()[0]
        assert all(0 <= int(x) < 8 for x in line.split()[1:])
    return len(labels)


def test_stage_2_filters_every_set_into_dump_raw(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    for dset in SETS:
        dump = recipe / "dump/raw" / dset
        assert validate_data_dir(dump).num_utterances > 0
        assert (dump / "utt2num_samples").is_file()
        assert (dump / "filtered_utts").is_file()


def test_stage_3_writes_one_mfcc_label_per_cnn_frame(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    assert labels_match_cnn_frames(recipe, "mfcc_km8", "train") > 0
    assert labels_match_cnn_frames(recipe, "mfcc_km8", "dev") > 0
    tokens = (recipe / "dump/targets/mfcc_km8/tokens.txt").read_text().split()
    assert tokens == [str(i) for i in range(8)] + ["<unk>"]
    assert not (recipe / "dump/targets/mfcc_km8/feats").exists()  # not kept


def test_stage_4_pretrains_hubert_on_the_labels(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    exp = recipe / HUBERT_EXP
    assert (exp / "valid.loss.best.pth").exists()
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["loss"][0]["conf"]["num_classes"] == 8
    assert config["train_data_path_and_name_and_type"][1][0].endswith(
        "dump/targets/mfcc_km8/train/text"
    )


def test_stage_5_trains_iteration_2_on_middle_layer_targets(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    tag = "ssl_hubert_tiny_L2_km8"
    assert labels_match_cnn_frames(recipe, tag, "train") > 0
    meta = yaml.safe_load(
        (recipe / "dump/targets" / tag / "kmeans/kmeans.yaml").read_text()
    )
    assert meta["feature_type"] == "ssl" and meta["layer"] == 2
    assert (recipe / f"{HUBERT_EXP}_iter2" / "valid.loss.best.pth").exists()


def test_stage_6_packs_the_last_iteration_with_a_model_card(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    exp = recipe / f"{HUBERT_EXP}_iter2"
    packed = exp / "ssl_hubert_tiny_iter2.zip"
    with zipfile.ZipFile(packed) as archive:
        names = archive.namelist()
    assert "meta.yaml" in names
    assert {Path(name).name for name in names} >= {"config.yaml", "README.md"}
    assert any(name.endswith(".pth") for name in names)
    with zipfile.ZipFile(packed) as archive:
        card = next(archive.read(n) for n in names if n.endswith("README.md")).decode()
    assert "HuBERT iterations: 2" in card and "hubert_acc_m_2=" in card
    assert "Not fine-tuned yet" in card  # stage 9's release card has the results
    # the label quality of stage 5's targets (mini_synth has phone alignments)
    assert "| ssl_hubert_tiny_L2_km8 | 0." in card
    # the zip is a usable model: the ssl dumper loads it and dumps layer 2
    dumper = build_ssl_dumper(packed_model=packed, layer=2, device="cpu")
    wav = read_two_column_file(recipe / "dump/raw/dev/wav.scp")[0].value
    audio, _ = soundfile.read(wav, dtype="float32")
    speech = torch.from_numpy(audio)[None]
    feats = dumper.extract(speech, torch.tensor([len(audio)]))[0]
    frames = cnn_frame_count(len(audio), WAV2VEC2_CNN_SHAPES)
    assert feats.shape == (frames, 96) and np.isfinite(feats).all()


def zoo_unpack(zip_path: Path, cachedir: Path) -> dict:
    """espnet_model_zoo's local-file path: unpack into ``cachedir``."""
    from espnet_model_zoo.downloader import ModelDownloader

    return ModelDownloader(cachedir=cachedir).download_and_unpack(str(zip_path))


def test_stage_6_zip_unpacks_with_the_model_zoo_into_the_same_model(
    recipe, hubert_run, tmp_path
):
    from espnet2.tasks.ssl import SSLTask

    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    exp = recipe / f"{HUBERT_EXP}_iter2"
    files = zoo_unpack(exp / "ssl_hubert_tiny_iter2.zip", tmp_path)
    model, _ = SSLTask.build_model_from_file(
        files["ssl_train_config"], files["ssl_model_file"], "cpu"
    )
    trained = torch.load(exp / "valid.loss.best.pth")
    assert model.state_dict().keys() == trained.keys()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    targets = recipe / "dump/targets/ssl_hubert_tiny_L2_km8"
    assert Path(files["token_list"]).read_text() == (targets / "tokens.txt").read_text()
    centroids = np.load(files["kmeans_centroids"])
    assert centroids.shape[0] == 8
    assert np.array_equal(centroids, np.load(targets / "kmeans/centroids.npy"))


def test_stage_9_releases_the_card_with_results_and_the_hub_folder(
    recipe, hubert_run, tmp_path
):
    from transformers import HubertModel

    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    release = recipe / f"{HUBERT_EXP}_iter2" / "release"
    with zipfile.ZipFile(release / "ssl_hubert_tiny_iter2.zip") as archive:
        names = archive.namelist()
        card = next(archive.read(n) for n in names if n.endswith("README.md")).decode()
    assert "## Fine-tuning results" in card and "| pretrained | test |" in card
    assert "#### PER (phones" in card and "| probe | test |" in card  # after the CER
    assert card.index("| probe | test |") > card.index("| pretrained | test |")
    hub = release / "hf_hub"
    assert (hub / "README.md").read_text() == card
    assert {"meta.yaml", "config.json", "model.safetensors"} <= {
        p.name for p in hub.iterdir()
    }
    assert (
        HubertModel.from_pretrained(hub, local_files_only=True).config.num_hidden_layers
        == 3
    )
    command = (release / "upload_command.txt").read_text()
    assert (
        f"hf upload <your-hf-user>/ssl_hubert_tiny_iter2 {hub.relative_to(recipe)} ."
        in command
    )


def cnn_weights(state: dict) -> dict:
    """The SSL model's CNN feature encoder weights, keyed relative to the model."""
    prefix = "frontend.upstream.frontend."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def packed_state(zip_path: Path) -> dict:
    """The state dict of the .pth inside a packed zip."""
    with zipfile.ZipFile(zip_path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".pth"))
        with archive.open(name) as f:
            return torch.load(f, map_location="cpu")


def log_span(path: Path):
    """The first and last time stamps of an ESPnet training log."""
    stamps = re.findall(
        r"^\[\S+\] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)", path.read_text(), re.M
    )
    return stamps[0], stamps[-1]


def test_stage_7_fine_tunes_the_packed_model_and_the_scratch_baseline(
    recipe, hubert_run
):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    tokens = (recipe / "dump/token_list/train_labeled_char/tokens.txt").read_text()
    tokens = tokens.split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert "<space>" in tokens and "A" in tokens
    packed = recipe / f"{HUBERT_EXP}_iter2" / "ssl_hubert_tiny_iter2.zip"
    untrained = recipe / f"{HUBERT_EXP}_iter2_untrained" / "untrained.pth"
    for exp, model in ((ASR_EXP, packed), (f"{ASR_EXP}_scratch", untrained)):
        config = yaml.safe_load((recipe / exp / "config.yaml").read_text())
        assert config["frontend"] == "espnet_ssl"
        loaded = Path(config["frontend_conf"]["frontend_conf"]["path_or_url"])
        if model.suffix == ".zip":  # unpacked once into the experiment
            assert loaded.is_relative_to(Path(exp) / "ssl_model")
            assert loaded.suffix == ".pth"
            start = packed_state(model)
            assert all(
                torch.equal(v, start[k]) for k, v in torch.load(recipe / loaded).items()
            )
        else:
            assert loaded == model.relative_to(recipe)
            start = torch.load(model)
        assert config["token_list"] == tokens
        # the CNN is frozen: the fine-tuned model still holds the weights it loaded
        tuned = cnn_weights(torch.load(recipe / exp / "valid.loss.best.pth"))
        start = {k[len("frontend."):]: v for k, v in start.items()
                 if k.startswith("frontend.")}  # fmt: skip
        assert tuned.keys() == start.keys() and len(tuned) > 3
        assert all(torch.equal(tuned[k], start[k]) for k in tuned)
    # run.sh's --finetune_jobs 2: the two trainings ran at once
    spans = [
        log_span(recipe / exp / "train.log") for exp in (ASR_EXP, f"{ASR_EXP}_scratch")
    ]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
    pretrained_cnn = cnn_weights(torch.load(recipe / ASR_EXP / "valid.loss.best.pth"))
    scratch = torch.load(recipe / f"{ASR_EXP}_scratch" / "valid.loss.best.pth")
    key = next(iter(pretrained_cnn))
    assert not torch.equal(pretrained_cnn[key], cnn_weights(scratch)[key])


def test_stage_8_decodes_scores_and_writes_results(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    for exp in (ASR_EXP, f"{ASR_EXP}_scratch"):
        for dset in ("dev", "test"):
            decode = recipe / exp / f"decode_{dset}"
            ids = [
                x.id for x in read_two_column_file(recipe / "dump/raw" / dset / "text")
            ]
            hyps = (decode / "text").read_text().splitlines()
            assert [line.split(maxsplit=1)[0] for line in hyps] == ids
            result = json.loads((decode / "score/result.json").read_text())
            for unit in ("wer", "cer"):
                counts = result[unit]
                assert counts["num_utts"] == len(ids)
                assert counts["num_ref_tokens"] > 0
    results = (recipe / ASR_EXP / "RESULTS.md").read_text()
    for system in ("pretrained", "scratch"):
        for dset in ("dev", "test"):
            assert f"| {system} | {dset} |" in results
    assert "ssl_hubert_tiny_iter2.zip" in results


def test_stage_7_trains_the_phone_probe_on_the_frozen_packed_model(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    for dset in ("train_labeled", "dev", "test"):  # phones of every utterance
        ids = [
            x.id for x in read_two_column_file(recipe / "dump/raw" / dset / "wav.scp")
        ]
        text = read_two_column_file(recipe / "dump/raw" / dset / "text_phn")
        assert [x.id for x in text] == ids
        assert all(len(x.value.split()) >= 3 for x in text)
    tokens = recipe / "dump/token_list/train_labeled_phn/tokens.txt"
    tokens = tokens.read_text().split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(tokens) > 20 and "<space>" not in tokens
    config = yaml.safe_load((recipe / PROBE_EXP / "config.yaml").read_text())
    assert config["token_list"] == tokens and config["token_type"] == "word"
    assert config["frontend_conf"]["multilayer_feature"] is True
    assert config["train_data_path_and_name_and_type"][1][0].endswith(
        "dump/raw/train_labeled/text_phn"
    )
    tuned = torch.load(recipe / PROBE_EXP / "valid.loss.best.pth")
    weights = tuned["frontend.featurizer.weights"]
    assert weights.shape == (3,) and weights.abs().max() > 1e-3  # learned, from 0
    # frozen: the probe's SSL model is the packed model, exactly
    packed = packed_state(recipe / f"{HUBERT_EXP}_iter2" / "ssl_hubert_tiny_iter2.zip")
    prefix = "frontend.upstream."
    upstream = {k[len(prefix) :]: v for k, v in tuned.items() if k.startswith(prefix)}
    assert len(upstream) > 20 and upstream.keys() <= packed.keys()
    assert all(torch.equal(v, packed[k]) for k, v in upstream.items())


def test_stage_8_scores_the_phone_probe_by_per(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    results = (recipe / PROBE_EXP / "RESULTS.md").read_text()
    assert "## PER (phones; the WER of the phone transcripts)" in results
    assert "CER" not in results
    for dset in ("dev", "test"):
        score = recipe / PROBE_EXP / f"decode_{dset}" / "score/result.json"
        result = json.loads(score.read_text())
        assert result["ref"].endswith(f"dump/raw/{dset}/text_phn")
        assert result["wer"]["num_ref_tokens"] > 0
        assert f"| probe | {dset} | {result['wer']['num_utts']} | " in results


def test_the_phone_probe_without_phones_ctm_stops_before_the_pretraining(recipe):
    probe = ("--phone_probe", "true")  # run.sh's default is false
    result = run(recipe, "--stage", "3", "--dumpdir", "dump_without_phones", *probe)
    assert result.returncode == 1
    assert "needs dump_without_phones/raw/train_labeled/phones.ctm" in result.stderr
    assert "or run with --phone_probe false" in result.stderr
    assert "Stage 3" not in result.stderr


def test_a_finished_recipe_does_no_work_when_run_again(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    watched = [
        recipe / "dump/raw/train/wav.scp",
        recipe / "dump/targets/mfcc_km8/train/text",
        recipe / HUBERT_EXP / "valid.loss.best.pth",
        recipe / f"{HUBERT_EXP}_iter2" / "valid.loss.best.pth",
        recipe / f"{HUBERT_EXP}_iter2" / "ssl_hubert_tiny_iter2.zip",
        recipe / ASR_EXP / "valid.loss.best.pth",
        recipe / f"{ASR_EXP}_scratch" / "valid.loss.best.pth",
        recipe / ASR_EXP / "decode_test" / "text",
        recipe / ASR_EXP / "RESULTS.md",
        recipe / f"{HUBERT_EXP}_iter2" / "release/hf_hub/README.md",
        recipe / "dump/raw/test/text_phn",
        recipe / PROBE_EXP / "valid.loss.best.pth",
        recipe / PROBE_EXP / "RESULTS.md",
    ]
    before = [path.stat().st_mtime_ns for path in watched]
    again = run(recipe, *HUBERT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already done with the same options") >= 26
    assert "in one process" not in again.stderr  # ssl_decode's "decoding N set(s)"
    for tool in ("ssl_train", "ssl_kmeans", "asr_train", "asr_inference"):
        assert (
            f"{tool}:" not in again.stderr and f"{tool} arguments" not in again.stderr
        )
    assert [path.stat().st_mtime_ns for path in watched] == before


def test_other_options_on_a_trained_experiment_stop_instead_of_mixing(
    recipe, hubert_run
):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    other = list(HUBERT)
    other[other.index("--max_epoch 1")] = "--max_epoch 2"
    result = run(recipe, *other[:3], "4", *other[4:])  # stop after stage 4
    assert result.returncode == 1
    assert "trained with other options" in result.stderr
    assert "--ssl_tag" in result.stderr


def test_wav2vec2_skips_the_targets_and_pretrains_without_labels(recipe, hubert_run):
    result = run(
        recipe,
        "--stage", "3", "--stop_stage", "4", "--local_data_opts", TINY,
        "--ssl_config", "conf/train_ssl_wav2vec2_tiny.yaml",
        "--ssl_args", "--max_epoch 1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trains without labels; no targets to make" in result.stderr
    exp = recipe / "exp/ssl_wav2vec2_tiny"
    assert (exp / "valid.loss.best.pth").exists()
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert len(config["train_data_path_and_name_and_type"]) == 1  # audio only


def pretrain_summary_mixing(recipe: Path, objective: str, stop_stage: str) -> Path:
    """Stages 4..stop_stage of the tiny SummaryMixing config; returns its exp dir.

    Its CNN is the transformer config's, so the MFCC labels of the HuBERT run fit.
    """
    tag = f"ssl_{objective}_summary_mixing_tiny"
    result = run(
        recipe,
        "--stage", "4", "--stop_stage", stop_stage, "--local_data_opts", TINY,
        "--ssl_config", f"conf/tuning/train_{tag}.yaml", "--n_clusters", "8",
        "--ssl_iterations", "1", "--asr_baseline", "false", "--phone_probe", "false",
        "--ssl_args", "--max_epoch 1", "--asr_args", ONE_PASS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    exp = recipe / "exp" / tag
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["encoder"] == "summary_mixing"
    assert config["encoder_conf"]["mixer"] == "summary_mixing"
    state = torch.load(exp / "valid.loss.best.pth")
    assert any(".mixer.summary." in key for key in state)  # SummaryMixing weights
    assert not any("self_attn" in key for key in state)
    return exp


def test_summary_mixing_hubert_pretrains_packs_and_fine_tunes(recipe, hubert_run):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    exp = pretrain_summary_mixing(recipe, "hubert", "7")
    tag = exp.name
    state = torch.load(exp / "valid.loss.best.pth")
    packed = exp / f"{tag}.zip"
    asr = recipe / "exp" / f"asr_{tag}"
    asr_config = yaml.safe_load((asr / "config.yaml").read_text())
    frontend = Path(asr_config["frontend_conf"]["frontend_conf"]["path_or_url"])
    assert frontend.is_relative_to(Path("exp") / f"asr_{tag}" / "ssl_model")
    assert set(torch.load(recipe / frontend)) == set(packed_state(packed))
    tuned = torch.load(asr / "valid.loss.best.pth")
    key = next(k for k in tuned if ".mixer.summary." in k)  # the SSL encoder inside
    assert torch.equal(tuned[key], state[key[len("frontend.upstream.") :]])
    assert not (recipe / "exp" / f"asr_{tag}_scratch").exists()


def test_an_unknown_option_stops_the_recipe_with_exit_code_2(recipe):
    result = run(recipe, "--n_clusterz", "100")
    assert result.returncode == 2
    assert "unknown option --n_clusterz" in result.stderr


def test_help_lists_the_stage_options(recipe):
    result = run(recipe, "--help")
    assert result.returncode == 0
    assert "--stop_stage" in result.stdout and "--train_set" in result.stdout


def test_a_zoo_unpacked_model_fine_tunes_with_sentencepiece_tokens(
    recipe, hubert_run, tmp_path
):
    assert hubert_run.returncode == 0, hubert_run.stderr[-3000:]
    # a user's download: the zip unpacked by espnet_model_zoo outside the recipe
    zip_path = recipe / f"{HUBERT_EXP}_iter2" / "ssl_hubert_tiny_iter2.zip"
    downloaded = shutil.copy(zip_path, tmp_path / "downloaded.zip")
    unpacked = zoo_unpack(Path(downloaded), tmp_path / "zoo")["ssl_model_file"]
    result = run(
        recipe, "--stage", "7", "--stop_stage", "8", *HUBERT[4:],
        "--token_type", "bpe", "--nbpe", "30", "--pretrained_model", unpacked,
        "--asr_tag", "asr_bpe", "--asr_baseline", "false", "--phone_probe", "false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((recipe / "exp/asr_bpe/config.yaml").read_text())
    assert config["frontend_conf"]["frontend_conf"]["path_or_url"] == unpacked
    tuned = torch.load(recipe / "exp/asr_bpe/valid.loss.best.pth")
    start = {k[len("frontend."):]: v for k, v in torch.load(unpacked).items()
             if k.startswith("frontend.")}  # fmt: skip
    tuned = cnn_weights(tuned)  # the frozen CNN still holds the unpacked weights
    assert tuned.keys() == start.keys() and len(tuned) > 3
    assert all(torch.equal(tuned[k], start[k]) for k in tuned)
    token_dir = recipe / "dump/token_list/train_labeled_bpe30"
    assert (token_dir / "bpe.model").is_file()
    tokens = (token_dir / "tokens.txt").read_text().split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert 10 < len(tokens) <= 30 + 3  # the pieces the labeled text uses
    assert "\u2581" in tokens and "<space>" not in tokens  # sentencepiece, not chars
    assert any(len(t) > 1 and not t.startswith("<") for t in tokens)  # e.g. "THE"
    config = yaml.safe_load((recipe / "exp/asr_bpe/config.yaml").read_text())
    assert config["token_type"] == "bpe" and config["bpemodel"].endswith("bpe.model")
    assert "| pretrained | test |" in (recipe / "exp/asr_bpe/RESULTS.md").read_text()
    assert not (recipe / "exp/asr_bpe_scratch").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (("--asr_config", ""), "--asr_config is required for stages 7-8"),
        (("--token_type", "word"), "--token_type must be char or bpe"),
        (("--num_nodes", "2"), "needs --cuda_cmd"),
        (
            ("--probe_config", "", "--phone_probe", "true"),
            "--phone_probe true needs --probe_config",
        ),
    ],
)
def test_bad_fine_tuning_options_stop_with_exit_code_2(recipe, options, message):
    result = run(recipe, "--stage", "7", *options)
    assert result.returncode == 2
    assert message in result.stderr
