"""conf/tuning/train_asr_phone_probe_tiny.yaml: the frozen-model phone probe.

SUPERB's phone recognition (S.-w. Yang et al., Interspeech 2021, arXiv:2105.01051):
the upstream frozen, a learned softmax-weighted sum of its layers, a linear CTC head.
Built by ESPnet's ASRTask on an untrained tiny HuBERT, as stage 7 builds it.
"""

from pathlib import Path

import pytest
import torch
import yaml

from espnet2.ssl.recipe.finetune_config import (
    write_untrained_model,
    write_with_frontend_model,
)
from espnet2.tasks.asr import ASRTask
from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF = REPO_ROOT / "egs2/mini_synth/ssl2/conf"
PROBE = CONF / "tuning/train_asr_phone_probe_tiny.yaml"
SSL_CONFIG = CONF / "tuning/train_ssl_hubert_tiny.yaml"
PHONES = ["<blank>", "<unk>", "h", "@", "l", "oU", "<sos/eos>"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """(model, config dict) of the probe on an untrained tiny HuBERT."""
    root = tmp_path_factory.mktemp("probe")
    tokens = root / "tokens.txt"
    tokens.write_text("".join(f"{i}\n" for i in range(50)) + "<unk>\n")
    ssl_args = SSLTask.get_parser().parse_args(
        ["--config", str(SSL_CONFIG), "--token_list", str(tokens)]
        + ["--token_type", "word", "--output_dir", str(root / "exp")]
    )
    (root / "config.yaml").write_text(yaml.safe_dump(vars(ssl_args), sort_keys=False))
    model_file = write_untrained_model(root / "config.yaml", root / "ssl", seed=0)
    config = root / "asr" / "train_config.yaml"
    write_with_frontend_model(PROBE, model_file, config)
    phones = root / "phones.txt"
    phones.write_text("".join(f"{p}\n" for p in PHONES))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(config), "--token_list", str(phones), "--token_type", "word"]
    )
    torch.manual_seed(0)
    return ASRTask.build_model(args), yaml.safe_load(config.read_text())


def test_the_link_names_the_tuning_file():
    link = CONF / "train_asr_phone_probe_tiny.yaml"
    assert link.is_symlink() and link.resolve() == PROBE.resolve()


def test_the_probe_is_a_weighted_sum_of_the_blocks_and_a_linear_ctc_head(probe):
    model, config = probe
    weights = model.frontend.featurizer.weights
    assert weights.shape == (3,) and torch.equal(weights, torch.zeros(3))  # equal
    assert model.encoder is None and model.decoder is None
    head = [name for name, _ in model.named_parameters() if name.startswith("ctc.")]
    assert sorted(head) == ["ctc.ctc_lo.bias", "ctc.ctc_lo.weight"]
    assert model.ctc.ctc_lo.weight.shape == (len(PHONES), 96)
    assert config["frontend_conf"]["mask_feats"] is False


def test_freeze_param_covers_the_whole_upstream_and_nothing_else(probe):
    model, config = probe
    prefixes = tuple(f"{p}." for p in config["freeze_param"])
    frozen = {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    upstream = {n for n, _ in model.named_parameters() if ".upstream." in f".{n}"}
    assert frozen == upstream and len(upstream) > 20
    assert {n for n, _ in model.named_parameters()} - frozen == {
        "frontend.featurizer.weights", "ctc.ctc_lo.weight", "ctc.ctc_lo.bias",
    }  # fmt: skip


def test_a_training_step_reaches_the_layer_weights_but_not_the_upstream(probe):
    model, _ = probe
    model.train()
    speech = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 12000])
    text = torch.tensor([[2, 3, 4, 5], [2, 3, -1, -1]])
    loss, _, _ = model(speech, lengths, text, torch.tensor([4, 2]))
    model.zero_grad(set_to_none=True)
    loss.backward()
    assert model.frontend.featurizer.weights.grad.abs().sum() > 0
    assert model.ctc.ctc_lo.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.frontend.upstream.parameters())
    # ESPnet's trainer puts the whole model in train mode: the frozen upstream's
    # dropout is on while the probe trains (SUPERB runs it in eval mode)
    assert model.frontend.upstream.training
