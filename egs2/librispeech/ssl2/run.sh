#!/usr/bin/env bash
# LibriSpeech 960 h: HuBERT BASE pretrained with academic compute (Chen et al.,
# Interspeech 2023: 8 GPUs instead of HuBERT's 32, the same audio per update through
# gradient accumulation), two iterations (MFCC k-means with k=100, then layer 6 of
# iteration 1 with k=500), packed, then CTC fine-tuning on Libri-light's 10 h and
# decoding of the LibriSpeech dev and test sets. See README.md.
# Usage: ./run.sh [--stage N] [--stop_stage M] [any option of ssl.sh]
set -euo pipefail

train_set=train_960             # train-clean-100 + train-clean-360 + train-other-500
labeled_set=train_10h           # Libri-light 10 h (1h + 9h), a subset of train_960
valid_set=dev                   # dev-clean + dev-other, both acoustic conditions
test_sets="dev_clean dev_other test_clean test_other"  # sets scored after fine-tuning
ssl_config=conf/tuning/train_ssl_hubert_base.yaml  # or conf/tuning/train_ssl_wav2vec2_base.yaml with --ssl_iterations 1
asr_config=conf/tuning/train_asr_ctc_base_10h.yaml  # fairseq base_10h fine-tuning
# Where the corpora are (see local/data.sh --help): e.g. "--librispeech_dir /data/corpora
# --librilight_dir /data/corpora --download false" for existing copies.
local_data_opts="--download_dir downloads --download true"

./ssl.sh \
    --train_set "${train_set}" \
    --labeled_set "${labeled_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --local_data_opts "${local_data_opts}" \
    --ngpu 8 \
    --nj 32 \
    --min_wav_duration 2 \
    --max_wav_duration 30 \
    --ssl_config "${ssl_config}" \
    --n_clusters 100 \
    --next_n_clusters 500 \
    --ssl_iterations 2 \
    --next_target_layer 6 \
    --kmeans_fraction 0.1 \
    --asr_config "${asr_config}" \
    --asr_baseline false \
    --token_type char \
    --inference_nj 32 \
    "$@"
