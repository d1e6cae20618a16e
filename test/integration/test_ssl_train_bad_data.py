"""Bad training data end to end through espnet2.bin.ssl_train (tiny HuBERT, 1 epoch).

Two training utterances of a synthesised corpus are broken: one has NaN samples (a
float WAV: found only when loaded), one has no label line. By default the run stops
at the first batch that holds one, naming it, the data file and the fix;
``--check_data_before_training true`` stops before training at the missing label;
``--bad_utterances skip`` trains the epoch without both and logs each with the count.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet2.ssl.frame_geometry import cnn_frame_count, read_cnn_shapes

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_hubert_tiny.yaml"
N_CLUSTERS = 50

pytestmark = pytest.mark.recipe


def write_labels(data_dir: Path, skip: str = "") -> None:
    """One (made-up) cluster id per CNN frame of every utterance but ``skip``."""
    shapes = read_cnn_shapes(CONFIG)
    lines = []
    for line in (data_dir / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        frames = cnn_frame_count(soundfile.info(path).frames, shapes)
        if utt != skip:
            lines.append(" ".join([utt] + [str(i % N_CLUSTERS) for i in range(frames)]))
    (data_dir / "labels").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def corpus(synth_corpus):
    """(corpus root, the NaN utterance, the unlabelled utterance)."""
    root = synth_corpus(
        "bad_data", seed=3, train_minutes=0.3, labeled_minutes=0.05,
        dev_minutes=0.05, test_minutes=0.05,
        tokens=[str(i) for i in range(N_CLUSTERS)] + ["<unk>"],
    )  # fmt: skip
    train = root / "data/train"
    lines = (train / "wav.scp").read_text().splitlines()
    entries = [line.split(maxsplit=1) for line in lines]
    nan_utt, unlabelled = entries[1][0], entries[-2][0]
    audio, rate = soundfile.read(entries[1][1], dtype="float32")
    audio[len(audio) // 2] = np.nan
    nan_wav = root / "audio" / f"{nan_utt}-float.wav"
    soundfile.write(nan_wav, audio, rate, subtype="FLOAT")
    entries[1][1] = str(nan_wav)
    (train / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in entries))
    write_labels(train, skip=unlabelled)
    write_labels(root / "data/dev")
    return root, nan_utt, unlabelled


@pytest.fixture(scope="module")
def train(ssl_train):
    """``train(root, output_dir, *extra) -> CompletedProcess`` (any exit status):
    one epoch of the tiny HuBERT on data/train with labels, validated on data/dev."""

    def run(root: Path, output_dir: str, *extra: str) -> subprocess.CompletedProcess:
        args = ["--config", str(CONFIG), "--token_list", "tokens.txt"]
        args += ["--token_type", "word", "--ngpu", "0", "--max_epoch", "1"]
        args += ["--output_dir", output_dir]
        args += ["--batch_type", "unsorted", "--batch_size", "4"]
        for name, data in (("train", "data/train"), ("valid", "data/dev")):
            field = f"--{name}_data_path_and_name_and_type"
            args += [field, f"{data}/wav.scp,speech,sound"]
            args += [field, f"{data}/labels,text,text"]
            args += [f"--{name}_shape_file", f"{data}/wav.scp"]
        return ssl_train(root, *args, *extra, check=False)

    return run


def test_by_default_the_first_bad_utterance_stops_training_naming_it(corpus, train):
    root, nan_utt, unlabelled = corpus
    result = train(root, "exp_error")
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "espnet2.ssl.data.checked_dataset.BadUtteranceError: data/train/"
    )
    expected = {
        nan_utt: ("wav.scp: utterance", "NaN or infinite", "re-create the file"),
        unlabelled: ("labels: utterance", "no line in the labels", "make labels"),
    }
    utt = nan_utt if f"'{nan_utt}'" in error else unlabelled
    assert f"'{utt}'" in error and "Fix:" in error
    assert all(words in error for words in expected[utt]), error
    assert not (root / "exp_error/1epoch.pth").exists()


def test_the_check_before_training_stops_at_the_missing_label_first(corpus, train):
    """NaN samples are found only when loaded; the missing label from its file."""
    root, nan_utt, unlabelled = corpus
    result = train(root, "exp_check", "--check_data_before_training", "true")
    assert result.returncode != 0
    assert "in check_before_training" in result.stderr
    assert f"data/train/labels: utterance '{unlabelled}': has audio in" in result.stderr
    assert not (root / "exp_check/1epoch.pth").exists()


def test_skip_trains_without_the_bad_utterances_and_counts_them(corpus, train):
    root, nan_utt, unlabelled = corpus
    result = train(root, "exp_skip", "--bad_utterances", "skip")
    assert result.returncode == 0, result.stderr[-3000:]
    skips = [line for line in result.stderr.splitlines() if "skipped bad" in line]
    assert len(skips) == 2, skips
    assert any(f"'{nan_utt}'" in line and "NaN or infinite" in line for line in skips)
    assert any(f"'{unlabelled}'" in line and "labels" in line for line in skips)
    assert "training skips so far: 2" in skips[-1]
    assert "bad_utterances: skip" in (root / "exp_skip/config.yaml").read_text()
    assert (root / "exp_skip/1epoch.pth").exists()
