"""wav2vec 2.0 pretraining end to end: espnet2.bin.ssl_train on synthesised speech.

Runs ESPnet's real collect-stats and training entry points (Trainer, iterators,
sound reader) with the mini_synth tiny config on a corpus of about 40 s.
"""

from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG = REPO_ROOT / "egs2/mini_synth/ssl1/conf/tuning/train_ssl_wav2vec2_tiny.yaml"

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
