"""Tests for espnet2/ssl/study/sweep_budget.py: each run's compute measured by the
planner
on the real model of its config and options, and the hours a budget buys it."""

import json
from pathlib import Path

import pytest

from espnet2.ssl.study import sweep_budget
from espnet2.ssl.study.sweep import load_sweep
from espnet2.ssl.study.sweep_budget import (
    budget_flops,
    plan_runs,
    run_config,
    seen_hours,
)

REPO_ROOT = Path(__file__).resolve().parents[4]
TUNING = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
CROP = 1.0


def sweep_file(tmp_path: Path, budget: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""
name: cost
budget: {budget}
runs:
  - tag: deep
    args: [--ssl_config, {TUNING / "train_ssl_hubert_tiny.yaml"}]
  - tag: shallow
    args: [--ssl_config, {TUNING / "train_ssl_wav2vec2_tiny.yaml"}]
    ssl_args: --encoder_conf num_blocks=1 --encoder_conf linear_units=96
""")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("budget")
    sweep = load_sweep(
        sweep_file(
            tmp_path, f"{{seen_hours: 2, reference: deep, crop_seconds: {CROP}}}"
        )
    )
    return sweep, tmp_path / "exp", plan_runs(sweep, tmp_path / "exp", CROP)


def test_the_ssl_args_reach_the_model_the_planner_measures(measured):
    sweep, _, plans = measured
    assert run_config(sweep.runs[1])["encoder_conf"]["num_blocks"] == 1
    assert run_config(sweep.runs[0])["encoder_conf"]["num_blocks"] == 3
    deep, shallow = plans["deep"], plans["shallow"]
    assert shallow["encoder_parameters"] < deep["encoder_parameters"] / 2
    assert (
        0 < shallow["training_flops_per_audio_s"] < deep["training_flops_per_audio_s"]
    )
    assert deep["forward_flops_per_audio_s"] < deep["training_flops_per_audio_s"]


def test_equal_compute_gives_the_cheaper_model_more_audio(measured):
    sweep, _, plans = measured
    hours = seen_hours(sweep, plans)
    assert hours["deep"] == pytest.approx(2.0, rel=1e-3)
    ratio = (
        plans["deep"]["training_flops_per_audio_s"]
        / plans["shallow"]["training_flops_per_audio_s"]
    )
    assert hours["shallow"] == pytest.approx(2.0 * ratio, rel=1e-3)
    total = budget_flops(sweep, plans)
    for tag, plan in plans.items():  # every run spends the same FLOPs
        spent = plan["training_flops_per_audio_s"] * hours[tag] * 3600
        assert spent == pytest.approx(total, rel=1e-3)


def test_other_budgets(measured, tmp_path):
    sweep, _, plans = measured
    sweep.budget.reference, sweep.budget.seen_hours = None, 0.5
    assert seen_hours(sweep, plans) == {"deep": 0.5, "shallow": 0.5}
    sweep.budget.seen_hours, sweep.budget.training_pflop = None, 1e-3
    hours = seen_hours(sweep, plans)
    assert hours["deep"] == pytest.approx(
        1e12 / plans["deep"]["training_flops_per_audio_s"] / 3600, rel=1e-3
    )


def test_measurements_are_cached_until_the_options_change(measured, monkeypatch):
    sweep, expdir, plans = measured
    cached = json.loads((expdir / "sweep_cost/plan/deep.json").read_text())
    assert (
        cached["training_flops_per_audio_s"]
        == plans["deep"]["training_flops_per_audio_s"]
    )
    calls = []
    monkeypatch.setattr(
        sweep_budget, "measure_run", lambda run, crop: calls.append(run.tag) or {}
    )
    plan_runs(sweep, expdir, CROP)
    assert calls == []
    sweep.runs[1].ssl_args += " --encoder_conf num_blocks=2"
    plan_runs(sweep, expdir, CROP)
    assert calls == ["shallow"]


def test_a_run_without_its_config_file_is_named(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: x\nbudget: {seen_hours: 1}\n"
        "runs: [{tag: a, args: [--ssl_config, no.yaml]}]\n"
    )
    with pytest.raises(ValueError, match="run a: its --ssl_config 'no.yaml'"):
        plan_runs(load_sweep(path), tmp_path, CROP)
