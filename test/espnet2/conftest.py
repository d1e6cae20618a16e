"""Fixtures: tiny SSL models built through ESPnet's real SSLTask parser and builder,
and a harness for scripts run on several gloo ranks.

Shared by the SSL model and wav2vec 2.0 tests (as fixtures: test/ is not a package).
Sizes are tiny so that a forward/backward takes milliseconds on a CPU.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import torch
from tiny_configs import tiny_config

from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[2]
RANK_TIMEOUT_S = 120  # for each rank's process

# The recipe's tiny configs at test sizes (test/helpers/tiny_configs.py), without
# dropout, with a LayerNorm CNN (wav2vec 2.0 LARGE's form) and small losses.
NO_DROPOUT = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
WAV2VEC2 = tiny_config(
    "wav2vec2",
    frontend_conf=dict(norm_mode="layer_norm"),
    encoder_conf=NO_DROPOUT,
    model_conf=dict(input_dropout=0.0),
    loss=[
        dict(
            name="wav2vec2",
            conf=dict(
                feature_size=16,
                final_dim=12,
                num_negatives=5,
                num_groups=2,
                num_entries=8,
                feature_dropout=0.0,
            ),
        )
    ],
    util=[dict(name="mask", conf=dict(mask_prob=0.65, mask_length=4))],
)
CNN_SHAPES = WAV2VEC2["frontend_conf"]["shapes"]

HUBERT = copy.deepcopy(WAV2VEC2)
HUBERT["loss"] = [dict(name="hubert", conf=dict(num_classes=10, final_dim=12))]
HUBERT["model_conf"] = dict(input_dropout=0.0)


def build(config: Dict, seed: int = 0, overrides: Optional[Dict] = None):
    """Returns (model, args) built by SSLTask from ``config`` (+ ``overrides``)."""
    parser = SSLTask.get_parser()
    args = parser.parse_args(["--token_list", "none", "--token_type", "word"])
    conf = copy.deepcopy(config)
    conf.update(overrides or {})
    for key, value in conf.items():
        setattr(args, key, value)
    args.token_list = [str(i) for i in range(10)] + ["<unk>"]
    torch.manual_seed(seed)
    return SSLTask.build_model(args), args


def batch(lengths=(8000, 5600), seed: int = 0):
    """Random audio (B, S) with lengths in samples (padding is zeros)."""
    gen = torch.Generator().manual_seed(seed)
    speech = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        speech[b, :n] = 0.1 * torch.randn(n, generator=gen)
    return speech, torch.tensor(lengths)


@pytest.fixture
def ssl_configs() -> Dict[str, Dict]:
    """The tiny configs by objective name."""
    return {"wav2vec2": WAV2VEC2, "hubert": HUBERT}


@pytest.fixture
def build_ssl_model():
    """``build(config, seed=0, overrides=None) -> (model, args)``."""
    return build


@pytest.fixture
def audio_batch():
    """``batch(lengths=(8000, 5600), seed=0) -> (speech, speech_lengths)``."""
    return batch


def run_ranks(
    script: str, tmp_path: Path, *args: str, world_size: int = 2
) -> List[Any]:
    """Runs ``python -c script`` once per rank, all at once, and waits for them.

    Each process gets ``sys.argv[1:5] = rank, world_size, init_file, out_json``,
    then ``args``: it joins the gloo group with ``init_method="file://" +
    init_file`` and writes its result as JSON to ``out_json``. Asserts that every
    rank exits with status 0 within RANK_TIMEOUT_S (showing its stderr tail); kills
    whatever is left either way.

    Returns:
        Each rank's JSON result, by rank.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    init_file = tmp_path / "init"
    outs = [tmp_path / f"rank{rank}.json" for rank in range(world_size)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(rank), str(world_size),
             str(init_file), str(outs[rank]), *args],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for rank in range(world_size)
    ]
    try:
        for proc in procs:
            _, stderr = proc.communicate(timeout=RANK_TIMEOUT_S)
            assert proc.returncode == 0, stderr[-2000:]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return [json.loads(out.read_text()) for out in outs]


@pytest.fixture
def run_gloo_ranks():
    """``run_ranks(script, tmp_path, *args, world_size=2) -> [result of each rank]``
    (see ``run_ranks`` for the arguments each rank's script gets)."""
    return run_ranks
