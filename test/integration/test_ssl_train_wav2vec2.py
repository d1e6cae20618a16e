"""wav2vec 2.0 pretraining end to end: espnet2.bin.ssl_train on synthesised speech.

Runs ESPnet's real collect-stats and training entry points (Trainer, iterators,
sound reader) with the mini_synth tiny config on a corpus of about 40 s, and once more
for one epoch with waveform augmentation (``collate_fn_conf.augmentation``).
"""

from pathlib import Path

import pytest
import yaml

from espnet2.ssl.synth.noise import NoiseConfig, build_noise_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml"

pytestmark = pytest.mark.recipe


@pytest.fixture(scope="module")
def trained(synth_corpus, ssl_train) -> Path:
    root = synth_corpus(
        "w2v2", seed=3, train_minutes=0.7, labeled_minutes=0.1, dev_minutes=0.2,
        test_minutes=0.1, collect_stats_config=CONFIG,
    )  # fmt: skip
    result = ssl_train(
        root, *ssl_train.speech_args(CONFIG), "--output_dir", "exp",
        "--train_shape_file", "stats/train/speech_shape",
        "--valid_shape_file", "stats/valid/speech_shape",
        "--max_epoch", "2", "--batch_bins", "200000", "--accum_grad", "2",
        "--use_tensorboard", "true", "--use_matplotlib", "true",
    )  # fmt: skip
    (root / "exp" / "train.log").write_text(result.stderr)  # as the recipe does
    return root / "exp"


def test_training_writes_checkpoints_and_a_config_that_rebuilds_the_model(trained):
    from espnet2.tasks.ssl import SSLTask

    assert (trained / "2epoch.pth").exists() and (trained / "checkpoint.pth").exists()
    model, _ = SSLTask.build_model_from_file(
        trained / "config.yaml", trained / "2epoch.pth", "cpu"
    )
    assert int(model.num_updates) > 0
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["loss"][0]["name"] == "wav2vec2"


def test_the_log_reports_every_wav2vec2_statistic(trained):
    log = (trained / "train.log").read_text()
    for key in (
        "loss_contrastive", "loss_diversity", "loss_feature_penalty",
        "contrastive_accuracy", "code_perplexity", "prob_perplexity",
        "gumbel_temperature", "num_masked_frames", "grad_norm", "optim0_lr0",
    ):  # fmt: skip
        assert key in log, key


def test_the_update_counter_counts_optimizer_steps_not_forward_passes(trained):
    import torch

    state = torch.load(
        trained / "checkpoint.pth", map_location="cpu", weights_only=False
    )
    model_state = state["model"]
    steps = sum(
        int(s["step"]) for s in state["optimizers"][0]["state"].values()
    ) // len(state["optimizers"][0]["state"])
    assert int(model_state["num_updates"]) == steps > 0
    # accum_grad 2: two forward passes per optimizer update
    assert int(model_state["global_step"]) == 2 * steps


@pytest.fixture(scope="module")
def trained_with_augmentation(trained, ssl_train) -> Path:
    """One more epoch on the same corpus: noise from the YAML, speed from the CLI,
    1 s crops (of the augmented audio; they keep the run short)."""
    root = trained.parent
    noise = NoiseConfig(
        seed=3, babble_clips=1, babble_pool=2, babble_seconds=3.0,
        coloured_seconds=3.0, hum_seconds=1.0,
    )  # fmt: skip
    build_noise_dir(noise, root / "data" / "noise", root / "audio" / "noise")
    config = yaml.safe_load(CONFIG.read_text())
    config["collate_fn_conf"]["augmentation"] = dict(
        noise_scp="data/noise/wav.scp", noise_prob=0.5
    )
    config["collate_fn_conf"]["crop_seconds"] = 1.0
    (root / "augmented.yaml").write_text(yaml.safe_dump(config))
    result = ssl_train(
        root, *ssl_train.speech_args(root / "augmented.yaml"),
        "--output_dir", "exp_aug", "--max_epoch", "1", "--batch_bins", "200000",
        "--train_shape_file", "stats/train/speech_shape",
        "--valid_shape_file", "stats/valid/speech_shape",
        "--collate_fn_conf", "augmentation.speed_prob=0.5",
    )  # fmt: skip
    (root / "exp_aug" / "train.log").write_text(result.stderr)
    return root / "exp_aug"


def test_augmented_training_reports_its_shares_and_validation_none(
    trained_with_augmentation,
):
    import torch

    exp = trained_with_augmentation
    state = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    train, valid = (state["reporter"]["stats"][1][key] for key in ("train", "valid"))
    # noise and speed each on half of the ~17 utterances (averages weighted by
    # masked frames): 3/4 have at least one
    noise, speed = train["aug_noise_share"], train["aug_speed_share"]
    assert 0.2 <= noise <= 0.8 and 0.2 <= speed <= 0.8
    assert max(noise, speed) <= train["aug_share"] <= min(1.0, noise + speed)
    assert train["aug_share"] >= 0.5 and train["aug_volume_share"] == 0.0
    assert not [key for key in valid if key.startswith("aug_")]
    assert "aug_share" in (exp / "train.log").read_text()
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["collate_fn_conf"]["augmentation"] == dict(
        noise_scp="data/noise/wav.scp", noise_prob=0.5, speed_prob=0.5
    )
