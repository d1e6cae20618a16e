"""Two gloo ranks of espnet2.bin.ssl_train on CPU against one process, both objectives.

ESPnet's ``batch_bins`` is global: every batch is sharded over the ranks
(``batch[rank::world_size]``) and ``DistributedDataParallel`` averages the gradients,
with each rank's loss weighted by its ``sample_size``. Two ranks must therefore train
like one process given the combined batches, and the counters that are global by
design (audio seen, updates, masked frames) must be equal, exactly.

Equal weights (to rounding) need the training randomness to depend on the
utterance alone, not on the stream it is drawn from: each process draws masks,
negatives and Gumbel noise from its own generator, row after row of its own batch, so
a rank's utterance gets other draws than the same utterance in the combined batch.
The ranks therefore run ``ssl_train`` with three draws replaced (``SSL_TRAIN`` below:
masks seeded by the utterance length, negatives drawn per utterance, no Gumbel noise)
and the config removes what is random or batch-dependent by design:

* dropout 0 (each process draws its own dropout masks);
* ``crop_audio: false``: ESPnet crops each batch to its shortest utterance, which on
  a rank is its shard's shortest, so two ranks would train on more audio;
* a LayerNorm CNN (``norm_mode: layer_norm``): the GroupNorm of the first CNN layer
  normalises over the padded time axis, so an utterance's features would depend on
  the longest utterance of its shard;
* wav2vec 2.0 ``diversity_weight`` and ``feature_penalty_weight`` 0: the codebook
  perplexity and the feature penalty are statistics of a rank's batch (as in fairseq:
  each GPU computes them on its own batch), so with them two ranks optimise the mean
  of two half-batch statistics, not the statistic of the combined batch.

Everything else is the real thing: ESPnet's launcher, iterators, sharding, DDP,
AdamW, schedule, gradient clipping, our model, losses and counters.

Why not a tolerance on the unmodified runs: AdamW moves each weight by about the
learning rate per update whatever the gradient, so two correct runs with different
draws differ by up to twice the summed learning rates (2e-4 after the 4 updates
here, measured), and so would a wrong gradient; a loss tolerance is no better at
these learning rates. Made deterministic, the runs agree to 1e-7 (WEIGHT_TOLERANCE).
"""

import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Mapping

import numpy as np
import pytest
import soundfile
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
NUM_CLASSES = 50  # train_ssl_hubert_tiny.yaml
EPOCHS = 2
TIMEOUT_S = 300  # for the three processes of one objective together
# AdamW moves every weight by about the learning rate per update whatever the
# gradient's size: 1e-5, 2e-5, 3e-5, 4e-5 over the 4 warm-up updates here, so any
# disagreement in a gradient shows at that scale (ESPnet's HuBERT weighting by
# utterances instead of masked frames: 1.3e-4). Rounding (the gloo sum of two
# half-batch gradients against one sum) leaves about 1e-7.
WEIGHT_TOLERANCE = 2e-6

SSL_TRAIN = '''
"""python -m espnet2.bin.ssl_train, its training draws depending on the utterance."""
import runpy, sys
import torch
from espnet2.ssl.loss.wav2vec2 import Wav2Vec2Loss
from espnet2.ssl.quantizer.gumbel import GumbelVectorQuantizer
from espnet2.ssl.mask.span import SpanMasking

draw_masks, draw_negatives = SpanMasking.compute_mask, Wav2Vec2Loss._sample_negatives

def masks_seeded_by_length(self, lengths, max_frames, seeds=None, generator=None):
    seeds = [int(n) for n in lengths] if seeds is None else seeds
    return draw_masks(self, lengths, max_frames, seeds, generator)

def negatives_per_utterance(self, mask_m, generator=None):
    blocks, first = [], 0
    for row in mask_m:  # (T,) bool; its own generator, indices shifted to the batch
        count = int(row.sum())
        block = draw_negatives(self, row[None], torch.Generator().manual_seed(count))
        blocks.append(torch.where(block >= 0, block + first, block))
        first += count
    return torch.cat(blocks)

def straight_through_without_noise(self, logits, generator=None):
    soft = (logits / self.temperature).softmax(dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard + (soft - soft.detach())

SpanMasking.compute_mask = masks_seeded_by_length
Wav2Vec2Loss._sample_negatives = negatives_per_utterance
GumbelVectorQuantizer._gumbel_one_hot = straight_through_without_noise
sys.argv[0] = "ssl_train"
runpy.run_module("espnet2.bin.ssl_train", run_name="__main__")
'''

pytestmark = pytest.mark.recipe


@pytest.fixture(scope="module")
def corpus(synth_corpus) -> Path:
    """7 training and 3 dev utterances, shape files, random frame labels, tokens."""
    root = synth_corpus(
        "dist", seed=7, train_minutes=0.3, labeled_minutes=0.1, dev_minutes=0.1,
        test_minutes=0.1, tokens=None,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for dset in ("train", "dev"):
        shapes, labels = [], []
        for line in (root / "data" / dset / "wav.scp").read_text().splitlines():
            uid, path = line.split(maxsplit=1)
            samples = soundfile.info(path).frames
            frames = (samples - 400) // 320 + 1  # one label per 20 ms CNN frame
            shapes.append(f"{uid} {samples}\n")
            ids = rng.integers(0, NUM_CLASSES, frames)
            labels.append(f"{uid} {' '.join(map(str, ids))}\n")
        (root / f"{dset}_shape").write_text("".join(shapes))
        (root / f"{dset}_labels").write_text("".join(labels))
    (root / "tokens_wav2vec2.txt").write_text("<unk>\n")
    tokens = "".join(f"{i}\n" for i in range(NUM_CLASSES)) + "<unk>\n"
    (root / "tokens_hubert.txt").write_text(tokens)
    return root


def comparable_config(objective: str, path: Path) -> Path:
    """The tiny config without what is random or batch-dependent (module docstring)."""
    conf = yaml.safe_load((CONF_DIR / f"train_ssl_{objective}_tiny.yaml").read_text())
    conf["encoder_conf"].update(dropout_rate=0.0, attention_dropout_rate=0.0)
    conf["model_conf"]["input_dropout"] = 0.0
    conf["frontend_conf"]["norm_mode"] = "layer_norm"
    conf["collate_fn_conf"] = {"crop_audio": False}
    if objective == "wav2vec2":
        conf["loss"][0]["conf"].update(
            feature_dropout=0.0, diversity_weight=0.0, feature_penalty_weight=0.0
        )
    path.write_text(yaml.safe_dump(conf))
    return path


def ssl_train_command(
    ssl_train, corpus: Path, objective: str, output_dir: str
) -> List[str]:
    config = comparable_config(objective, corpus / f"{objective}.yaml")
    args = ["--config", str(config), "--output_dir", output_dir, "--ngpu", "0"]
    args += ["--token_list", f"tokens_{objective}.txt", "--token_type", "word"]
    args += ["--train_data_path_and_name_and_type", "data/train/wav.scp,speech,sound"]
    args += ["--valid_data_path_and_name_and_type", "data/dev/wav.scp,speech,sound"]
    if objective == "hubert":
        args += ["--train_data_path_and_name_and_type", "train_labels,text,text"]
        args += ["--valid_data_path_and_name_and_type", "dev_labels,text,text"]
    args += ["--train_shape_file", "train_shape", "--valid_shape_file", "dev_shape"]
    # 2 training batches per epoch, 1 dev batch of 3 utterances. Every rank needs an
    # utterance of every batch: ESPnet sets min_batch_size to the world size under
    # DDP, so the single process gets the same to make the same batches.
    args += ["--batch_bins", "200000", "--min_batch_size", "2"]
    args += ["--max_epoch", str(EPOCHS), "--use_tensorboard", "false"]
    return ssl_train.command(*args, code=SSL_TRAIN)


def run_together(
    jobs: Dict[str, List[str]], cwd: Path, env: Mapping[str, str]
) -> Dict[str, int]:
    """Starts every job at once; kills the others as soon as one fails, and all of
    them after TIMEOUT_S (a rank whose peer died waits forever in a collective).
    Each job's stderr goes to ``<cwd>/<name>.log``."""
    logs = {name: (cwd / f"{name}.log").open("w") for name in jobs}
    procs = {
        name: subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=logs[name]
        )
        for name, cmd in jobs.items()
    }
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p in procs.values()):
            if any(p.poll() for p in procs.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for log in logs.values():
            log.close()
    return {name: proc.returncode for name, proc in procs.items()}


@pytest.fixture(scope="module", params=["wav2vec2", "hubert"])
def runs(request, corpus, ssl_train) -> Dict[str, Path]:
    """One process (``one``) and two gloo ranks (``two``) of the same training, at
    once: their output dirs and the logs with the epoch results."""
    objective = request.param
    one, two = f"{objective}_one", f"{objective}_two"
    init = f"file://{corpus / (two + '.init')}"
    dist = ["--dist_backend", "gloo", "--dist_init_method", init]
    dist += ["--dist_world_size", "2", "--multiprocessing_distributed", "false"]
    jobs = {one: ssl_train_command(ssl_train, corpus, objective, one)}
    for rank in (0, 1):
        jobs[f"{two}_rank{rank}"] = ssl_train_command(
            ssl_train, corpus, objective, two
        ) + [*dist, "--dist_rank", str(rank)]
    env = ssl_train.environ({"OMP_NUM_THREADS": "1"})
    codes = run_together(jobs, corpus, env)
    for name, code in codes.items():
        log = (corpus / f"{name}.log").read_text()
        assert code == 0, f"{name}: exit {code} (-9: killed)\n{log[-3000:]}"
    return {
        "one": corpus / one,
        "two": corpus / two,
        "one_log": corpus / f"{one}.log",
        "two_log": corpus / f"{two}_rank0.log",  # rank 0 logs the epochs
    }


def model_state(exp: Path) -> Dict[str, torch.Tensor]:
    state = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    return state["model"]


def epoch_stats(log: Path, epoch: int, mode: str) -> Dict[str, float]:
    """``key=value`` of ESPnet's ``<epoch>epoch results: [train] ... [valid] ...``."""
    line = next(x for x in log.read_text().splitlines() if f"{epoch}epoch results" in x)
    part = line.split(f"[{mode}]")[1].split("[")[0]
    return {key: float(v) for key, v in re.findall(r"(\w+)=([-+.e0-9]+)", part)}


def test_every_rank_finishes_and_the_counters_equal_one_process(runs, corpus):
    one, two = model_state(runs["one"]), model_state(runs["two"])
    shapes = (corpus / "train_shape").read_text().splitlines()
    epoch_samples = sum(int(line.split()[1]) for line in shapes)
    assert int(two["seen_audio.seen_samples"]) == EPOCHS * epoch_samples
    for key in ("seen_audio.seen_samples", "num_updates", "global_step"):
        assert torch.equal(two[key], one[key]), key
    assert int(two["num_updates"]) == 2 * EPOCHS
    jsonl = [(runs[r] / "seen_audio.jsonl").read_text() for r in ("one", "two")]
    assert jsonl[0] == jsonl[1]


def test_logged_masked_frames_and_sample_size_are_those_of_the_global_batch(runs):
    for epoch in range(1, EPOCHS + 1):
        one = epoch_stats(runs["one_log"], epoch, "train")
        two = epoch_stats(runs["two_log"], epoch, "train")
        for key in ("num_masked_frames", "sample_size", "seen_hours", "batch_seconds"):
            assert two[key] == pytest.approx(one[key], rel=1e-6), (epoch, key)


def test_weights_and_losses_equal_one_process_with_the_combined_batch(runs):
    one, two = model_state(runs["one"]), model_state(runs["two"])
    diffs = {
        key: float((two[key] - one[key]).abs().max())
        for key in one
        if one[key].is_floating_point()
    }
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < WEIGHT_TOLERANCE, (worst, diffs[worst])
    for epoch in range(1, EPOCHS + 1):
        for mode in ("train", "valid"):
            one_loss = epoch_stats(runs["one_log"], epoch, mode)["loss"]
            two_loss = epoch_stats(runs["two_log"], epoch, mode)["loss"]
            assert two_loss == pytest.approx(one_loss, abs=1e-3), (epoch, mode)
