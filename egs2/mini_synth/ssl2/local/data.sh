#!/usr/bin/env bash
# Data preparation of mini_synth: synthesises a small English corpus with espeak-ng
# (the PyPI wheel espeakng-loader, no root needed), 16 kHz mono FLAC, and writes the
# Kaldi-style data dirs data/{train,train_labeled,dev,test}, plus data/noise (babble,
# coloured noise and hum for collate_fn_conf.augmentation.noise_scp; from a stream of
# its own, so the corpus does not change). Idempotent: a second run with the same
# options reuses what is there.
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') [${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}] $*" >&2
}

seed=0                          # random seed of sentences, voices and splits
train_minutes=20                # unlabeled pretraining set, minutes of audio
labeled_minutes=5               # labeled subset of train, minutes of audio
dev_minutes=2                   # held-out dev set, minutes of audio
test_minutes=2                  # held-out test set, minutes of audio
audio_dir=downloads/mini_synth  # where the synthesised audio goes

help_message=$(cat << EOM
Usage: $0 [--config conf/corpus.conf] [options]

Options:
    --seed             # random seed (default="${seed}")
    --train_minutes    # size of data/train (default="${train_minutes}")
    --labeled_minutes  # size of data/train_labeled, a subset of train (default="${labeled_minutes}")
    --dev_minutes      # size of data/dev (default="${dev_minutes}")
    --test_minutes     # size of data/test (default="${test_minutes}")
    --audio_dir        # where the audio files are written (default="${audio_dir}")
EOM
)

log "$0 $*"
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "Error: unexpected argument '$1'"; echo "${help_message}" >&2; exit 2
fi

. ./path.sh

log "Synthesising mini_synth into ${audio_dir} and data/"
python local/synth_corpus.py \
    --out_dir data \
    --audio_dir "${audio_dir}" \
    --seed "${seed}" \
    --train_minutes "${train_minutes}" \
    --labeled_minutes "${labeled_minutes}" \
    --dev_minutes "${dev_minutes}" \
    --test_minutes "${test_minutes}"

log "Generating the augmentation noise into ${audio_dir}/noise and data/noise"
python local/make_noise.py \
    --out_dir data/noise \
    --audio_dir "${audio_dir}/noise" \
    --seed "${seed}"
python -m espnet2.bin.validate_data_dir --require_text false data/noise

log "Successfully finished. [elapsed=${SECONDS}s]"
