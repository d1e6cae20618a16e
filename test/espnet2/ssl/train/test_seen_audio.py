"""Tests for espnet2/ssl/train/seen_audio.py (audio seen in training, all ranks)."""

import pytest
import torch

from espnet2.ssl.train.seen_audio import SeenAudio


def test_batches_add_their_valid_samples_and_updates_close_the_pending_ones():
    seen = SeenAudio(sample_rate=16000)
    assert int(seen.add(torch.tensor([16000, 8000]))) == 24000
    assert int(seen.add(torch.tensor([32000]))) == 32000
    assert seen.update_seconds() == 0  # no update yet
    seen.close_update()
    assert seen.update_seconds() == pytest.approx(3.5)
    assert int(seen.pending_samples) == 0
    seen.add(torch.tensor([16000 * 3600]))
    assert seen.seen_hours() == pytest.approx(1 + 3.5 / 3600)
    assert seen.update_seconds() == pytest.approx(3.5)  # until the next update


def test_counters_survive_a_state_dict_round_trip_exactly():
    seen = SeenAudio()
    seen.add(torch.tensor([2**40 + 3]))  # beyond float32's exact integers
    restored = SeenAudio()
    restored.load_state_dict(seen.state_dict())
    assert int(restored.seen_samples) == 2**40 + 3


def test_counts_summed_elsewhere_are_added_and_reported_as_tensors():
    """The SSL model reduces the samples with its other counts and hands the sum
    over; the step's stats stay on the device (0-dim tensors)."""
    seen = SeenAudio(sample_rate=16000)
    seen.add_samples(torch.tensor(48000.0, dtype=torch.float64))
    seen.close_update()
    seen.add_samples(torch.tensor([16000]))
    stats = seen.step_stats(torch.tensor(16000.0))
    assert int(seen.seen_samples) == 64000 and int(seen.pending_samples) == 16000
    assert all(value.dim() == 0 for value in stats.values())
    assert float(stats["batch_seconds"]) == pytest.approx(1.0)
    assert float(stats["update_seconds"]) == pytest.approx(3.0)
    assert float(stats["seen_hours"]) == pytest.approx(4.0 / 3600)
    assert seen.update_seconds() == pytest.approx(3.0)


def test_a_checkpoint_from_before_the_counter_loads_with_zero_counts():
    module = torch.nn.Module()
    module.seen_audio = SeenAudio()
    module.seen_audio.add(torch.tensor([5]))
    module.load_state_dict({}, strict=True)
    assert int(module.seen_audio.seen_samples) == 0


RANK_SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from espnet2.ssl.train.seen_audio import SeenAudio
rank, world, init_file, out = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                        world_size=world)
seen = SeenAudio()
lengths = torch.tensor([1000 * (rank + 1)] * (rank + 1))  # rank 0: 1000, 1: 2 x 2000
batch = int(seen.add(lengths))
seen.close_update()
json.dump([batch, int(seen.seen_samples), seen.update_seconds()], open(out, "w"))
dist.destroy_process_group()
"""


def test_with_two_gloo_ranks_every_rank_counts_both_ranks_audio(
    run_gloo_ranks, tmp_path
):
    for result in run_gloo_ranks(RANK_SCRIPT, tmp_path):
        assert result == [5000, 5000, 5000 / 16000]
