#!/usr/bin/env bash
# The shared stage script of the SSL recipes. egs2/<corpus>/ssl1/run.sh calls it with the
# corpus's sets and options; a new corpus needs only its own local/data.sh and conf/.
#
# Stages (run a range with --stage N --stop_stage M; each is idempotent: a finished stage
# leaves a .done marker holding its options, and is skipped while they stay the same):
#   1. Data preparation: local/data.sh ${local_data_opts} writes Kaldi-style data dirs
#      data/<set> (wav.scp, text, utt2spk, spk2utt, utt2dur); every set is then validated
#      (sorted, consistent ids, readable mono audio at ${fs} Hz, non-empty text).
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') [${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}] $*" >&2
}

# General
stage=1                 # first stage to run
stop_stage=10000        # last stage to run
# Data
local_data_opts=""      # options passed to local/data.sh
train_set=""            # unlabeled pretraining set (required)
labeled_set=""          # labeled subset used for fine-tuning (optional)
valid_set=""            # validation set (required)
test_sets=""            # evaluation sets, space separated (optional)
fs=16000                # sample rate of the audio in Hz

help_message=$(cat << EOM
Usage: $0 --train_set <set> --valid_set <set> [options]

Options:
    --stage            # first stage to run (default="${stage}")
    --stop_stage       # last stage to run (default="${stop_stage}")
    --local_data_opts  # options passed to local/data.sh (default="${local_data_opts}")
    --train_set        # unlabeled pretraining set in data/ (required)
    --labeled_set      # labeled subset used for fine-tuning (default="${labeled_set}")
    --valid_set        # validation set in data/ (required)
    --test_sets        # evaluation sets, space separated (default="${test_sets}")
    --fs               # sample rate of the audio in Hz (default="${fs}")
EOM
)

log "$0 $*"
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "Error: unexpected argument '$1'"; echo "${help_message}" >&2; exit 2
fi
[ -n "${train_set}" ] || { log "Error: --train_set is required"; exit 2; }
[ -n "${valid_set}" ] || { log "Error: --valid_set is required"; exit 2; }

. ./path.sh

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: Data preparation: local/data.sh ${local_data_opts}"
    sets=$(echo "${train_set} ${labeled_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')
    done_file="data/.stage1.done"
    stamp="local_data_opts=${local_data_opts} sets=${sets} fs=${fs}"
    if [ -f "${done_file}" ] && [ "$(cat "${done_file}")" = "${stamp}" ]; then
        log "Stage 1: already done with the same options (${done_file}); skipping"
    else
        rm -f "${done_file}"
        # shellcheck disable=SC2086
        local/data.sh ${local_data_opts}
        # shellcheck disable=SC2046
        python -m espnet2.bin.validate_data_dir --sample_rate "${fs}" $(printf 'data/%s ' ${sets})
        mkdir -p data
        echo "${stamp}" > "${done_file}"
    fi
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
