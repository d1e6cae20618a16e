"""The house style's formatters and linter agree with every Python file."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["espnet2", "test", "egs2", "setup.py"]


@pytest.mark.parametrize(
    "command",
    [["black", "--check", "--quiet"], ["isort", "--check-only", "--quiet"], ["flake8"]],
    ids=["black", "isort", "flake8"],
)
def test_python_files_follow_the_house_style(command):
    result = subprocess.run(
        [sys.executable, "-m", *command, *TARGETS],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    fixer = "fix by hand" if command[0] == "flake8" else "run"
    hint = f"{fixer}: tools/venv/bin/{command[0]} {' '.join(TARGETS)}"
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{hint}"
