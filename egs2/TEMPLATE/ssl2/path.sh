# Sourced by every recipe script (run.sh, ssl.sh, local/*.sh) from the recipe folder.
# Puts the project's virtualenv and the espnet2/ overlay first on the paths, installing
# tools/venv first when it is missing or out of date (`make -C tools` is idempotent).
# Corpus recipes link to this file: egs2/<corpus>/ssl2/path.sh -> ../../TEMPLATE/ssl2/path.sh
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
if ! make -s -q -C "${MAIN_ROOT}/tools" 2> /dev/null; then
    echo "path.sh: installing the project environment into ${MAIN_ROOT}/tools/venv (once, several minutes)" >&2
    make -s -C "${MAIN_ROOT}/tools" >&2
fi
export PATH="${MAIN_ROOT}/tools/venv/bin:${PWD}/utils:${PATH}"
export PYTHONPATH="${MAIN_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONIOENCODING=UTF-8
