"""Tests for espnet2/ssl/sweep.py: the sweep YAML and the run.sh command lines.

The report (table and plots from real experiments) is tested end to end in
test/egs2/mini_synth/test_ssl_train_budget.py.
"""

from pathlib import Path

import pytest

from espnet2.bin.ssl_sweep import main
from espnet2.ssl.sweep import load_sweep, run_command

REPO_ROOT = Path(__file__).resolve().parents[3]
SWEEPS = REPO_ROOT / "egs2/mini_synth/ssl1/conf/sweeps"


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


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nruns: []\n", "at least one run"),
        ("name: x\nruns:\n  - tag: a\n  - tag: a\n", "unique tag"),
        ("name: x\nruns:\n  - tag: a/b\n", "unique tag"),
        ("name: x\nmetric: bleu\nruns:\n  - tag: a\n", "metric must be one of"),
        ("name: x\nrun:\n  - tag: a\n", "unknown keys \\['run'\\]"),
        ("name: x\nruns:\n  - tag: a\n    ssl_arg: x\n", "runs\\[0\\]: unknown keys"),
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
