#!/usr/bin/env bash
# Creates (or brings up to date) tools/venv with exactly the distributions of
# tools/requirements.lock, checks them with `pip check`, and puts the repository root
# first on the venv's sys.path, so that our espnet2/ overlay is found ahead of the
# installed ESPnet from any working directory.
# Called by tools/Makefile; run it through `make -C tools`, not by hand.
#
# Usage: install.sh [--check|--lock] <venv_dir>
#   --check   only run the import smoke test of an existing venv
#   --lock    resolve tools/requirements.txt in a new venv <venv_dir> and write every
#             installed distribution, pinned, to tools/requirements.lock (then remove it)
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

fail() {
    # Prints a readable error (no stack trace) and exits.
    echo "" >&2
    echo "ERROR: $1" >&2
    shift
    local line
    for line in "$@"; do
        echo "       ${line}" >&2
    done
    exit 1
}

mode=install
case "${1:-}" in
    --check) mode=check; shift ;;
    --lock) mode=lock; shift ;;
esac
[ $# -eq 1 ] || fail "usage: install.sh [--check|--lock] <venv_dir>"

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)  # physical: the .pth must name the real repo
repo_root=$(dirname "${tools_dir}")
venv="${tools_dir}/$1"
python=${PYTHON:-python3}
pip_version=25.0.1  # pip >= 26 refuses espnet's dependency ci_sdr (a direct-URL extra)
log_file="${tools_dir}/install.log"
requirements="${tools_dir}/requirements.txt"
lock="${tools_dir}/requirements.lock"

check_python() {
    command -v "${python}" > /dev/null \
        || fail "'${python}' was not found." \
                "Install Python 3.10-3.12 (3.11 is tested), or run: make -C tools PYTHON=/path/to/python3"
    "${python}" - <<'EOF' || fail "Python ${python} is not supported by the pinned packages." \
        "espnet==202511 and torch==2.8.0 are tested with Python 3.11." \
        "Run: make -C tools PYTHON=/path/to/python3.11"
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
EOF
}

create_venv() {
    if [ -x "${venv}/bin/python" ]; then
        log "Re-using ${venv}"
        return
    fi
    log "Creating ${venv} with $(${python} --version 2>&1)"
    "${python}" -m venv "${venv}" >> "${log_file}" 2>&1 \
        || fail "could not create the virtual environment ${venv}." \
                "On Debian/Ubuntu the venv module is a separate package: apt-get install python3-venv" \
                "Full log: ${log_file}"
}

pip_install() {
    # Args: the pip arguments. Logs to ${log_file}; on failure names the requirement.
    if ! "${venv}/bin/python" -m pip install --disable-pip-version-check "$@" >> "${log_file}" 2>&1; then
        local reason
        reason=$(grep -E "^(ERROR|error):" "${log_file}" | tail -n 3 || true)
        fail "pip could not install: $*" \
             "${reason:-see the log}" \
             "Check the network connection to the package index, the Python version," \
             "and the free disk space (torch needs about 7 GB). Full log: ${log_file}" \
             "Re-run 'make -C tools' once fixed; finished downloads are cached by pip."
    fi
}

write_pth() {
    # A .pth 'import' line runs at interpreter start and puts the repo root first on
    # sys.path (a plain path line would be appended after site-packages instead).
    local site pth
    site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    pth="${site}/espnet_ssl_overlay.pth"
    printf "import sys; _r = %s; _r in sys.path or sys.path.insert(0, _r)\n" \
        "$("${venv}/bin/python" -c 'import sys; print(repr(sys.argv[1]))' "${repo_root}")" > "${pth}"
    log "Overlay on sys.path: ${pth} -> ${repo_root}"
}

smoke_test() {
    log "Checking the installed environment"
    # Import-time chatter of some packages (nltk download attempts) goes to the log.
    local problem="the installed environment does not work (see the problems above)."
    local fix="Re-run 'make -C tools clean all', and report the problems if they stay. Log: ${log_file}"
    (cd / && "${venv}/bin/python" - "${repo_root}" 2>> "${log_file}" <<'EOF') || fail "${problem}" "${fix}"
import ctypes
import importlib
import os
import sys

repo_root = sys.argv[1]
problems = []
for name in ["torch", "torchaudio", "espnet2", "espnet2.tasks.ssl", "s3prl", "kaldiio",
             "faiss", "soundfile", "sklearn", "tensorboard", "matplotlib", "espeakng_loader",
             "espnet_model_zoo.downloader"]:
    try:
        importlib.import_module(name)
    except Exception as e:  # report every broken package at once
        problems.append(f"import {name}: {type(e).__name__}: {e}")
import espnet2
if not espnet2.__path__ or os.path.dirname(os.path.abspath(espnet2.__path__[0])) != repo_root:
    problems.append(f"the overlay is not first on sys.path: espnet2.__path__ = {list(espnet2.__path__)}")
try:
    import espeakng_loader
    ctypes.CDLL(espeakng_loader.get_library_path())
except Exception as e:
    problems.append(f"libespeak-ng from espeakng-loader does not load: {e}")
for p in problems:
    print("  - " + p)
sys.exit(1 if problems else 0)
EOF
    local versions='import torch, torchaudio, espnet
print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, espnet {espnet.__version__}")'
    log "Environment OK: $("${venv}/bin/python" -c "${versions}" 2>> "${log_file}")"
}

requirements_sha256() {
    # Of the requirement lines only (comments, blanks and trailing spaces left out),
    # so that editing a comment does not call for a new lock.
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "${requirements}" | sha256sum | cut -d' ' -f1
}

check_lock() {
    # The lock must have been made from the requirements.txt beside it.
    [ -f "${lock}" ] || fail "${lock} is missing." "Run: make -C tools lock"
    local want have
    want=$(requirements_sha256)
    have=$(sed -n 's/^# requirements sha256: //p' "${lock}")
    [ "${want}" = "${have}" ] \
        || fail "${lock} was not made from the current tools/requirements.txt." \
                "Regenerate it after editing requirements.txt: make -C tools lock"
}

pip_check() {
    local out
    if ! out=$("${venv}/bin/python" -m pip check 2>&1); then
        fail "pip check found broken requirements in ${venv}:" "${out}" \
             "The lock is inconsistent. Regenerate it: make -C tools lock"
    fi
    log "pip check: ${out}"
}

write_lock() {
    # Resolves requirements.txt in the new venv and freezes it, with a header that
    # ties the lock to the requirements.txt it came from.
    [ ! -e "${venv}" ] || fail "${venv} exists; the lock is resolved in a new venv." \
        "Remove it first (make -C tools lock does)."
    check_python
    : > "${log_file}"
    create_venv
    log "Resolving tools/requirements.txt in ${venv} (log: ${log_file})"
    pip_install "pip==${pip_version}"
    pip_install -r "${requirements}"
    pip_check
    {
        echo "# Every distribution of tools/venv, pinned: generated by \`make -C tools lock\`"
        echo "# from tools/requirements.txt on $(uname -s) $(uname -m), $("${venv}/bin/python" --version 2>&1)."
        echo "# Do not edit by hand: edit requirements.txt and regenerate."
        echo "# requirements sha256: $(requirements_sha256)"
        "${venv}/bin/python" -m pip freeze --all --disable-pip-version-check | LC_ALL=C sort -f
    } > "${lock}.tmp"
    mv "${lock}.tmp" "${lock}"
    log "Wrote ${lock}: $(grep -vc '^#' "${lock}") distributions"
}

case "${mode}" in
    check)
        [ -x "${venv}/bin/python" ] || fail "${venv} does not exist. Run: make -C tools"
        smoke_test
        ;;
    lock)
        write_lock
        ;;
    install)
        check_python
        check_lock
        : > "${log_file}"
        create_venv
        pins=$(grep -vc '^#' "${lock}")
        log "Installing pip==${pip_version} and the ${pins} pins of tools/requirements.lock (log: ${log_file})"
        pip_install "pip==${pip_version}"
        # --no-deps: the lock is the whole environment, resolved once by `make -C tools lock`
        pip_install --no-deps -r "${lock}"
        pip_check
        write_pth
        smoke_test
        log "Installed. Activate with: . ${venv}/bin/activate"
        ;;
esac
