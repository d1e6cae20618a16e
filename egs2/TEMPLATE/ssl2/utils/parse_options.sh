#!/usr/bin/env bash
# Command-line option parser for recipe scripts, sourced after the defaults block:
#
#     stage=1          # first stage to run
#     . utils/parse_options.sh
#
# Every variable the script defined before sourcing this file can be set with
# `--name value` or `--name=value` (dashes in `name` may be written as underscores or
# dashes). `--config FILE` sources FILE (shell assignments) first. `--help`/`-h` prints
# "${help_message}" and exits 0. An unknown option, a missing value, or a non-boolean
# value for a variable whose default is true/false prints the help and exits 2.
# Parsing stops at the first argument that does not start with "--"; the remaining
# arguments stay in "$@" for the caller.

_po_fail() {
    echo "$0: $1" >&2
    [ -n "${help_message:-}" ] && echo -e "${help_message}" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            echo -e "${help_message:-No help available for $0}"
            exit 0 ;;
        --config|--config=*)
            if [ "$1" = --config ]; then
                [ $# -ge 2 ] || _po_fail "option --config needs a file"
                _po_config=$2; shift 2
            else
                _po_config=${1#--config=}; shift
            fi
            [ -f "${_po_config}" ] || _po_fail "config file '${_po_config}' does not exist"
            # shellcheck disable=SC1090
            . "${_po_config}" ;;
        --*)
            _po_name=${1#--}
            if [[ "${_po_name}" == *=* ]]; then
                _po_value=${_po_name#*=}; _po_name=${_po_name%%=*}; shift
            else
                [ $# -ge 2 ] || _po_fail "option --${_po_name} needs a value"
                _po_value=$2; shift 2
            fi
            _po_name=${_po_name//-/_}
            [[ "${_po_name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || _po_fail "invalid option name --${_po_name}"
            [ -n "${!_po_name+set}" ] || _po_fail "unknown option --${_po_name}"
            case "${!_po_name}" in
                true|false)
                    case "${_po_value}" in
                        true|false) ;;
                        *) _po_fail "option --${_po_name} takes true or false, got '${_po_value}'" ;;
                    esac ;;
            esac
            printf -v "${_po_name}" '%s' "${_po_value}" ;;
        *)
            break ;;
    esac
done
unset _po_name _po_value _po_config
true
