"""egs2/TEMPLATE/ssl2/utils/parse_options.sh: the recipes' option parser."""

import subprocess
from pathlib import Path

import pytest

PARSER = (
    Path(__file__).resolve().parents[3] / "egs2/TEMPLATE/ssl2/utils/parse_options.sh"
)

SCRIPT = f"""
set -euo pipefail
stage=1              # first stage
use_gpu=false        # a boolean
test_sets="dev test" # a list
help_message="Usage: demo [options]"
. {PARSER}
echo "stage=${{stage}} use_gpu=${{use_gpu}} test_sets=${{test_sets}} rest=$*"
"""


def run(*args: str, cwd: Path = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", SCRIPT, "demo", *args], capture_output=True, text=True, cwd=cwd
    )


def test_defaults_stay_when_no_option_is_given():
    assert run().stdout.strip() == "stage=1 use_gpu=false test_sets=dev test rest="


@pytest.mark.parametrize(
    "args",
    [("--stage", "3"), ("--stage=3",)],
    ids=["space", "equals"],
)
def test_an_option_sets_the_variable_of_the_same_name(args):
    assert run(*args).stdout.startswith("stage=3 ")


def test_dashes_in_option_names_mean_underscores_and_values_keep_spaces():
    out = run("--use-gpu", "true", "--test_sets", "a b c").stdout
    assert "use_gpu=true test_sets=a b c" in out


def test_parsing_stops_at_the_first_positional_argument():
    assert run("--stage", "2", "x", "--y").stdout.strip().endswith("rest=x --y")


def test_an_unknown_option_exits_2_naming_it():
    result = run("--stgae", "3")
    assert result.returncode == 2
    assert "unknown option --stgae" in result.stderr
    assert "Usage: demo" in result.stderr


def test_a_boolean_option_refuses_other_values():
    result = run("--use_gpu", "yes")
    assert result.returncode == 2
    assert "takes true or false, got 'yes'" in result.stderr


def test_an_option_without_a_value_exits_2():
    result = run("--stage")
    assert result.returncode == 2
    assert "needs a value" in result.stderr


def test_a_config_file_sets_defaults_that_later_options_override(tmp_path):
    conf = tmp_path / "my.conf"
    conf.write_text("stage=5\nuse_gpu=true\n")
    out = run("--config", str(conf), "--stage", "7").stdout
    assert out.startswith("stage=7 use_gpu=true ")
    missing = run("--config", str(tmp_path / "nope.conf"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_help_prints_the_help_message_and_exits_0():
    result = run("--help")
    assert result.returncode == 0
    assert result.stdout.strip() == "Usage: demo [options]"
