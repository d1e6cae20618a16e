"""egs2/TEMPLATE/ssl2/ssl.sh: a fairseq .pt is accepted as --target_model (stage 3,
--target_type ssl) and --pretrained_model (stage 7), converted once into
exp/fairseq_<name>/ with a .done stamp holding its SHA-256.

A whole stage would train or dump features for minutes, so the script's own text is
run in pieces: its helper functions (``fairseq_dir``, ``import_fairseq``,
``make_targets``, ``ssl_model``, ``make_untrained_model``, ...) and its stage 3 and 7
blocks, cut out of ssl.sh and run by bash with the real converter
(``python -m espnet2.bin.ssl_fairseq_import``); the feature dumps, k-means and
fine-tuning they start are replaced by stubs that record their command lines.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest
import torch
from fairseq_builders import checkpoint_dict
from ssl_sh_pieces import shell_function, stage_block

pytestmark = pytest.mark.recipe

REPO_ROOT = Path(__file__).resolve().parents[3]
SSL_SH = REPO_ROOT / "egs2/TEMPLATE/ssl2/ssl.sh"
FUNCTIONS = ("is_done", "run_stamped", "model_stamp", "fairseq_dir",
             "import_fairseq", "convert_fairseq", "make_targets", "dump_targets",
             "label_quality", "first_targets_tag", "final_tag", "ssl_model",
             "untrained_dir", "make_untrained_model")  # fmt: skip
# the commands stages 3 and 7 start besides the converter, recorded in calls.txt
STUBS = """
log() { echo "$*" >&2; }  # ssl.sh's reads BASH_SOURCE[1], unset at the top level
python() {
    if [ "$2" = espnet2.bin.ssl_fairseq_import ]; then command python "$@"; return; fi
    echo "python $*" >> calls.txt
}
make_token_list() { echo "make_token_list $*" >> calls.txt; }
finetune_setup() { echo "finetune_setup $*" >> calls.txt; }
finetune_run() { echo "finetune_run" >> calls.txt; }
"""
SETTINGS = """
set -euo pipefail
expdir=exp dumpdir=dump train_set=train valid_set=valid nj=1 fs=16000 ngpu=0
kmeans_fraction=0.1 kmeans_max_frames=1000 kmeans_seed=0 keep_target_feats=false
ssl_config=conf/hubert.yaml ssl_iterations=1 ssl_tag=ssl_x asr_tag=asr_x
asr_config=conf/asr.yaml token_type=char asr_args="" asr_baseline=false
labeled_set=train pretrained_model="" target_layer="" n_clusters=100
phone_probe=false stage=1 stop_stage=10000 needs_labels=true
"""


def run_ssl_sh(cwd: Path, body: str) -> subprocess.CompletedProcess:
    """``body`` after ssl.sh's settings, helper functions and the stubs."""
    script = SSL_SH.read_text()
    functions = "".join(shell_function(script, name) for name in FUNCTIONS)
    env = dict(os.environ)
    env["PATH"] = f"{REPO_ROOT}/tools/venv/bin:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        ["bash", "-c", SETTINGS + functions + STUBS + body],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_checkpoint(path: Path, seed_offset: float = 0.0) -> Path:
    raw = checkpoint_dict("hubert", False, "cfg")
    raw["model"]["mask_emb"] += seed_offset
    torch.save(raw, path)
    return path


def identity(path: Path):
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Dict:
    """A recipe folder whose exp/ holds hubert.pt converted by import_fairseq."""
    root = tmp_path_factory.mktemp("recipe")
    checkpoint = write_checkpoint(root / "hubert.pt")
    result = run_ssl_sh(
        root, 'import_fairseq hubert.pt; echo "$(fairseq_dir hubert.pt)"'
    )
    assert result.returncode == 0, result.stderr
    return dict(root=root, checkpoint=checkpoint, out=result.stdout.strip())


def test_import_fairseq_writes_the_model_and_a_checksum_stamp(converted):
    root = converted["root"]
    assert converted["out"] == "exp/fairseq_hubert"
    folder = root / "exp/fairseq_hubert"
    assert {p.name for p in folder.iterdir()} >= {"config.yaml", "model.pth", ".done"}
    digest = hashlib.sha256(converted["checkpoint"].read_bytes()).hexdigest()
    assert (folder / ".done").read_text().strip() == f"sha256={digest}"


def test_import_fairseq_skips_an_unchanged_checkpoint(converted):
    root = converted["root"]
    before = identity(root / "exp/fairseq_hubert/model.pth")
    result = run_ssl_sh(root, "import_fairseq hubert.pt")
    assert result.returncode == 0, result.stderr
    assert (
        "fairseq hubert.pt: conversion into exp/fairseq_hubert: already done with the"
        " same options; skipping" in result.stderr
    )
    assert identity(root / "exp/fairseq_hubert/model.pth") == before


def test_stage_7_fine_tunes_the_converted_model_and_its_baseline(converted):
    root = converted["root"]
    (root / "calls.txt").unlink(missing_ok=True)
    body = "pretrained_model=hubert.pt asr_baseline=true\n"
    result = run_ssl_sh(root, body + stage_block(SSL_SH.read_text(), 7))
    assert result.returncode == 0, result.stderr
    calls = (root / "calls.txt").read_text()
    assert "untrained_model exp/fairseq_hubert/config.yaml exp/asr_x_untrained" in calls
    setups = [c for c in calls.splitlines() if c.startswith("finetune_setup")]
    assert setups == [
        "finetune_setup conf/asr.yaml char  exp/asr_x exp/fairseq_hubert/model.pth",
        "finetune_setup conf/asr.yaml char  exp/asr_x_scratch"
        " exp/asr_x_untrained/untrained.pth",
    ]
    assert calls.splitlines()[-1] == "finetune_run"  # both trained after both set up


def test_the_baseline_of_a_pretrained_zip_reads_the_zip(tmp_path):
    # not the fine-tuning's unpacked copy: both may then be trained at once
    (tmp_path / "model.zip").write_bytes(b"PK")
    body = "pretrained_model=model.zip asr_baseline=true\n"
    result = run_ssl_sh(tmp_path, body + stage_block(SSL_SH.read_text(), 7))
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text()
    assert "untrained_model model.zip exp/asr_x_untrained --seed 0" in calls
    assert "finetune_setup conf/asr.yaml char  exp/asr_x model.zip" in calls


def test_stage_3_dumps_ssl_targets_with_the_converted_model(converted):
    root = converted["root"]
    (root / "calls.txt").unlink(missing_ok=True)
    for dset in ("train", "valid"):
        (root / "dump/raw" / dset).mkdir(parents=True, exist_ok=True)
        (root / "dump/raw" / dset / "wav.scp").write_text("u1 a.wav\nu2 b.wav\n")
    (root / "dump/targets/ssl_L1_km3").mkdir(parents=True, exist_ok=True)  # dumper's
    body = "target_type=ssl target_model=hubert.pt target_layer=1 n_clusters=3\n"
    result = run_ssl_sh(root, body + stage_block(SSL_SH.read_text(), 3))
    assert result.returncode == 0, result.stderr
    dumps = [
        c for c in (root / "calls.txt").read_text().splitlines() if "dump_feats" in c
    ]
    assert len(dumps) == 2
    assert all("--ssl_model_file exp/fairseq_hubert/model.pth" in c for c in dumps)
    stamp = (root / "dump/targets/ssl_L1_km3/.done").read_text()
    assert "model=exp/fairseq_hubert/model.pth@" in stamp


def test_a_fairseq_checkpoint_is_refused_as_asr_targets(converted):
    result = run_ssl_sh(converted["root"], "make_targets t asr 3 '' hubert.pt")
    assert result.returncode == 2
    assert "use it with --target_type ssl" in result.stderr


def test_a_missing_checkpoint_stops_with_its_name(tmp_path):
    result = run_ssl_sh(tmp_path, "import_fairseq absent.pt")
    assert result.returncode == 1
    assert "the fairseq checkpoint 'absent.pt' does not exist" in result.stderr


def test_a_changed_checkpoint_is_converted_again(converted, tmp_path):
    shutil.copytree(converted["root"] / "exp", tmp_path / "exp")  # converted once
    stamp = (tmp_path / "exp/fairseq_hubert/.done").read_text()
    model_file = tmp_path / "exp/fairseq_hubert/model.pth"
    before = torch.load(model_file)["util_modules.mask.mask_embedding"]
    write_checkpoint(tmp_path / "hubert.pt", seed_offset=1.0)
    result = run_ssl_sh(tmp_path, "import_fairseq hubert.pt")
    assert result.returncode == 0, result.stderr
    assert "converting into exp/fairseq_hubert" in result.stderr
    assert (tmp_path / "exp/fairseq_hubert/.done").read_text() != stamp
    after = torch.load(model_file)["util_modules.mask.mask_embedding"]
    torch.testing.assert_close(after, before + 1.0)
