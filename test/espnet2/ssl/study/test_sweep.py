"""Tests for espnet2/ssl/study/sweep.py: the sweep YAML and the run.sh command lines.

The report (table and plots from real experiments) is tested end to end in
test/integration/test_ssl_train_budget.py.
"""

import csv
from pathlib import Path

import pytest

from espnet2.bin.ssl_sweep import main
from espnet2.ssl.study.sweep import load_sweep, run_command, write_table

REPO_ROOT = Path(__file__).resolve().parents[4]
SWEEPS = REPO_ROOT / "egs2/mini_synth/ssl2/conf/sweeps"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_common_and_run_options_are_merged_in_order(tmp_path):
    sweep = load_sweep(write(tmp_path, """
name: crop
args: [--ssl_config, c.yaml]
ssl_args: --max_seen_hours 1
asr_args: --max_epoch 3
runs:
  - tag: a
    ssl_args: --collate_fn_conf crop_seconds=1
    args: [--train_hours, 0.5, --dumpdir, dump_0.5h]
"""))  # fmt: skip
    cmd = run_command(sweep, sweep.runs[0], stage=4)
    assert cmd[:5] == ["./run.sh", "--ssl_config", "c.yaml", "--train_hours", "0.5"]
    assert cmd[cmd.index("--ssl_tag") + 1] == "ssl_crop_a"
    assert cmd[cmd.index("--asr_tag") + 1] == "asr_crop_a"
    assert cmd[cmd.index("--stage") + 1] == "4"
    ssl_args = cmd[cmd.index("--ssl_args") + 1]
    assert ssl_args == "--max_seen_hours 1 --collate_fn_conf crop_seconds=1"
    assert cmd[cmd.index("--asr_args") + 1] == "--max_epoch 3"
    assert cmd[cmd.index("--asr_baseline") + 1] == "false"


def test_baseline_true_asks_the_recipe_for_its_scratch_fine_tuning(tmp_path):
    sweep = load_sweep(write(tmp_path, "name: b\nbaseline: true\nruns:\n  - tag: a\n"))
    cmd = run_command(sweep, sweep.runs[0])
    assert cmd[cmd.index("--asr_baseline") + 1] == "true"
    assert sweep.experiment_tags(sweep.runs[0]) == dict(
        ssl="ssl_b_a", asr="asr_b_a", probe="asr_b_a_phones", scratch="asr_b_a_scratch"
    )


def test_without_baseline_a_run_has_no_scratch_experiment(tmp_path):
    sweep = load_sweep(write(tmp_path, "name: b\nruns:\n  - tag: a\n"))
    assert list(sweep.experiment_tags(sweep.runs[0])) == ["ssl", "asr", "probe"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nruns: []\n", "at least one run"),
        ("name: x\nruns:\n  - tag: a\n  - tag: a\n", "unique tag"),
        ("name: x\nruns:\n  - tag: a/b\n", "unique tag"),
        ("name: x\nmetric: bleu\nruns:\n  - tag: a\n", "metric must be one of"),
        ("name: x\nrun:\n  - tag: a\n", "unknown keys \\['run'\\]"),
        ("name: x\nruns:\n  - tag: a\n    ssl_arg: x\n", "runs\\[0\\]: unknown keys"),
        ("name: x\nbaseline: 1\nruns:\n  - tag: a\n", "baseline must be true or"),
    ],
)
def test_bad_sweeps_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_sweep(write(tmp_path, text))


@pytest.mark.parametrize("name", ["crop.yaml", "batch.yaml", "size_data.yaml"])
def test_the_recipe_sweeps_load_and_keep_hours_seen_equal(name):
    sweep = load_sweep(SWEEPS / name)
    assert len(sweep.runs) >= 3
    budgets = {
        run.ssl_args.split("--max_seen_hours ")[1].split()[0] for run in sweep.runs
    }
    assert len(budgets) == 1  # every run sees the same hours of audio


def test_cli_dry_run_prints_one_command_per_run(capsys):
    main(["run", str(SWEEPS / "crop.yaml"), "--dry_run"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("./run.sh ") for line in lines)


def test_cli_reports_a_bad_sweep_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(write(tmp_path, "name: x\nruns: []\n"))])
    assert exit_info.value.code == 1
    assert "ssl_sweep: error:" in capsys.readouterr().err


def test_a_grid_is_every_combination_of_its_axes_in_order(tmp_path):
    sweep = load_sweep(write(tmp_path, """
name: study
ssl_args: --max_epoch 9
grid:
  objective:
    - {tag: hubert, args: [--ssl_config, h.yaml]}
    - {tag: w2v, args: [--ssl_config, w.yaml]}
  data:
    - {tag: 20min}
    - {tag: 5min, args: [--train_hours, 0.08], ssl_args: --seed 1}
  aug:
    - {tag: noaug}
    - {tag: aug, ssl_args: --collate_fn_conf augmentation.noise_prob=0.5}
runs:
  - tag: extra
    args: [--ssl_config, x.yaml]
"""))  # fmt: skip
    tags = [run.tag for run in sweep.runs]
    assert tags[:3] == ["hubert_20min_noaug", "hubert_20min_aug", "hubert_5min_noaug"]
    assert len(tags) == 9 and tags[-1] == "extra"
    assert sweep.axes == ["objective", "data", "aug"]
    run = sweep.runs[tags.index("w2v_5min_aug")]
    assert run.axes == {"objective": "w2v", "data": "5min", "aug": "aug"}
    assert run.args == ["--ssl_config", "w.yaml", "--train_hours", "0.08"]
    assert run.ssl_args == (
        "--max_epoch 9 --seed 1 --collate_fn_conf augmentation.noise_prob=0.5"
    )
    assert run.ssl_config() == "w.yaml" and sweep.runs[-1].axes == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("grid:\n  a: []\n", "grid.a needs a list"),
        ("grid:\n  a: [{args: []}]\n", "grid.a\\[0\\] needs a tag"),
        ("grid:\n  a: [{tag: x, seed: 1}]\n", "grid.a\\[0\\]: unknown keys"),
        ("grid:\n  a: [{tag: x}, {tag: x}]\n", "unique tag"),
        ("runs: [{tag: a}]\nbudget: {seen_hours: 1, training_pflop: 2}\n", "one of"),
        ("runs: [{tag: a}]\nbudget: {reference: a}\n", "needs budget.seen_hours"),
        ("runs: [{tag: a}]\nbudget: {seen_hours: 1, reference: b}\n", "not a run"),
        ("runs: [{tag: a}]\nbudget: {seen_hours: -1}\n", "positive"),
        ("runs: [{tag: a}]\nbudget: {hours: 1}\n", "budget: unknown keys"),
        ("runs: [{tag: a}]\nbudget: {seen_hours: 1}\n", "has no --ssl_config"),
    ],
)
def test_bad_grids_and_budgets_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_sweep(write(tmp_path, "name: x\n" + text))


def test_the_budget_is_appended_to_the_ssl_args_and_wins(tmp_path):
    sweep = load_sweep(write(tmp_path, """
name: b
ssl_args: --max_seen_hours 9
runs: [{tag: a, args: [--ssl_config, a.yaml]}]
"""))  # fmt: skip
    cmd = run_command(sweep, sweep.runs[0], seen_hours=0.25)
    assert (
        cmd[cmd.index("--ssl_args") + 1] == "--max_seen_hours 9 --max_seen_hours 0.25"
    )


@pytest.mark.parametrize("name, runs", [("objectives.yaml", 3), ("study.yaml", 24)])
def test_the_recipe_studies_name_existing_configs_and_a_budget(name, runs):
    sweep = load_sweep(SWEEPS / name)
    assert len(sweep.runs) == runs and sweep.budget.reference in {
        run.tag for run in sweep.runs
    }
    for run in sweep.runs:
        assert (SWEEPS.parents[1] / run.ssl_config()).is_file(), run.tag


def test_the_table_leaves_out_columns_no_run_has_a_value_for(tmp_path):
    """A key every run leaves empty (``None`` or ``""``) is dropped from both the
    CSV and the markdown table; a key only one run has keeps an empty cell."""
    rows = [
        {"tag": "a", "train_hours": None, "cer_dev": 12.5, "per_dev": None},
        {"tag": "b", "train_hours": "", "cer_dev": 30.0, "per_dev": 40.0},
    ]
    paths = write_table(rows, tmp_path)
    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["tag", "cer_dev", "per_dev"]
    assert [r["per_dev"] for r in table] == ["", "40.0"]
    header, _, first, _ = paths["md"].read_text().splitlines()
    assert header == "| tag | cer_dev | per_dev |"
    assert first == "| a | 12.5 |  |"
