"""Host syncs of one training micro-batch, per objective, and the counter itself.

A host sync is an operation that makes the Python thread wait for the device
(``espnet2/ssl/train/host_syncs.py`` says which ones it sees and which it cannot).
Each objective's tiny model is built by ESPnet's real ``SSLTask`` from the mini_synth
tiny configs, with the optimizer hook that counts updates; one training micro-batch
(forward and backward, after a first step and an update) must stay within
``SYNC_BUDGET``.

What remains, measured on a CPU (3 utterances of 1, 0.75 and 0.56 s):

* ``hubert``: 0;
* ``wav2vec2``: 0;
* ``reconstruction``: 2, both in ESPnet's ``UtteranceMVN`` (``normalize:
  utterance_mvn``), which calls ``make_pad_mask(lengths)`` without ``maxlen``: a
  ``tolist`` of the lengths and a tensor made from that list.

Outside the budget (once, not per micro-batch): the first training forward after
``train()`` or ``load_state_dict`` reads ``num_updates`` for the schedules. The
trainer's own reads (ESPnet's reporter and gradient checks) are not the model's.
"""

from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
import yaml

from espnet2.ssl.train.host_syncs import HostSyncCounter
from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[4]
CONF_DIR = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
SYNC_BUDGET = 3  # per training micro-batch, forward and backward
NUM_CLASSES = 50  # train_ssl_hubert_tiny.yaml
LENGTHS = (16000, 12000, 9000)  # samples at 16 kHz, padded batch


def tiny_model(objective: str) -> Tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The objective's tiny model and optimizer, built by ``SSLTask``."""
    config = yaml.safe_load((CONF_DIR / f"train_ssl_{objective}_tiny.yaml").read_text())
    args = SSLTask.get_parser().parse_args(
        ["--token_list", "none", "--token_type", "word"]
    )
    for key, value in config.items():
        setattr(args, key, value)
    args.token_list = [str(i) for i in range(NUM_CLASSES)] + ["<unk>"]
    torch.manual_seed(0)
    model = SSLTask.build_model(args)
    optimizer = SSLTask.build_optimizers(args, model)[0]
    return model.train(), optimizer


def micro_batch(objective: str) -> Dict[str, torch.Tensor]:
    """Random audio (B, S), its lengths (B,), and frame labels for HuBERT."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor(LENGTHS)
    speech = torch.zeros(len(LENGTHS), max(LENGTHS))
    for b, n in enumerate(LENGTHS):
        speech[b, :n] = 0.1 * torch.randn(n, generator=generator)
    batch = dict(speech=speech, speech_lengths=lengths)
    if objective == "hubert":
        frames = (lengths - 400) // 320 + 1  # 20 ms CNN frames
        text = torch.randint(NUM_CLASSES, (len(LENGTHS), int(frames.max())))
        padded = torch.arange(text.shape[1])[None, :] >= frames[:, None]
        batch.update(text=text.masked_fill(padded, -1), text_lengths=frames)
    return batch


@pytest.mark.parametrize("objective", ["hubert", "wav2vec2", "reconstruction"])
def test_a_training_micro_batch_stays_within_the_host_sync_budget(objective):
    model, optimizer = tiny_model(objective)
    batch = micro_batch(objective)
    model(**batch)[0].backward()  # the first forward reads num_updates once
    optimizer.step()
    optimizer.zero_grad()
    with HostSyncCounter() as syncs:
        loss, stats, weight = model(**batch)
        loss.backward()
    assert syncs.count <= SYNC_BUDGET, syncs.summary()
    assert int(model.num_updates) == 1 and int(model.global_step) == 2
    assert all(isinstance(value, torch.Tensor) for value in stats.values())
    assert float(weight) == float(stats["sample_size"]) > 0


def test_the_counter_sees_every_kind_of_host_read():
    x, lengths = torch.randn(4, 5), torch.tensor([3, 5])
    with HostSyncCounter() as syncs:
        x.sum().item()  # _local_scalar_dense
        x[x > 0]  # index with a bool mask
        lengths.tolist()
        x[:, : lengths.max()]  # _local_scalar_dense
        torch.where(x > 0)  # nonzero
        torch.unique(lengths)  # _unique2
        torch.tensor([1.0])  # lift_fresh: a host-to-device copy on a GPU
        x.cpu()
        x.numpy()
    assert syncs.count == 9, syncs.summary()
    assert "test_host_syncs.py" in syncs.records[0]


def test_the_counter_ignores_work_that_stays_on_the_device():
    x, lengths = torch.randn(4, 5), torch.tensor([3, 5])
    with HostSyncCounter() as syncs:
        torch.where(x > 0, x, 0.0)
        x.masked_fill(x > 0, 1.0)
        torch.arange(5)[None, :] >= lengths[:, None]
        x.argsort(dim=1)
        x[torch.tensor([0, 2])]  # long indices: a gather
    assert syncs.count == 1, syncs.summary()  # the torch.tensor of the indices
    lengths.tolist()  # outside: the wrapped methods are restored
    assert syncs.count == 1
