"""Tests for espnet2/ssl/study/memory.py (peak tensor memory from profiler records)."""

import torch

from espnet2.ssl.study.memory import check_memory_measure, tensor_memory


def test_the_measure_is_exact_on_tensors_of_known_size():
    measured = check_memory_measure()  # raises when off by more than 1 kB
    assert abs(measured["peak_bytes"] - 12_000_000) <= 1024
    assert abs(measured["live_bytes"] - 40_000_000) <= 1024


def test_a_peak_counts_tensors_alive_together_not_all_allocations():
    def three_in_turn():
        for _ in range(3):
            x = torch.ones(250_000)  # 1 MB, freed before the next
            del x

    _, peak = tensor_memory(lambda: None, three_in_turn)
    assert abs(peak - 1_000_000) <= 1024
