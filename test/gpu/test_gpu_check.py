"""The GPU check's CUDA assertions at tiny sizes (pytest marker ``gpu``).

Skipped without CUDA. ``test/gpu/run.sh`` runs this file first (part t, about 30 s),
then the same scripts at BASE size; ``tools/venv/bin/python -m pytest -m gpu test/gpu``
runs it alone.
"""

import json

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_cpu_randomness_gives_cuda_draws_the_cpu_numbers(script):
    torch.manual_seed(5)
    expected = (torch.rand(4, dtype=torch.float64), torch.randperm(7))
    in_place = torch.empty(3).uniform_()
    seeded = torch.randperm(9, generator=torch.Generator().manual_seed(11))
    mode = script("cpu_random").CpuRandomness()
    torch.manual_seed(5)
    with mode:
        drawn = (
            torch.rand(4, dtype=torch.float64, device="cuda"),
            torch.randperm(7, device="cuda"),
        )
        tensor = torch.empty(3, device="cuda")
        returned = tensor.uniform_()
        generator = torch.Generator(device="cuda").manual_seed(11)
        drawn_seeded = torch.randperm(9, generator=generator, device="cuda")
    for a, b in zip(expected, drawn):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu())
    assert returned is tensor and torch.equal(tensor.cpu(), in_place)
    assert torch.equal(drawn_seeded.cpu(), seeded)
    assert mode.redirected == 4


def test_cpu_randomness_leaves_seeded_kernels_on_cuda(script):
    q = torch.randn(1, 2, 8, 16, device="cuda")  # (B, H, T, D)
    mode = script("cpu_random").CpuRandomness()
    with mode:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert out.device.type == "cuda" and mode.redirected == 0


@pytest.mark.parametrize("objective", ["hubert", "wav2vec2"])
def test_tiny_models_match_the_cpu_and_train_on_cuda(script, objective):
    parity = script("loss_parity")
    options = parity.get_parser().parse_args(
        ["--device", "cuda", "--size", "tiny", "--objectives", objective]
    )
    result = parity.run(options)
    assert result["failures"] == []
    assert result["device_name"] == torch.cuda.get_device_name()
    diffs = result["objectives"][objective]["relative_difference"]
    assert diffs["cuda_fp32"]["loss"] <= parity.TOLERANCES["fp32"]
    assert diffs["cuda_bf16"]["loss"] <= parity.TOLERANCES["bf16"]
    assert result["objectives"][objective]["train"]["num_updates"] == 2


def test_the_wav2vec2_benchmark_reads_the_cuda_allocator(
    script, keep_threads, tmp_path
):
    output = tmp_path / "w2v.json"
    script("bench_wav2vec2_step").main(
        ["--device", "cuda", "--dtype", "bf16", "--sizes", "tiny", "--warmup", "1"]
        + ["--repeats", "2", "--batch_size", "2", "--audio_seconds", "1"]
        + ["--peak_size", "1024", "--output", str(output)]
    )  # fmt: skip
    result = json.loads(output.read_text())
    assert result["summary"]["device_name"] == torch.cuda.get_device_name()
    for record in result["results"]["tiny"].values():
        assert record["cuda_peak_mb_max"] > 0 and record["contended"] is None


def test_the_summary_mixing_benchmark_reads_the_cuda_allocator(
    script, keep_threads, tmp_path
):
    output = tmp_path / "sm.json"
    script("bench_summary_mixing").main(
        ["--device", "cuda", "--dtype", "bf16", "--size", "tiny", "--crops", "1"]
        + ["--variants", "summary_mixing", "sdpa_attention", "--warmup", "1"]
        + ["--repeats", "1", "--denormals", "keep", "--output", str(output)]
    )  # fmt: skip
    result = json.loads(output.read_text())
    for record in result["results"]["1"].values():
        assert record["cuda_max_memory_allocated_mb"] == record["peak_tensor_mb"]
        assert record["cuda_peak_mb_max"] > 0
        assert record["peak_tensor_mb"] > record["step_peak_tensor_mb"] > 0
