#!/usr/bin/env bash
# mini_synth: the embedded default corpus (espeak-ng speech synthesised on the fly, about
# 30 minutes of audio), small enough to run every stage on a CPU in minutes.
# Usage: ./run.sh [--stage N] [--stop_stage M] [any option of ssl.sh]
set -euo pipefail

train_set=train                 # unlabeled pretraining set
labeled_set=train_labeled       # labeled subset of train for fine-tuning
valid_set=dev                   # held-out voices and sentences
test_sets="dev test"            # sets scored after fine-tuning
ssl_config=conf/train_ssl_hubert_tiny.yaml  # or conf/train_ssl_wav2vec2_tiny.yaml (links into conf/tuning/)
phone_probe=false               # true: also the SUPERB phone probe and its PER (about 1.5 min)
nj=$(nproc)                     # processes of the data checks, feature dumps and decoding

./ssl.sh \
    --train_set "${train_set}" \
    --labeled_set "${labeled_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --local_data_opts "--config conf/corpus.conf" \
    --ngpu 0 \
    --ssl_config "${ssl_config}" \
    --n_clusters 50 \
    --next_n_clusters 50 \
    --kmeans_fraction 1.0 \
    --asr_config conf/train_asr_ctc_tiny.yaml \
    --asr_baseline true \
    --finetune_jobs 2 \
    --phone_probe "${phone_probe}" \
    --probe_config conf/train_asr_phone_probe_tiny.yaml \
    --nj "${nj}" \
    --inference_nj "${nj}" \
    "$@"
