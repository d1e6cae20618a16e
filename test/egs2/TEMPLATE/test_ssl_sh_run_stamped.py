"""egs2/TEMPLATE/ssl2/ssl.sh's ``run_stamped FILE STAMP WHAT COMMAND...``: a step runs
once per stamp, is redone when its stamp changes, and leaves no stamp when it fails.

The helper is cut out of ssl.sh (``ssl_sh_pieces.py``) and run by bash with a step
that counts its runs in runs.txt.
"""

import subprocess
from pathlib import Path

from ssl_sh_pieces import shell_function

REPO_ROOT = Path(__file__).resolve().parents[3]
SSL_SH = REPO_ROOT / "egs2/TEMPLATE/ssl2/ssl.sh"
PRELUDE = """
set -euo pipefail
log() { echo "$*" >&2; }
step() { echo run >> runs.txt; [ "${1:-ok}" = ok ] || return 3; }
"""


def run(cwd: Path, body: str) -> subprocess.CompletedProcess:
    script = SSL_SH.read_text()
    functions = shell_function(script, "is_done") + shell_function(
        script, "run_stamped"
    )
    return subprocess.run(
        ["bash", "-c", PRELUDE + functions + body],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def runs(cwd: Path) -> int:
    path = cwd / "runs.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_step_runs_and_writes_its_stamp_in_a_new_folder(tmp_path):
    result = run(tmp_path, "run_stamped out/a/.done 'k=1' 'step a' step")
    assert result.returncode == 0, result.stderr
    assert runs(tmp_path) == 1
    assert (tmp_path / "out/a/.done").read_text() == "k=1\n"


def test_the_same_stamp_skips_the_step_and_says_so(tmp_path):
    run(tmp_path, "run_stamped .done 'k=1' 'step a' step")
    result = run(tmp_path, "run_stamped .done 'k=1' 'step a' step")
    assert result.returncode == 0, result.stderr
    assert runs(tmp_path) == 1
    assert "step a: already done with the same options; skipping" in result.stderr


def test_a_changed_stamp_redoes_the_step(tmp_path):
    run(tmp_path, "run_stamped .done 'sha256=aa' 'step a' step")
    result = run(tmp_path, "run_stamped .done 'sha256=bb' 'step a' step")
    assert result.returncode == 0, result.stderr
    assert runs(tmp_path) == 2
    assert (tmp_path / ".done").read_text() == "sha256=bb\n"


def test_a_failed_step_stops_the_script_and_leaves_no_stamp(tmp_path):
    run(tmp_path, "run_stamped .done 'k=1' 'step a' step")
    result = run(tmp_path, "run_stamped .done 'k=2' 'step a' step fail; echo after")
    assert result.returncode == 3
    assert "after" not in result.stdout
    assert not (tmp_path / ".done").exists()  # nor the stamp of the earlier options
    result = run(tmp_path, "run_stamped .done 'k=1' 'step a' step")
    assert runs(tmp_path) == 3  # the earlier options are redone too


def test_a_failed_step_inside_a_command_substitution_leaves_no_stamp(tmp_path):
    # errexit is off inside $(...): the helper itself must not write the stamp
    body = (
        'out=$(run_stamped .done k=1 "step a" step fail; echo "status=$?")\necho "$out"'
    )
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    assert "status=3" in result.stdout
    assert not (tmp_path / ".done").exists()
