"""egs2/TEMPLATE/ssl2/ssl.sh: --nj and --check_audio reach stage 1's validation,
--ngpu reaches the model feature dumps, --deterministic reaches every training, and
--finetune_jobs trains that many fine-tunings at once.

As in test_ssl_sh_fairseq.py, the script's own functions and stage blocks are cut
out of ssl.sh and run by bash; the Python tools they start are replaced by a stub
that records its command line (calls.txt), and the option checks run the real
ssl.sh up to its argument checks.
"""

import os
import subprocess
from pathlib import Path

import pytest
from ssl_sh_pieces import shell_function, stage_block

REPO_ROOT = Path(__file__).resolve().parents[3]
SSL_SH = REPO_ROOT / "egs2/TEMPLATE/ssl2/ssl.sh"
FUNCTIONS = ("is_done", "run_stamped", "model_stamp", "make_targets",
             "dump_targets", "label_quality", "claim_exp", "dist_options",
             "cudnn_options", "pretrain", "ssl_stats_dir", "train_ssl",
             "collect_ssl_stats", "finetune_stamp", "finetune_setup",
             "finetune_run", "finetune_all",
             "train_in_background", "train_asr", "token_dir",
             "asr_token_options", "asr_data_options", "asr_stats_dir", "unit_text",
             "unique_words", "prepare_data")  # fmt: skip
STUBS = """
log() { echo "$*" >&2; }
python() { echo "python $*" >> calls.txt; }
train_or_fail() { echo "train_or_fail $*" >> calls.txt; }
asr_stats() { :; }
local/data.sh() { :; }
"""
SETTINGS = """
set -euo pipefail
expdir=exp dumpdir=dump train_set=train valid_set=valid nj=3 fs=16000 ngpu=0
num_nodes=1 deterministic=false check_audio=full local_data_opts="" finetune_jobs=1
finetune_queue=()
labeled_set="" test_sets="" ssl_config=conf/hubert.yaml ssl_args="" nbpe=100
kmeans_fraction=0.1 kmeans_max_frames=1000 kmeans_seed=0 keep_target_feats=true
"""


def bash_pieces(cwd: Path, body: str) -> subprocess.CompletedProcess:
    """``body`` run by bash after the settings, ssl.sh's functions and the stubs."""
    script = SSL_SH.read_text()
    functions = "".join(shell_function(script, name) for name in FUNCTIONS)
    return subprocess.run(
        ["bash", "-c", SETTINGS + functions + STUBS + body],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_pieces(cwd: Path, body: str) -> str:
    """``body`` run by bash_pieces, which must succeed; calls.txt."""
    result = bash_pieces(cwd, body)
    assert result.returncode == 0, result.stderr
    calls = cwd / "calls.txt"
    return calls.read_text() if calls.exists() else ""


@pytest.fixture
def recipe(tmp_path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/hubert.yaml").write_text("encoder: transformer\n")
    for dset in ("train", "valid"):
        (tmp_path / "dump/raw" / dset).mkdir(parents=True)
        (tmp_path / "dump/raw" / dset / "wav.scp").write_text("u1 a.wav\nu2 b.wav\n")
    return tmp_path


def dump_calls(calls: str):
    return [line for line in calls.splitlines() if "ssl_dump_feats" in line]


@pytest.mark.parametrize(
    "ngpu, kind, expected, absent",
    [
        (2, "ssl", "--ngpu 2", "--device"),
        (0, "ssl", "--device cpu", "--ngpu"),
        (2, "mfcc", "--nj 2", "--ngpu"),  # MFCCs: CPU processes
    ],
)
def test_model_dumps_use_the_gpus_and_mfcc_the_cpu(
    recipe, ngpu, kind, expected, absent
):
    (recipe / "model.pth").write_text("weights")
    (recipe / "dump/targets/t").mkdir(parents=True)  # the dumps' folder (stubbed)
    body = f"ngpu={ngpu}\nmake_targets t {kind} 3 2 model.pth\n"
    dumps = dump_calls(run_pieces(recipe, body))
    assert len(dumps) == 2  # train and valid
    assert all(expected in call and absent not in call for call in dumps)
    assert all("--nj 2" in call for call in dumps)  # no more shards than utterances


def test_stage_1_validates_in_nj_processes_with_the_chosen_depth(recipe):
    block = stage_block(SSL_SH.read_text(), 1)
    body = "stage=1 stop_stage=1 check_audio=header\n" + block
    calls = run_pieces(recipe, body)
    (line,) = [c for c in calls.splitlines() if "validate_data_dir" in c]
    assert "--nj 3 --check_audio header data/train data/valid" in line


@pytest.mark.parametrize("deterministic", ["true", "false"])
def test_deterministic_reaches_pretraining_and_fine_tuning(recipe, deterministic):
    (recipe / "exp/ssl_stats_train").mkdir(parents=True)
    sets = "train,valid "
    (recipe / "exp/ssl_stats_train/.done").write_text(sets + "\n")
    body = (
        f"deterministic={deterministic}\n"
        "pretrain exp/ssl '' ''\n"
        "labeled_set=train; finetune_all conf/asr.yaml char '' exp/asr model.zip\n"
    )
    calls = run_pieces(recipe, body)
    trainings = [c for c in calls.splitlines() if c.startswith("train_or_fail")]
    assert [c.split()[1] for c in trainings] == ["ssl_train", "asr_train"]
    flags = "--cudnn_deterministic true --cudnn_benchmark false"
    assert all((flags in c) == (deterministic == "true") for c in trainings)


def test_deterministic_is_not_part_of_the_experiment_stamp(recipe):
    (recipe / "exp/ssl_stats_train").mkdir(parents=True)
    (recipe / "exp/ssl_stats_train/.done").write_text("train,valid \n")
    run_pieces(recipe, "deterministic=false\npretrain exp/ssl '' ''\n")
    stamp = (recipe / "exp/ssl/.done").read_text()
    run_pieces(recipe, "deterministic=true\npretrain exp/ssl '' ''\n")  # skipped
    assert (recipe / "exp/ssl/.done").read_text() == stamp
    assert "deterministic" not in stamp and "cudnn" not in stamp


# a training that takes a moment and records when it ran, and with how many threads
TIMED_TRAINING = """
train_or_fail() {
    echo "start $2 threads=${OMP_NUM_THREADS:-unset}" >> calls.txt
    sleep 1
    [ "$2" != exp/bad ] || exit 1
    echo "end $2" >> calls.txt
}
"""
TWO_RUNS = (
    "labeled_set=train\nfinetune_all conf/asr.yaml char '' exp/a a.zip exp/b b.pth\n"
)


def events(calls: str):
    return [c for c in calls.splitlines() if c.startswith(("start", "end"))]


@pytest.mark.parametrize(
    "jobs, ngpu, order",
    [
        (2, 0, ["start exp/", "start exp/", "end", "end"]),
        (1, 0, ["start exp/a", "end exp/a", "start exp/b", "end exp/b"]),
        (2, 1, ["start exp/", "start exp/", "end", "end"]),
    ],
)
def test_finetune_jobs_trains_that_many_at_once(recipe, jobs, ngpu, order):
    body = f"finetune_jobs={jobs} ngpu={ngpu}\n{TIMED_TRAINING}{TWO_RUNS}"
    calls = run_pieces(recipe, body)
    seen = events(calls)
    assert len(seen) == 4
    assert all(line.startswith(prefix) for line, prefix in zip(seen, order)), seen
    # both set up (config written) before either trains
    setups = [c for c in calls.splitlines() if "set_frontend_model" in c]
    assert [c.split()[-1] for c in setups] == [
        "exp/a/train_config.yaml",
        "exp/b/train_config.yaml",
    ]
    threads = {line.split()[-1] for line in seen if line.startswith("start")}
    if jobs == 2 and ngpu == 0:  # the cores shared out; on GPUs left to torch
        expected = max(1, (os.cpu_count() or 1) // 2)
        assert threads == {f"threads={expected}"}
    else:
        assert threads == {"threads=unset"}
    assert (recipe / "exp/a/.done").is_file() and (recipe / "exp/b/.done").is_file()


def test_a_failed_fine_tuning_stops_the_stage_after_the_others_finish(recipe):
    body = "finetune_jobs=2\n" + TIMED_TRAINING + TWO_RUNS.replace("exp/b", "exp/bad")
    result = bash_pieces(recipe, body)
    assert result.returncode == 1
    assert "fine-tuning failed: exp/bad" in result.stderr
    assert "end exp/a" in (recipe / "calls.txt").read_text()
    assert (recipe / "exp/a/.done").is_file()  # the finished one is kept
    assert not (recipe / "exp/bad/.done").exists()


def test_finished_fine_tunings_are_not_set_up_again(recipe):
    body = f"finetune_jobs=2\n{TIMED_TRAINING}{TWO_RUNS}"
    run_pieces(recipe, body)
    (recipe / "calls.txt").unlink()
    assert run_pieces(recipe, body) == ""  # no config written, nothing trained


@pytest.mark.parametrize(
    "option, message",
    [
        (["--deterministic", "yes"], "option --deterministic takes true or false"),
        (["--check_audio", "partial"], "--check_audio must be full or header"),
        (["--finetune_jobs", "0"], "--finetune_jobs must be a positive integer"),
    ],
)
def test_bad_option_values_stop_before_any_stage(tmp_path, option, message):
    (tmp_path / "utils").symlink_to(REPO_ROOT / "egs2/TEMPLATE/ssl2/utils")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        ["bash", str(SSL_SH), "--train_set", "a", "--valid_set", "b", *option],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "data").exists()


def test_help_documents_the_new_options():
    text = SSL_SH.read_text()
    help_text = text[text.index("help_message=") : text.index("EOM\n)")]
    for option in (
        "--deterministic",
        "--check_audio",
        "--nj",
        "--ngpu",
        "--finetune_jobs",
    ):
        assert option in help_text, option
