"""egs2/mini_synth/ssl1/run.sh end to end through stage 1, in a copy of the recipe.

The copy keeps the recipe's links to egs2/TEMPLATE and links tools/ and espnet2/ of this
checkout, so run.sh and path.sh run exactly as in the repository while data/ and
downloads/ land in a temporary folder.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from espnet2.fileio.kaldi_data_dir import validate_data_dir

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY = (
    "--config conf/corpus.conf --train_minutes 0.4 --labeled_minutes 0.15"
    " --dev_minutes 0.1 --test_minutes 0.1"
)
SETS = ("train", "train_labeled", "dev", "test")

pytestmark = pytest.mark.recipe


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for sub in ("TEMPLATE", "mini_synth"):
        shutil.copytree(
            REPO_ROOT / "egs2" / sub,
            root / "egs2" / sub,
            symlinks=True,
            ignore=shutil.ignore_patterns("data", "downloads", "dump", "exp"),
        )
    for link in ("tools", "espnet2"):
        (root / link).symlink_to(REPO_ROOT / link)
    return root / "egs2" / "mini_synth" / "ssl1"


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        ["./run.sh", *args],
        cwd=recipe,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def first_run(recipe: Path) -> subprocess.CompletedProcess:
    return run(recipe, "--stage", "1", "--stop_stage", "1", "--local_data_opts", TINY)


def test_stage_1_synthesises_and_validates_every_data_dir(recipe, first_run):
    assert first_run.returncode == 0, first_run.stderr[-3000:]
    for dset in SETS:
        assert f"data/{dset}:" in first_run.stdout + first_run.stderr
        summary = validate_data_dir(recipe / "data" / dset)
        assert summary.num_utterances > 0
    assert "Successfully finished" in first_run.stderr


def test_stage_1_is_skipped_when_run_again_with_the_same_options(recipe, first_run):
    wav_scp = recipe / "data" / "train" / "wav.scp"
    before = wav_scp.stat().st_mtime_ns
    again = run(recipe, "--stage", "1", "--stop_stage", "1", "--local_data_opts", TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done with the same options" in again.stderr
    assert wav_scp.stat().st_mtime_ns == before


def test_a_stage_range_after_stage_1_does_nothing_to_the_data(recipe, first_run):
    result = run(recipe, "--stage", "2", "--local_data_opts", TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Stage 1" not in result.stderr


def test_an_unknown_option_stops_the_recipe_with_exit_code_2(recipe):
    result = run(recipe, "--n_clusterz", "100")
    assert result.returncode == 2
    assert "unknown option --n_clusterz" in result.stderr


def test_help_lists_the_stage_options(recipe):
    result = run(recipe, "--help")
    assert result.returncode == 0
    assert "--stop_stage" in result.stdout and "--train_set" in result.stdout
