"""tools/install.sh and the pins: clear messages, not stack traces, when an install
fails; the lock agrees with the top-level requirements and is what is installed."""

import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Dict

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
REQUIREMENTS = TOOLS / "requirements.txt"
LOCK = TOOLS / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)$")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> Dict[str, str]:
    """{canonical name: version} of the requirement lines of ``path``; every
    requirement line must be an exact ``name==version`` pin."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: '{line}' is not an exact name==version pin"
        pins[canonical(match["name"])] = match["version"]
    return pins


@pytest.fixture
def tools_copy(tmp_path: Path) -> Path:
    """A copy of tools/ without the venv, so a failing install touches nothing real."""
    for name in ("Makefile", "install.sh", "requirements.txt", "requirements.lock"):
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
    digest = requirements_digest(tools_copy / "requirements.txt")
    (tools_copy / "requirements.lock").write_text(
        f"# requirements sha256: {digest}\nno-such-package-espnet-ssl-xyz==1.0\n"
    )
    result = install(tools_copy)
    assert result.returncode != 0
    assert "ERROR: pip could not install: --no-deps -r" in result.stderr
    assert "no-such-package-espnet-ssl-xyz" in result.stderr
    assert f"Full log: {tools_copy / 'install.log'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tools_copy / "venv" / ".installed").exists()


def test_a_comment_edit_keeps_the_lock_and_a_requirement_edit_does_not(tools_copy):
    requirements = tools_copy / "requirements.txt"
    before = requirements_digest(requirements)
    requirements.write_text("# a new comment\n" + requirements.read_text() + "\n")
    assert requirements_digest(requirements) == before
    requirements.write_text(requirements.read_text() + "six==1.16.0\n")
    assert requirements_digest(requirements) != before


def test_a_lock_not_made_from_the_requirements_is_refused_before_installing(
    tools_copy,
):
    with open(tools_copy / "requirements.txt", "a") as f:
        f.write("six==1.16.0\n")
    result = install(tools_copy)
    assert result.returncode != 0
    assert "was not made from the current tools/requirements.txt" in result.stderr
    assert "make -C tools lock" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tools_copy / "venv").exists()


def test_every_top_level_requirement_is_an_exact_pin():
    pins = read_pins(REQUIREMENTS)  # asserts the form of every line
    assert len(pins) >= 20


def requirements_digest(path: Path) -> str:
    """sha256 of the requirement lines of ``path`` (comments, blank lines and
    trailing spaces left out, each line ending in a newline), as install.sh
    computes it."""
    lines = (line.split("#", 1)[0].rstrip() for line in path.read_text().splitlines())
    text = "".join(line + "\n" for line in lines if line)
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_lock_was_made_from_this_requirements_file():
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    digest = requirements_digest(REQUIREMENTS)
    assert (
        f"# requirements sha256: {digest}" in header
    ), "requirements.txt changed since the lock was made: run make -C tools lock"


def test_the_lock_pins_every_top_level_requirement_at_its_version():
    top, lock = read_pins(REQUIREMENTS), read_pins(LOCK)
    assert {name: lock.get(name) for name in top} == top
    assert len(lock) > len(top)  # and what they pull in


def test_the_installed_environment_is_exactly_the_lock():
    # site-packages only: other sys.path entries (setuptools/_vendor, which
    # pkg_resources adds on import) hold copies that pip does not manage
    site = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    installed = {
        canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=site)
    }
    assert installed == read_pins(
        LOCK
    ), "tools/venv differs from tools/requirements.lock: make -C tools clean all"


def test_pip_check_finds_no_broken_requirement():
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No broken requirements found." in result.stdout


def version_tuple(version: str) -> tuple:
    """``"2.8.0"`` -> ``(2, 8)``: the release's major and minor numbers."""
    return tuple(int(part) for part in version.split("+")[0].split(".")[:2])


def test_the_pins_meet_the_constraints_of_the_design():
    """docs/design.md, "One pinned environment": espnet 202511 rules out torch 2.13+;
    s3prl 0.4.18 needs torchaudio 2.8 or older; torchaudio is built against one torch
    release (the same minor version)."""
    pins = read_pins(REQUIREMENTS)
    torch, torchaudio = version_tuple(pins["torch"]), version_tuple(pins["torchaudio"])
    assert torch < (2, 13), "espnet 202511 does not run on torch 2.13 or newer"
    assert torchaudio <= (2, 8), "s3prl 0.4.18 needs torchaudio 2.8 or older"
    assert torchaudio == torch, "torchaudio must be the build for the pinned torch"


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
