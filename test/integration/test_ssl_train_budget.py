"""Compute-budget options end to end through espnet2.bin.ssl_train, synthesised speech.

``collate_fn_conf.crop_seconds``, ``--batch_seconds``/``--max_device_batch_seconds``
and ``--max_seen_hours`` through ESPnet's real Trainer, iterators and sound reader:
the seen-audio counter is exact (every training utterance once per epoch, cropped),
survives an interruption and resume, and ends training at the budget.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml"
CROP_SECONDS = 1.0
BUDGET = ["--batch_seconds", "8", "--max_device_batch_seconds", "4"]  # 2 x 4 crops

pytestmark = pytest.mark.recipe


def seen_samples(checkpoint: Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(state.get("model", state)["seen_audio.seen_samples"])


@pytest.fixture(scope="module")
def corpus(synth_corpus) -> Path:
    return synth_corpus(
        "budget", seed=5, train_minutes=0.5, labeled_minutes=0.1, dev_minutes=0.1,
        test_minutes=0.1, collect_stats_config=CONFIG,
    )  # fmt: skip


@pytest.fixture(scope="module")
def train(ssl_train):
    """``train(corpus, output_dir, *extra) -> stderr``: the budgeted 1 s-crop run."""

    def run(corpus: Path, output_dir: str, *extra: str) -> str:
        result = ssl_train(
            corpus, *ssl_train.speech_args(CONFIG), *BUDGET,
            "--output_dir", output_dir,
            "--collate_fn_conf", f"crop_seconds={CROP_SECONDS}",
            "--train_shape_file", "stats/train/speech_shape",
            "--valid_shape_file", "stats/valid/speech_shape", *extra,
        )  # fmt: skip
        return result.stderr

    return run


def cropped_epoch_samples(corpus: Path) -> int:
    """Each training utterance once, cropped to CROP_SECONDS (shorter: whole)."""
    total = 0
    for line in (corpus / "data/train/wav.scp").read_text().splitlines():
        path = line.split(maxsplit=1)[1]
        info = soundfile.info(path if os.path.isabs(path) else corpus / path)
        total += min(info.frames, int(CROP_SECONDS * info.samplerate))
    return total


@pytest.fixture(scope="module")
def straight(corpus, train) -> Path:
    log = train(corpus, "straight", "--max_epoch", "2")
    (corpus / "straight" / "stderr.log").write_text(log)
    return corpus / "straight"


@pytest.fixture(scope="module")
def budget_run(corpus, train):
    """Training with a budget of 1.5 epochs of audio: (log, budget in samples)."""
    budget_samples = int(1.5 * cropped_epoch_samples(corpus))
    log = train(
        corpus, "budget", "--max_epoch", "10",
        "--max_seen_hours", f"{budget_samples / 16000 / 3600:.10f}",
    )  # fmt: skip
    return log, budget_samples


def test_seen_audio_is_exact_and_survives_an_interruption(corpus, straight, train):
    log = (straight / "stderr.log").read_text()
    seen = seen_samples(straight / "2epoch.pth")
    assert seen == 2 * cropped_epoch_samples(corpus)
    assert "batch plan: {" in log and "'accum_grad': 2" in log
    for key in ("seen_hours=", "update_seconds=", "batch_seconds="):
        assert key in log, key

    train(corpus, "resumed", "--max_epoch", "1")
    assert seen_samples(corpus / "resumed/1epoch.pth") == seen // 2
    train(corpus, "resumed", "--max_epoch", "2", "--resume", "true")
    assert seen_samples(corpus / "resumed/2epoch.pth") == seen
    assert seen_samples(corpus / "resumed/checkpoint.pth") == seen


def test_plots_against_updates_and_hours_seen(straight):
    from espnet2.bin.ssl_plot_stats import main

    main([str(straight), "--out_dir", str(straight / "plots")])
    for name in ("valid_loss.png", "train_seen_hours.png", "train_update_seconds.png"):
        assert (straight / "plots" / name).stat().st_size > 1000, name


def score(decode: Path, hyp: str, ssl_train) -> None:
    """The real scorer's ``score/result.json`` of ``hyp`` against "a b c"."""
    decode.mkdir(parents=True)
    (decode / "ref").write_text("u1 a b c\n")
    (decode / "text").write_text(f"u1 {hyp}\n")
    subprocess.run(
        [sys.executable, "-m", "espnet2.bin.asr_score", "score", "--ref",
         str(decode / "ref"), "--hyp", str(decode / "text"),
         "--out_dir", str(decode / "score")],
        check=True, env=ssl_train.environ(),
    )  # fmt: skip


def test_a_sweep_report_tabulates_hours_seen_and_scores(
    corpus, straight, budget_run, tmp_path, ssl_train, capsys
):
    """Two finished runs (straight and budget) reported as sweep ``s``; the CER and
    the phone probe's PER come from the real scorer on small reference/hypothesis
    pairs, parameters and FLOPs from the planner on the runs' config."""
    from espnet2.bin.ssl_sweep import main

    expdir = tmp_path / "exp"
    decodes = [("asr_s_straight", "a b c"), ("asr_s_budget", "a x c"),
               ("asr_s_straight_phones", "a x y")]  # fmt: skip
    for tag in ("straight", "budget"):
        (expdir / f"ssl_s_{tag}").parent.mkdir(parents=True, exist_ok=True)
        (expdir / f"ssl_s_{tag}").symlink_to(corpus / tag)
    for exp, hyp in decodes:
        score(expdir / exp / "decode_dev", hyp, ssl_train)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        f"name: s\nargs: [--ssl_config, {CONFIG}]\n"
        "runs:\n  - tag: straight\n  - tag: budget\n"
    )
    main(["report", str(sweep), "--expdir", str(expdir)])
    out = expdir / "sweep_s"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["tag"] for r in rows] == ["straight", "budget"]
    # "a x c" for "a b c": 1 of 5 characters (spaces count) and 1 of 3 words
    assert [float(r["cer_dev"]) for r in rows] == [0, pytest.approx(20.0)]
    assert float(rows[1]["wer_dev"]) == pytest.approx(100 / 3)
    assert float(rows[0]["per_dev"]) == pytest.approx(200 / 3)  # 2 of 3 "phones"
    assert rows[1]["per_dev"] == ""  # no probe for that run
    assert float(rows[0]["seen_hours"]) == pytest.approx(
        seen_samples(straight / "2epoch.pth") / 16000 / 3600
    )
    assert float(rows[0]["crop_seconds"]) == CROP_SECONDS
    assert 0 < float(rows[0]["pretrain_minutes"]) < 10
    assert float(rows[0]["params_m"]) == pytest.approx(0.59, abs=0.01)
    flops = float(rows[0]["train_gflop_per_audio_s"]) * 1e9
    assert float(rows[0]["train_pflop"]) == pytest.approx(
        flops * float(rows[0]["seen_hours"]) * 3600 / 1e15, rel=1e-3
    )
    assert "| straight |" in (out / "results.md").read_text()
    for name in ("cer_vs_seen_hours.png", "valid_loss_vs_seen_hours.png",
                 "per_vs_seen_hours.png", "cer_vs_train_pflop.png"):  # fmt: skip
        assert (out / name).stat().st_size > 1000
    # baseline: true adds each run's scratch fine-tuning; one missing is named
    sweep.write_text(sweep.read_text() + "baseline: true\n")
    score(expdir / "asr_s_straight_scratch/decode_dev", "a b x", ssl_train)
    with pytest.raises(SystemExit):
        main(["report", str(sweep), "--expdir", str(expdir)])
    assert "asr_s_budget_scratch: no decode_" in capsys.readouterr().err
    score(expdir / "asr_s_budget_scratch/decode_dev", "a b c", ssl_train)
    main(["report", str(sweep), "--expdir", str(expdir)])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [float(r["scratch_cer_dev"]) for r in rows] == [pytest.approx(20.0), 0]
    assert [float(r["cer_dev"]) for r in rows] == [0, pytest.approx(20.0)]


def test_max_seen_hours_ends_training_at_the_first_update_past_the_budget(
    corpus, budget_run
):
    log, budget_samples = budget_run
    assert "max_seen_hours=" in log and "reached" in log
    assert (corpus / "budget/2epoch.pth").exists()
    assert not (corpus / "budget/3epoch.pth").exists()
    seen = seen_samples(corpus / "budget/2epoch.pth")
    assert budget_samples <= seen < budget_samples + 2 * 8 * 16000  # < 2 updates over


def test_repeated_non_finite_steps_stop_the_run_with_a_clear_error(corpus, ssl_train):
    """A learning rate of 1e8 (no schedule) blows the weights up at the first update;
    every later step has a non-finite gradient, is skipped, and after 3 in a row the
    run stops with the cause and the fixes; finished epochs stay on disk."""
    result = ssl_train(
        corpus, *ssl_train.speech_args(CONFIG),
        "--output_dir", "nonfinite", "--max_epoch", "20",
        "--train_shape_file", "stats/train/speech_shape",
        "--valid_shape_file", "stats/valid/speech_shape",
        "--scheduler", "none", "--optim_conf", "lr=100000000.0",
        "--max_nonfinite_steps", "3", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "3 optimizer steps in a row had a non-finite loss or gradient" in (
        result.stderr
    )
    assert "Lower the learning rate" in result.stderr
    assert (corpus / "nonfinite" / "1epoch.pth").exists()
    state = torch.load(corpus / "nonfinite/checkpoint.pth", weights_only=False)
    assert int(state["model"]["num_updates"][0]) >= 1  # the one that blew up
