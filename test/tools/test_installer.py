"""tools/install.sh: clear messages, not stack traces, when an install fails."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def tools_copy(tmp_path: Path) -> Path:
    """A copy of tools/ without the venv, so a failing install touches nothing real."""
    for name in ("Makefile", "install.sh", "requirements.txt"):
        shutil.copy(TOOLS / name, tmp_path / name)
    return tmp_path


def install(tools: Path, python: str = "python3") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "-C", str(tools), f"PYTHON={python}"],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_missing_python_is_reported_with_the_fix(tools_copy):
    result = install(tools_copy, python="no-such-python3.11")
    assert result.returncode != 0
    assert "ERROR: 'no-such-python3.11' was not found." in result.stderr
    assert "make -C tools PYTHON=" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tools_copy / "venv" / ".installed").exists()


def test_a_package_that_cannot_be_installed_is_named_with_the_log(tools_copy):
    (tools_copy / "requirements.txt").write_text(
        "no-such-package-espnet-ssl-xyz==1.0\n"
    )
    result = install(tools_copy)
    assert result.returncode != 0
    assert "ERROR: pip could not install: -r" in result.stderr
    assert "no-such-package-espnet-ssl-xyz" in result.stderr
    assert f"Full log: {tools_copy / 'install.log'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tools_copy / "venv" / ".installed").exists()


def test_requirements_pin_the_versions_the_project_is_tested_with():
    pins = {
        line.split("==")[0]: line.split("==")[1]
        for line in (TOOLS / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert pins["espnet"] == "202511"
    assert pins["torch"] == "2.8.0"
    assert pins["torchaudio"] == "2.8.0"
    assert pins["s3prl"] == "0.4.18"


def test_setup_py_reads_its_requirements_from_the_pins_file():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, setuptools;"
            "setuptools.setup = lambda **kw: print(kw['install_requires']);"
            "runpy.run_path('setup.py')",
        ],
        cwd=TOOLS.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "'espnet==202511'" in result.stdout and "'torch==2.8.0'" in result.stdout


def test_the_pinned_inflect_expands_numbers_for_espnets_cleaner():
    """inflect is pinned below 7 for import time; ESPnet's ``tacotron`` text cleaner
    (tacotron_cleaner.numbers, upper-cased by ESPnet) must still spell out numbers
    with it."""
    import inflect

    from espnet2.text.cleaner import TextCleaner

    clean = TextCleaner(["tacotron"])
    assert clean("I have 3 dogs and $2.50.") == (
        "I HAVE THREE DOGS AND TWO DOLLARS, FIFTY CENTS."
    )
    assert inflect.engine().number_to_words(1234) == (
        "one thousand, two hundred and thirty-four"
    )
