"""The shell scripts of the recipes and tools: lines of at most 120 characters, and
ssl.sh's .done stamps checked and written only by its ``run_stamped`` helper.

Read-only checks of the scripts' text; ``test_ssl_sh_run_stamped.py`` runs the helper.
"""

import re
import subprocess
from pathlib import Path
from typing import List

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SSL_SH = REPO_ROOT / "egs2/TEMPLATE/ssl2/ssl.sh"
MAX_LINE = 120


def tracked_shell_scripts() -> List[Path]:
    """Every tracked *.sh under egs2/ and tools/, links to another script left out."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "egs2/*.sh", "tools/*.sh"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        paths = [REPO_ROOT / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        paths = [
            path
            for top in ("egs2", "tools")
            for path in (REPO_ROOT / top).rglob("*.sh")
            if "venv" not in path.relative_to(REPO_ROOT).parts
        ]
    return sorted(p for p in paths if p.is_file() and not p.is_symlink())


def ssl_sh_without(*functions: str) -> str:
    """ssl.sh's text without comments and the definitions of ``functions``."""
    text = SSL_SH.read_text()
    for name in functions:
        text = re.sub(rf"^{name}\(\) {{\n.*?^}}\n", "", text, flags=re.S | re.M)
    return re.sub(r"^\s*#.*$", "", text, flags=re.M)


def test_the_shell_scripts_are_found():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in tracked_shell_scripts()}
    assert {"egs2/TEMPLATE/ssl2/ssl.sh", "tools/install.sh"} <= names


@pytest.mark.parametrize(
    "script", tracked_shell_scripts(), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_no_line_of_a_shell_script_is_longer_than_120_characters(script):
    too_long = [
        f"{script.relative_to(REPO_ROOT)}:{number}: {len(line)} characters"
        for number, line in enumerate(script.read_text().splitlines(), start=1)
        if len(line) > MAX_LINE
    ]
    assert not too_long, (
        f"lines over {MAX_LINE} characters:\n" + "\n".join(too_long) + "\nFix: wrap"
        " them: a command at its options with a trailing backslash, a long message"
        ' built with msg+="..." or given to log as several words, a long'
        " `cmd || { ...; }` as a block on its own lines"
    )


def test_ssl_sh_writes_its_done_stamps_only_in_run_stamped():
    writes = [
        line.strip()
        for line in ssl_sh_without("run_stamped").splitlines()
        if re.search(r"(>>?|\btouch\b)\s*\S*done", line)
    ]
    assert not writes, (
        "stamp writes outside run_stamped:\n" + "\n".join(writes) + "\nFix: run the"
        " step as run_stamped FILE STAMP WHAT COMMAND..., which writes FILE itself"
    )


def test_ssl_sh_checks_its_done_stamps_only_in_run_stamped():
    # decode_jobs lists the decodings that the run_stamped calls of decode_all redo,
    # with the same stamps, so that one process decodes them all beforehand;
    # finetune_setup sets up, one at a time, the fine-tunings that the run_stamped
    # calls of train_in_background then redo at once, with the same stamps
    skipped = ("run_stamped", "is_done", "decode_jobs", "finetune_setup")
    checks = [
        line.strip()
        for line in ssl_sh_without(*skipped).splitlines()
        if re.search(r"\bis_done\b|\[ -f \S*done", line)
    ]
    assert not checks, (
        "hand-written skip checks outside run_stamped:\n" + "\n".join(checks) + "\nFix:"
        " run the step as run_stamped FILE STAMP WHAT COMMAND..., which skips it itself"
    )


def test_every_stage_and_step_of_ssl_sh_runs_through_run_stamped():
    calls = re.findall(r"^\s*run_stamped ", ssl_sh_without("run_stamped"), re.M)
    # stages 1, 2, 6 and 9; the fairseq import, targets, pretraining and its stats,
    # token lists, fine-tuning and its stats, phone texts, untrained model, decoding,
    # results tables
    assert len(calls) >= 15


def test_ssl_sh_asks_the_config_whether_it_needs_labels_once():
    asked = re.findall(r"ssl_recipe_config needs_labels", ssl_sh_without())
    assert len(asked) == 1
