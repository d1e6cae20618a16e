"""Tests for espnet2/bin/ssl_plan.py and espnet2/ssl/study/planner.py (the run
planner)."""

import json
import math
from pathlib import Path

import pytest

from espnet2.bin.ssl_plan import main
from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES
from espnet2.ssl.study.flops import cnn_flops
from espnet2.ssl.study.planner import budget

REPO_ROOT = Path(__file__).resolve().parents[3]
LIBRISPEECH = REPO_ROOT / "egs2/librispeech/ssl2/conf/tuning"
MINI = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory):
    output = tmp_path_factory.mktemp("plan") / "plan.json"
    main([
        "--config", str(LIBRISPEECH / "train_ssl_wav2vec2_base.yaml"),
        "--crop_seconds", "2", "--batch_seconds", "5760", "--num_devices", "8",
        "--max_device_batch_seconds", "90", "--updates", "400000",
        "--device_tflops", "100", "--lr_scaling", "sqrt", "--output", str(output),
    ])  # fmt: skip
    return json.loads(output.read_text())


def test_wav2vec2_base_has_the_published_95m_parameters_within_10_percent(base_plan):
    assert base_plan["parameters"]["total"] == pytest.approx(95.0e6, rel=0.10)
    assert base_plan["parameters"]["encoder"] > 0.8 * base_plan["parameters"]["total"]


def test_counted_flops_agree_with_the_analytic_count_within_10_percent(base_plan):
    check = base_plan["flops_check"]
    assert check["ratio"] == pytest.approx(1.0, abs=0.10), check


def test_training_costs_about_three_forwards(base_plan):
    flops = base_plan["flops"]
    ratio = flops["training_per_audio_s"] / flops["forward_per_audio_s"]
    assert 2.5 < ratio < 4.0, ratio  # backward counted: about 2 forwards


def test_the_plan_multiplies_back_and_the_budget_is_consistent(base_plan):
    batch, spend = base_plan["batch"], base_plan["budget"]
    assert (batch["accum_grad"], batch["device_batch_seconds"]) == (8, 90)
    assert batch["num_devices"] * batch["device_batch_seconds"] * batch[
        "accum_grad"
    ] == pytest.approx(5760)
    assert spend["updates"] == pytest.approx(400000)
    assert spend["seen_hours"] == pytest.approx(400000 * 5760 / 3600)
    assert spend["gpu_hours"] == pytest.approx(
        spend["training_flops"] / (100e12 * 3600)
    )
    # 1.6 h per update is 0.96 of the 100-min reference: sqrt scaling
    assert base_plan["lr"]["lr"] == pytest.approx(5e-4 * (5760 / 6000) ** 0.5)


def test_budget_given_as_gpu_hours_gives_back_the_same_run():
    by_updates = budget(1e12, 100.0, 50.0, updates=1000)
    by_gpu_hours = budget(1e12, 100.0, 50.0, gpu_hours=by_updates["gpu_hours"])
    assert by_gpu_hours["updates"] == pytest.approx(1000)
    assert by_gpu_hours["seen_hours"] == pytest.approx(by_updates["seen_hours"])


def test_cnn_flops_follow_the_layer_formula():
    # 1 s: layer 0 has 3199 frames of 512 x 1 x 10 multiply-adds
    assert cnn_flops(16000, WAV2VEC2_CNN_SHAPES[:1]) == 2 * 3199 * 512 * 10


@pytest.mark.parametrize(
    "config",
    ["train_ssl_hubert_tiny.yaml", "train_ssl_wav2vec2_summary_mixing_tiny.yaml"],
)
def test_tiny_configs_are_planned_with_architecture_overrides(config, capsys):
    result = main([
        "--config", str(MINI / config), "--crop_seconds", "1",
        "--encoder_conf", "num_blocks=1", "--batch_seconds", "60",
        "--seen_hours", "10", "--fixed_crops",
    ])  # fmt: skip
    assert result["batch"]["batch_type"] == "unsorted"
    assert result["budget"]["updates"] == pytest.approx(10 * 3600 / 60)
    assert "| GPU-hours |" in capsys.readouterr().out


def test_wider_encoder_override_costs_more(capsys):
    common = [
        "--config",
        str(MINI / "train_ssl_wav2vec2_tiny.yaml"),
        "--crop_seconds",
        "1",
        "--batch_seconds",
        "60",
        "--updates",
        "10",
    ]
    narrow = main(common)
    deep = main(common + ["--encoder_conf", "num_blocks=4"])
    assert deep["parameters"]["encoder"] > narrow["parameters"]["encoder"]
    assert deep["flops"]["forward_per_audio_s"] > narrow["flops"]["forward_per_audio_s"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--updates", "10", "--seen_hours", "1"], "exactly one"),
        (["--updates", "10", "--config", "missing.yaml"], "no such file"),
    ],
)
def test_bad_requests_are_refused(extra, message):
    cmd = ["--config", str(MINI / "train_ssl_wav2vec2_tiny.yaml"),
           "--batch_seconds", "60", *extra]  # fmt: skip
    with pytest.raises(SystemExit, match=message):
        main(cmd)


def test_device_memory_gives_the_most_audio_per_device_and_the_accumulation():
    common = [
        "--config",
        str(MINI / "train_ssl_wav2vec2_tiny.yaml"),
        "--crop_seconds",
        "2",
        "--batch_seconds",
        "60",
        "--updates",
        "10",
    ]
    result = main(common + ["--device_memory_gb", "0.2"])
    memory, params = result["memory"], result["parameters"]["total"]
    assert memory["activation_bytes_per_audio_s"] > 0
    expected = (0.2e9 - 16 * params) / memory["activation_bytes_per_audio_s"]
    assert memory["max_device_batch_seconds"] == pytest.approx(expected)
    batch = result["batch"]
    assert batch["device_batch_seconds"] <= memory["max_device_batch_seconds"]
    assert batch["accum_grad"] == math.ceil(60 / memory["max_device_batch_seconds"])
    # twice the crop: at least as much activation memory per step
    longer = main(common[:3] + ["4"] + common[4:])
    assert longer["memory"]["step_peak_bytes"] > memory["step_peak_bytes"]


def test_a_device_too_small_for_the_model_is_refused():
    with pytest.raises(SystemExit, match="cannot hold"):
        main(["--config", str(MINI / "train_ssl_wav2vec2_tiny.yaml"),
              "--batch_seconds", "60", "--updates", "10",
              "--device_memory_gb", "0.001"])  # fmt: skip
