"""The GPU check's CPU part: its code paths on tiny models with ``--device cpu``.

``test/gpu/run.sh`` runs the same scripts at BASE size on a GPU; here they run on the
mini_synth tiny configs and tiny benchmark sizes, so that everything but CUDA itself
is exercised by the regular suite (about 30 s on 2 cores). Nothing here asserts a
time.
"""

import argparse
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_SH = REPO_ROOT / "test" / "gpu" / "run.sh"
SECONDS = [1.0, 0.8]  # a padded batch of two short utterances


@pytest.fixture(scope="module")
def parity(script) -> dict:
    """``loss_parity.run`` on the tiny configs, CPU against CPU (fp32 and bf16)."""
    options = (
        script("loss_parity")
        .get_parser()
        .parse_args(
            ["--device", "cpu", "--size", "tiny", "--seconds", *map(str, SECONDS)]
        )
    )
    return script("loss_parity").run(options)


def test_parity_on_the_same_device_in_float32_is_exact(parity):
    for name, objective in parity["objectives"].items():
        diffs = objective["relative_difference"]["cpu_fp32"]
        assert diffs["loss"] == 0.0, name  # same draws, same maths: same numbers
        assert objective["eval"]["cpu_fp32"]["num_masked_frames"] > 0, name


def test_parity_under_bf16_autocast_is_close_but_not_exact(parity, script):
    tolerance = script("loss_parity").TOLERANCES["bf16"]
    for name, objective in parity["objectives"].items():
        diff = objective["relative_difference"]["cpu_bf16"]["loss"]
        assert 0.0 < diff <= tolerance, name  # bf16 really ran, within tolerance
        eval_stats = objective["eval"]
        masked = eval_stats["cpu_bf16"]["num_masked_frames"]
        assert masked == eval_stats["cpu_fp32"]["num_masked_frames"], name


def test_two_training_steps_count_two_updates_and_the_audio(parity):
    assert parity["failures"] == []
    samples = sum(int(round(s * 16000)) for s in SECONDS)
    for name, objective in parity["objectives"].items():
        train = objective["train"]
        assert train["num_updates"] == 2 and train["global_step"] == 2, name
        assert train["seen_samples"] == 2 * samples, name
        assert all(map(math.isfinite, train["losses"] + train["grad_norms"])), name
        assert train["params_finite"], name


def test_a_wrong_loss_or_other_draws_are_reported_as_failures(script):
    parity_module = script("loss_parity")
    reference = {"loss": 4.0, "num_masked_frames": 30.0}
    other = {"loss": 4.2, "num_masked_frames": 31.0}
    diffs = parity_module.relative_differences(reference, other)
    failures = parity_module.parity_failures("x", reference, other, "bf16", diffs)
    assert len(failures) == 2
    assert "relative difference 0.05 > 0.02" in failures[0]
    assert "num_masked_frames" in failures[1]


def test_wrong_training_counters_are_reported_as_failures(script):
    result = {
        "losses": [1.0, float("nan")],
        "grad_norms": [1.0, 1.0],
        "params_finite": True,
        "num_updates": 1,
        "global_step": 2,
        "seen_samples": 10,
        "expected_seen_samples": 20,
    }
    failures = script("loss_parity").training_failures("t", result, num_steps=2)
    assert [f.split(":")[1].split()[0] for f in failures] == [
        "non-finite",
        "num_updates",
        "seen_samples",
    ]


def test_cpu_randomness_leaves_cpu_draws_unchanged(script):
    mode = script("cpu_random").CpuRandomness()
    torch.manual_seed(3)
    expected = (torch.rand(4), torch.randperm(6), torch.empty(3).uniform_())
    torch.manual_seed(3)
    with mode:
        drawn = (torch.rand(4), torch.randperm(6), torch.empty(3).uniform_())
    for a, b in zip(expected, drawn):
        assert torch.equal(a, b)
    assert mode.redirected == 0  # nothing was on another device


@pytest.fixture(scope="module")
def bench_outputs(script, tmp_path_factory) -> Path:
    """Both benchmarks at tiny size on the CPU under bf16 autocast, as run.sh names
    their results, with a ``status.tsv`` of successes."""
    out = tmp_path_factory.mktemp("gpu_check")
    threads = torch.get_num_threads()
    common = ["--device", "cpu", "--dtype", "bf16", "--threads", "1"]
    common += ["--warmup", "0", "--repeats", "1"]
    try:
        script("bench_wav2vec2_step").main(
            common + ["--sizes", "tiny", "--batch_size", "2", "--audio_seconds", "1"]
            + ["--peak_size", "128", "--output", str(out / "b_wav2vec2_2x1s.json")]
        )  # fmt: skip
        script("bench_summary_mixing").main(
            common + ["--size", "tiny", "--crops", "1", "2", "--denormals", "keep"]
            + ["--variants", "summary_mixing", "sdpa_attention", "self_attention"]
            + ["--output", str(out / "c_summary_mixing.json")]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    (out / "status.tsv").write_text("b_wav2vec2_2x1s\t0\t5\nc_summary_mixing\t0\t9\n")
    return out


def test_the_wav2vec2_benchmark_runs_with_device_and_dtype(bench_outputs):
    result = json.loads((bench_outputs / "b_wav2vec2_2x1s.json").read_text())
    summary = result["summary"]
    assert (summary["device"], summary["dtype"]) == ("cpu", "bf16")
    assert summary["batch"] == "2 x 1.0 s random audio, no padding"
    assert summary["throughput_ratio_ours_over_hf"]["tiny"] > 0
    for model in ("ours", "hf"):
        record = result["results"]["tiny"][model]
        assert record["batch_size"] == 2 and record["audio_seconds"] == 1.0
        assert record["audio_s_per_s"] == pytest.approx(2.0 / record["step_s_median"])
        assert "cuda_peak_mb_max" not in record  # a CPU run reads no CUDA allocator


def test_the_summary_mixing_benchmark_runs_with_device_and_dtype(bench_outputs):
    result = json.loads((bench_outputs / "c_summary_mixing.json").read_text())
    assert (result["summary"]["device"], result["summary"]["dtype"]) == ("cpu", "bf16")
    assert set(result["results"]) == {"1", "2"}
    for by_variant in result["results"].values():
        assert set(by_variant) == {"summary_mixing", "sdpa_attention", "self_attention"}
        for record in by_variant.values():
            assert record["peak_tensor_mb"] > record["step_peak_tensor_mb"] > 0


def test_the_summary_page_lists_every_part_and_no_failure(script, bench_outputs):
    summarise = script("summarise")
    assert summarise.main(["--out", str(bench_outputs)]) == 0
    page = (bench_outputs / "results.md").read_text()
    assert "## b. wav2vec 2.0 training step" in page
    assert "## c. SummaryMixing vs attention" in page
    assert "| 2 | sdpa_attention |" in page
    assert page.rstrip().endswith("- none")


def test_the_summary_fails_when_a_part_failed_or_timed_out(script, tmp_path):
    (tmp_path / "status.tsv").write_text(
        "a_parity\t0\t40\nc_summary_mixing\t124\t100\n"
    )
    assert script("summarise").main(["--out", str(tmp_path)]) == 1
    assert (
        "part c_summary_mixing: exit status 124"
        in (tmp_path / "results.md").read_text()
    )


def test_run_sh_parses_and_rejects_an_unknown_device(tmp_path):
    assert subprocess.run(["bash", "-n", str(RUN_SH)]).returncode == 0
    shown = subprocess.run(
        ["bash", str(RUN_SH), "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "--device" in shown.stdout
    wrong = subprocess.run(
        ["bash", str(RUN_SH), "--device", "tpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and "--device must be cuda or cpu" in wrong.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_loss_parity_refuses_cuda_without_cuda(script):
    options = argparse.Namespace(device="cuda", train_dtype=None)
    with pytest.raises(SystemExit, match="CUDA is not available"):
        script("loss_parity").run(options)
