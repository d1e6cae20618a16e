"""espnet2/ssl/release/s3prl/hub.py: ESPnet's ``frontend: s3prl`` finds and trains our
upstream.

The real ``python -m espnet2.bin.asr_train`` with ESPnet's own ``S3prlFrontend``
(conf/asr_s3prl_frontend_tiny.yaml: ``upstream: espnet_ssl_local``, a packed zip,
``multilayer_feature``) trains one step on a few synthesised utterances; nothing in
that process registers the entry but the overlay's ``espnet2/asr/frontend`` package.
The tiny HuBERT is test/espnet2/conftest.py's, packed by ``espnet2.bin.pack ssl``.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from espnet2.ssl.release.s3prl.hub import register_when_s3prl_hub_loads
from espnet2.ssl.release.s3prl.upstream import HUB_NAME, espnet_ssl_local
from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus

REPO_ROOT = Path(__file__).resolve().parents[5]
ASR_CONFIG = Path(__file__).parent / "conf/asr_s3prl_frontend_tiny.yaml"
STDERR_TAIL = 4000  # characters of stderr shown when a run fails
CORPUS = SynthCorpusConfig(
    seed=5, train_minutes=0.1, labeled_minutes=0.1, dev_minutes=0.05,
    test_minutes=0.05,
)  # fmt: skip
SSL_MODEL = "frontend.upstream.upstream.model."  # S3prlFrontend > S3PRLUpstream > ours


@pytest.fixture
def packed(tmp_path, build_ssl_model, ssl_configs) -> Path:
    """The tiny HuBERT (seed 0) as ssl/{config.yaml,model.pth} and packed ssl.zip."""
    from espnet2.bin.pack import main as pack

    model, args = build_ssl_model(ssl_configs["hubert"])
    (tmp_path / "ssl").mkdir()
    (tmp_path / "ssl/config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), tmp_path / "ssl/model.pth")
    pack(
        ["ssl", "--ssl_train_config", str(tmp_path / "ssl/config.yaml"),
         "--ssl_model_file", str(tmp_path / "ssl/model.pth"),
         "--outpath", str(tmp_path / "ssl.zip")]
    )  # fmt: skip
    return tmp_path / "ssl.zip"


@pytest.fixture
def corpus(tmp_path) -> Path:
    """data/{train_labeled,dev} of a synthesised corpus and chars.txt, in tmp_path."""
    build_corpus(CORPUS, tmp_path / "data", tmp_path / "audio", show_progress=False)
    chars = set()
    for line in (tmp_path / "data/train_labeled/text").read_text().splitlines():
        chars.update(line.split(maxsplit=1)[1].replace(" ", ""))
    tokens = ["<blank>", "<unk>", "<space>", *sorted(chars), "<sos/eos>"]
    (tmp_path / "chars.txt").write_text("".join(token + "\n" for token in tokens))
    return tmp_path


def asr_train(cwd: Path, config: Path) -> subprocess.CompletedProcess:
    """``python -m espnet2.bin.asr_train`` on data/train_labeled and data/dev."""
    args = ["--config", str(config), "--output_dir", "exp", "--ngpu", "0"]
    args += ["--token_list", "chars.txt", "--token_type", "char"]
    for mode, data in (("train", "train_labeled"), ("valid", "dev")):
        args += [f"--{mode}_shape_file", f"data/{data}/wav.scp"]
        flag = f"--{mode}_data_path_and_name_and_type"
        args += [flag, f"data/{data}/wav.scp,speech,sound"]
        args += [flag, f"data/{data}/text,text,text"]
    return subprocess.run(
        [sys.executable, "-m", "espnet2.bin.asr_train", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
    )


def epoch_losses(log: str) -> dict:
    """``{"train": loss, "valid": loss}`` of the trainer's "1epoch results" line."""
    line = next(x for x in log.splitlines() if "1epoch results:" in x)
    return {
        mode: float(re.search(rf"\[{mode}\].*?\bloss=([^,]+),", line).group(1))
        for mode in ("train", "valid")
    }


@pytest.mark.recipe  # end to end in other processes
def test_asr_train_with_the_s3prl_frontend_trains_a_step_on_a_packed_model(
    tmp_path, packed, corpus
):
    config = yaml.safe_load(ASR_CONFIG.read_text())
    config["frontend_conf"]["frontend_conf"]["path_or_url"] = str(packed)
    (tmp_path / "asr.yaml").write_text(yaml.safe_dump(config))
    result = asr_train(corpus, tmp_path / "asr.yaml")
    assert result.returncode == 0, result.stderr[-STDERR_TAIL:]
    assert "(upstream): ESPnetSSLUpstream(" in result.stderr  # the printed model
    losses = epoch_losses(result.stderr)
    assert all(math.isfinite(loss) and loss > 0 for loss in losses.values()), losses
    trained = torch.load(corpus / "exp/1epoch.pth", weights_only=True)
    pretrained = torch.load(packed.parent / "ssl/model.pth", weights_only=True)
    weights = trained["frontend.featurizer.weights"]  # one per layer, from zeros
    assert weights.shape == (3,) and weights.abs().min() > 1e-4  # Adam's first step
    for name in ("frontend.layers.0.conv.weight", "encoder.encoders.1.norm1.weight"):
        frozen = name.startswith("frontend.")  # freeze_param of the config
        moved = not torch.equal(trained[SSL_MODEL + name], pretrained[name])
        assert moved != frozen, name


def test_registering_again_adds_no_second_finder_and_keeps_the_entry():
    import espnet2.asr.frontend  # noqa: F401  (registers when it is first imported)

    register_when_s3prl_hub_loads()
    register_when_s3prl_hub_loads()
    ours = [
        f
        for f in sys.meta_path
        if type(f).__module__ == "espnet2.ssl.release.s3prl.hub"
    ]
    assert len(ours) == 1
    from s3prl import hub

    assert getattr(hub, HUB_NAME) is espnet_ssl_local
