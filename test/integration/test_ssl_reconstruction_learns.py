"""The shipped tiny reconstruction config learns: espnet2.bin.ssl_train on mini_synth.

Trains egs2/mini_synth/ssl2/conf/train_ssl_reconstruction_tiny.yaml (log-mel
frontend, span + frequency masking, L1 reconstruction) through ESPnet's real
training entry point on a minute of synthesised speech, and checks that the
validation reconstruction loss on held-out voices falls. The run is shortened
(the only overrides): batches of about 9 s of audio, 4 epochs of 8 updates, and a
warm-up of 8 updates instead of 100, so that the learning rate is reached within
the run.

Measured (corpus seed 11, one CPU thread; torch 2.12.1 and 2.8.0 alike): validation
``loss_reconstruction`` 0.724, 0.659, 0.639, 0.624 after epochs 1-4 (training loss
0.841, 0.753, 0.722, 0.684); predicting the utterance mean (0 after
``utterance_mvn`` with unit variance) scores about 0.8, the mean absolute value of a
unit Gaussian. The training takes about 4 s; the subprocess spends about 15 s
importing ESPnet, so nothing here imports the SSL task in the test process.
"""

from pathlib import Path

import pytest
import soundfile
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "egs2/mini_synth/ssl2/conf/train_ssl_reconstruction_tiny.yaml"
EPOCHS, ITERS_PER_EPOCH = 4, 8
SHORT_RUN = [
    "--max_epoch", str(EPOCHS), "--num_iters_per_epoch", str(ITERS_PER_EPOCH),
    "--batch_bins", "150000",
    "--scheduler_conf", f"warmup_steps_list=[0,{ITERS_PER_EPOCH},4000]",
]  # fmt: skip
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 2 shared cores
MIN_DROP = 0.05  # validation loss, first epoch minus last (measured 0.100)
MAX_FINAL = 0.7  # last validation loss (measured 0.624; the mean scores about 0.8)

pytestmark = pytest.mark.recipe


def write_shapes(root: Path) -> None:
    """``<set>_shape`` (utterance, samples) for data/train and data/dev, what
    ESPnet's collect-stats would write, read from the audio headers."""
    for name in ("train", "dev"):
        lines = []
        for line in (root / "data" / name / "wav.scp").read_text().splitlines():
            utt, path = line.split(maxsplit=1)
            lines.append(f"{utt} {soundfile.info(path).frames}\n")
        (root / f"{name}_shape").write_text("".join(lines))


@pytest.fixture(scope="module")
def trained(synth_corpus, ssl_train) -> Path:
    """The experiment dir of a short training run."""
    root = synth_corpus(
        "reconstruction_learns", seed=11, train_minutes=1.0, labeled_minutes=0.1,
        dev_minutes=0.25, test_minutes=0.1,
    )  # fmt: skip
    write_shapes(root)
    result = ssl_train(
        root, *ssl_train.speech_args(CONFIG), "--output_dir", "exp",
        "--train_shape_file", "train_shape", "--valid_shape_file", "dev_shape",
        *SHORT_RUN, env=ONE_THREAD,
    )  # fmt: skip
    (root / "exp" / "train.log").write_text(result.stderr)
    return root / "exp"


def valid_losses(exp: Path):
    """Validation ``loss_reconstruction`` per epoch, from the checkpoint."""
    state = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    stats = state["reporter"]["stats"]
    return [
        float(stats[epoch]["valid"]["loss_reconstruction"]) for epoch in sorted(stats)
    ]


def test_validation_reconstruction_loss_falls(trained):
    losses = valid_losses(trained)
    assert len(losses) == EPOCHS
    assert losses[-1] < losses[0] - MIN_DROP, losses
    assert losses[-1] < MAX_FINAL, losses


def test_the_run_logs_the_reconstruction_statistics(trained):
    log = (trained / "train.log").read_text()
    for key in ("loss_reconstruction", "masked_share", "num_masked_frames"):
        assert key in log, key
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["loss"][0]["name"] == "reconstruction"
    assert [u["name"] for u in config["util"]] == ["mask", "freq_mask"]
    assert (trained / "valid.loss.best.pth").exists()
