"""Tests for espnet2/ssl/train/grad_sync.py: one gradient all-reduce per optimizer
update
under DDP gradient accumulation, through the real ``SSLTrainer.train_one_epoch``.

Two gloo ranks (CPU) train the tiny HuBERT model of ``conftest.py``, built by
``SSLTask`` and wrapped in ``DistributedDataParallel`` as ESPnet's trainer wraps it
(``gradient_as_bucket_view``), with a DDP communication hook that counts the
gradient reductions and then does the default all-reduce (``allreduce_hook``). Each
rank trains on its own data, so the reduction matters. Each rank trains the same two
epochs twice from the same seed: with ``--ddp_no_sync_accum false`` (ESPnet's path)
and ``true``. Epoch 1 has 14 micro-batches (3 updates of ``accum_grad`` 4 and 2
leftover micro-batches, whose gradients ESPnet carries into the next epoch's first
update), epoch 2 has 12. Two variants: all blocks used (``find_unused_parameters``
off, ESPnet's default), and LayerDrop 0.5 with ``find_unused_parameters`` on (as the
LibriSpeech configs), where a block may be skipped in some micro-batches of an update
and not in others.

The weights agree up to summation order: ESPnet's path sums the per-micro-batch
averages over ranks, ours averages the per-rank sums. SGD, because Adam normalises
each gradient: the attention key biases get a gradient that is zero in exact
arithmetic (the softmax ignores a shift shared by all keys), and Adam turns its
rounding noise into a step of about the learning rate with a random sign. Measured
(torch 2.8.0, AMD EPYC, 6 updates at lr 1e-3): SGD 1.5e-8 largest difference; Adam
1.5e-4 on ``linear_k.bias`` and 1.2e-7 on every other parameter. Training moves the
weights by ~5e-3; a wrapper that dropped the leftover gradients would differ by
4.5e-5, one that reduced the first micro-batch of each update instead of the last by
2e-4, with the ranks' weights apart (both measured by patching the wrapper).
"""

import json

import pytest
import torch

from espnet2.ssl.train.grad_sync import NoSyncAccumulation, accumulates_without_sync

pytestmark = pytest.mark.recipe  # two training processes end to end (slower)

ACCUM_GRAD = 4
EPOCH_BATCHES = (14, 12)  # epoch 1 leaves 2 micro-batches without an update
UPDATES = [3, 3]  # per epoch
WEIGHT_TOLERANCE = 1e-6  # SGD at lr 1e-3: rounding leaves ~1e-8
VARIANTS = {  # DDP's find_unused_parameters, encoder_conf overrides
    "all_blocks": (False, {}),
    "layer_drop": (True, {"layer_drop_rate": 0.5, "apply_layer_drop": True}),
}

RANK_SCRIPT = r"""
import json, sys
import torch, torch.distributed as dist
torch.set_num_threads(1)  # two ranks on a small CPU: oversubscribed gloo crawls
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from espnet2.tasks.ssl import SSLTask
from espnet2.train.distributed_utils import DistributedOption
from espnet2.train.reporter import Reporter
rank, world, init_file, out, tmp = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6]
config, variants, accum_grad, epoch_batches = map(json.loads, sys.argv[6:10])
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                        world_size=world)

def build(no_sync, find_unused, encoder_conf):
    args = SSLTask.get_parser().parse_args(["--token_list", "none"])
    for key, value in config.items():
        setattr(args, key, value)
    args.encoder_conf = {**args.encoder_conf, **encoder_conf}
    args.token_list = [str(i) for i in range(10)] + ["<unk>"]
    args.optim, args.optim_conf = "sgd", {"lr": 1e-3}  # see the module docstring
    args.output_dir, args.ngpu, args.accum_grad = tmp, 0, accum_grad
    args.ddp_no_sync_accum = no_sync
    torch.manual_seed(0)  # the same initial weights on every rank and path
    model = SSLTask.build_model(args)
    optimizer = SSLTask.build_optimizers(args, model)[0]
    ddp = torch.nn.parallel.DistributedDataParallel(  # as ESPnet's defaults
        model, find_unused_parameters=find_unused, gradient_as_bucket_view=True)
    torch.manual_seed(10 + rank)  # masks, LayerDrop: own per rank, same per path
    return ddp, optimizer, SSLTask.trainer.build_options(args)

def batches(epoch, count):  # this rank's own audio and labels
    out = []
    for i in range(count):
        gen = torch.Generator().manual_seed(1000 * rank + 100 * epoch + i)
        speech = 0.1 * torch.randn(2, 8000, generator=gen)
        speech[1, 5600:] = 0
        text = torch.randint(0, 10, (2, 24), generator=gen)  # 24 CNN frames
        batch = dict(speech=speech, speech_lengths=torch.tensor([8000, 5600]),
                     text=text, text_lengths=torch.tensor([24, 24]))
        out.append(([f"utt{i}a", f"utt{i}b"], batch))
    return out

def epoch(ddp, optimizer, options, number, data):
    reporter = Reporter()
    reporter.set_epoch(number)
    with reporter.observe("train") as sub:
        SSLTask.trainer.train_one_epoch(
            model=ddp, iterator=data, optimizers=[optimizer], schedulers=[None],
            scaler=None, reporter=sub, summary_writer=None, options=options,
            distributed_option=DistributedOption(distributed=True))

def instrument(ddp, calls, flags, blocks):
    def counting_hook(state, bucket):
        calls["buckets"] += 1
        calls["backwards"] += int(bucket.is_last())  # one per reducing backward
        return allreduce_hook(state, bucket)
    ddp.register_comm_hook(None, counting_hook)
    def before_forward(*_):  # the flag DDP's forward saw, a block count per batch
        flags.append(ddp.require_backward_grad_sync)
        blocks.append(0)
    ddp.module.register_forward_pre_hook(before_forward)
    for block in ddp.module.encoder.encoders:
        block.register_forward_pre_hook(lambda *_: blocks.append(blocks.pop() + 1))

def train(no_sync, find_unused, encoder_conf):
    ddp, optimizer, options = build(no_sync, find_unused, encoder_conf)
    initial = [p.detach().clone() for p in ddp.module.parameters()]
    calls, flags, blocks = dict(buckets=0, backwards=0), [], []
    instrument(ddp, calls, flags, blocks)
    result = dict(reductions=[], buckets=[], updates=[], flags=[], synced_after=[])
    for number, count in enumerate(epoch_batches, 1):
        before = dict(calls, updates=int(ddp.module.num_updates))
        flags.clear()
        epoch(ddp, optimizer, options, number, batches(number, count))
        result["reductions"].append(calls["backwards"] - before["backwards"])
        result["buckets"].append(calls["buckets"] - before["buckets"])
        result["updates"].append(int(ddp.module.num_updates) - before["updates"])
        result["flags"].append(list(flags))
        result["synced_after"].append(ddp.require_backward_grad_sync)
    result["blocks_run"] = list(blocks)
    result["change"] = max(float((p.detach() - q).abs().max())
                           for p, q in zip(ddp.module.parameters(), initial))
    weights = torch.cat([p.detach().flatten() for p in ddp.module.parameters()])
    return result, weights, (ddp, optimizer, options)

def fail_mid_update(ddp, optimizer, options):
    # the 2nd micro-batch (inside no_sync) is malformed: the forward raises
    data = batches(3, 3)
    data[1][1]["speech_lengths"] = torch.tensor([8000])
    try:
        epoch(ddp, optimizer, options, 3, data)
    except AssertionError:
        return ddp.require_backward_grad_sync
    raise RuntimeError("the malformed batch did not raise")

results = {}
for name, (find_unused, encoder_conf) in variants.items():
    before, weights_before, _ = train(False, find_unused, encoder_conf)
    after, weights_after, trained = train(True, find_unused, encoder_conf)
    gathered = [torch.zeros_like(weights_after) for _ in range(world)]
    dist.all_gather(gathered, weights_after)
    results[name] = dict(
        before=before, after=after,
        weight_difference=float((weights_after - weights_before).abs().max()),
        ranks_equal=all(torch.equal(g, weights_after) for g in gathered),
        synced_after_exception=fail_mid_update(*trained),
    )
json.dump(results, open(out, "w"))
dist.destroy_process_group()
"""

_RESULTS = {}  # the ranks run once for all tests of this module


@pytest.fixture
def two_ranks(run_gloo_ranks, ssl_configs, tmp_path):
    """Both ranks' results of RANK_SCRIPT by variant (run on the first use)."""
    if not _RESULTS:
        args = [ssl_configs["hubert"], VARIANTS, ACCUM_GRAD, EPOCH_BATCHES]
        args = [str(tmp_path)] + [json.dumps(arg) for arg in args]
        _RESULTS["ranks"] = run_gloo_ranks(RANK_SCRIPT, tmp_path, *args)
    return _RESULTS["ranks"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_gradient_all_reduce_per_update_instead_of_one_per_micro_batch(
    two_ranks, variant
):
    for rank in two_ranks:
        before, after = rank[variant]["before"], rank[variant]["after"]
        assert before["updates"] == after["updates"] == UPDATES
        assert before["reductions"] == list(EPOCH_BATCHES)  # ESPnet's path
        assert after["reductions"] == UPDATES  # the leftovers wait, unreduced
        per_backward = before["buckets"][1] // EPOCH_BATCHES[1]
        assert after["buckets"][1] == UPDATES[1] * per_backward


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_micro_batch_but_the_last_of_an_update_runs_under_no_sync(
    two_ranks, variant
):
    update = [False] * (ACCUM_GRAD - 1) + [True]
    for rank in two_ranks:
        before, after = rank[variant]["before"], rank[variant]["after"]
        assert after["flags"] == [update * 3 + [False, False], update * 3]
        assert before["flags"] == [[True] * n for n in EPOCH_BATCHES]
        assert after["synced_after"] == [True, True]


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_equal_espnets_path_including_the_leftover_micro_batches(
    two_ranks, variant
):
    for rank in two_ranks:
        result = rank[variant]
        assert result["ranks_equal"]
        assert result["after"]["change"] > 1000 * WEIGHT_TOLERANCE
        assert result["weight_difference"] <= WEIGHT_TOLERANCE, result


def test_layer_drop_skips_blocks_in_some_micro_batches_only(two_ranks):
    """The variant tests what it is for: some updates mix micro-batches that ran a
    block with micro-batches that skipped it."""
    for rank in two_ranks:
        blocks = rank["layer_drop"]["after"]["blocks_run"]
        updates = [blocks[i : i + ACCUM_GRAD] for i in range(0, 12, ACCUM_GRAD)]
        assert any(len(set(update)) > 1 for update in updates), blocks
        assert set(rank["all_blocks"]["after"]["blocks_run"]) == {2}


def test_an_exception_inside_no_sync_leaves_the_model_synchronising(two_ranks):
    for rank in two_ranks:
        assert all(result["synced_after_exception"] for result in rank.values())


def test_no_sync_is_used_only_for_a_ddp_model_that_accumulates():
    model = torch.nn.Linear(2, 2)
    assert not accumulates_without_sync(model, accum_grad=4)
    with pytest.raises(ValueError, match="DistributedDataParallel model"):
        NoSyncAccumulation([], model, accum_grad=4)
