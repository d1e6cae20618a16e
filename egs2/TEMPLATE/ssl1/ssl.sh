#!/usr/bin/env bash
# The shared stage script of the SSL recipes. egs2/<corpus>/ssl1/run.sh calls it with the
# corpus's sets and options; a new corpus needs only its own local/data.sh and conf/.
#
# Stages (run a range with --stage N --stop_stage M; each is idempotent: a finished stage
# leaves a .done marker holding its options, and is skipped while they stay the same):
#   1. Data preparation: local/data.sh ${local_data_opts} writes Kaldi-style data dirs
#      data/<set> (wav.scp, text, utt2spk, spk2utt, utt2dur); every set is then validated
#      (sorted, consistent ids, readable mono audio at ${fs} Hz, non-empty text).
#   2. Duration filtering: ${dumpdir}/raw/<set> = data/<set> without the utterances
#      shorter than ${min_wav_duration} s or longer than ${max_wav_duration} s (training
#      sets only; test sets are kept whole), listed in ${dumpdir}/raw/<set>/filtered_utts.
#   3. HuBERT targets (skipped when the objective needs no labels, e.g. wav2vec 2.0):
#      ${target_type} features of the train and valid sets, faiss k-means with
#      ${n_clusters} clusters on a seeded sample of train, one label per CNN frame:
#      ${dumpdir}/targets/<tag>/{<set>/text,tokens.txt,kmeans/}.
#   4. Pretraining: ESPnet's collect-stats, then espnet2.bin.ssl_train with
#      ${ssl_config} (the objective, HuBERT or wav2vec 2.0, comes from its loss:) into
#      ${expdir}/<ssl_tag>. An interrupted run resumes from its last checkpoint.
#   5. Further HuBERT iterations (--ssl_iterations N > 1): for i = 2..N, targets from
#      layer ${next_target_layer} of iteration i-1's model (${next_n_clusters} clusters),
#      then pretraining into ${expdir}/<ssl_tag>_iter<i>.
#   6. Packing for the model zoo: the last iteration's ${ssl_model_name}, its config and a
#      README.md model card into ${expdir}/<last tag>/<last tag>.zip (espnet2.bin.pack ssl).
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') [${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}] $*" >&2
}

# General
stage=1                 # first stage to run
stop_stage=10000        # last stage to run
nj=4                    # parallel jobs of the feature dumps
ngpu=0                  # GPUs for pretraining (0: CPU)
dumpdir=dump            # filtered sets, features and labels
expdir=exp              # models and logs
# Data
local_data_opts=""      # options passed to local/data.sh
train_set=""            # unlabeled pretraining set (required)
labeled_set=""          # labeled subset used for fine-tuning (optional)
valid_set=""            # validation set (required)
test_sets=""            # evaluation sets, space separated (optional)
fs=16000                # sample rate of the audio in Hz
min_wav_duration=0.1    # shortest training utterance in seconds (the CNN needs 0.025 s)
max_wav_duration=20     # longest training utterance in seconds (memory)
# Targets (HuBERT)
target_type=mfcc        # features of the first iteration's k-means: mfcc, ssl or asr
target_model=""         # ssl/asr targets: model file (.pth next to its config.yaml, or a packed .zip)
target_layer=""         # ssl/asr targets: encoder block (empty: the final output)
n_clusters=100          # k of the first iteration (HuBERT BASE: 100 on MFCC)
kmeans_fraction=0.1     # share of the train utterances the k-means is fitted on (fairseq: 10%)
kmeans_max_frames=1000000  # cap on the frames the k-means is fitted on
kmeans_seed=0           # seed of the k-means sample and initialisation
keep_target_feats=false # keep the dumped features once the labels are written
# Pretraining
ssl_config=""           # pretraining config (required from stage 3)
ssl_tag=""              # experiment name (default: the config's name without train_)
ssl_args=""             # extra options for espnet2.bin.ssl_train
ssl_iterations=1        # HuBERT iterations (stage 5 runs iterations 2..N)
next_target_layer=""    # layer of iteration i-1 for iteration i (empty: middle block; BASE: 6)
next_n_clusters=500     # k of iterations 2..N (HuBERT BASE: 500)
ssl_model_name=valid.loss.best.pth  # checkpoint used for the next iteration and packed

help_message=$(cat << EOM
Usage: $0 --train_set <set> --valid_set <set> [options]

Options:
    --stage               # first stage to run (default="${stage}")
    --stop_stage          # last stage to run (default="${stop_stage}")
    --nj                  # parallel jobs of the feature dumps (default="${nj}")
    --ngpu                # GPUs for pretraining, 0 for CPU (default="${ngpu}")
    --dumpdir             # filtered sets, features and labels (default="${dumpdir}")
    --expdir              # models and logs (default="${expdir}")
    --local_data_opts     # options passed to local/data.sh (default="${local_data_opts}")
    --train_set           # unlabeled pretraining set in data/ (required)
    --labeled_set         # labeled subset used for fine-tuning (default="${labeled_set}")
    --valid_set           # validation set in data/ (required)
    --test_sets           # evaluation sets, space separated (default="${test_sets}")
    --fs                  # sample rate of the audio in Hz (default="${fs}")
    --min_wav_duration    # shortest training utterance, s (default="${min_wav_duration}")
    --max_wav_duration    # longest training utterance, s (default="${max_wav_duration}")
    --target_type         # mfcc, ssl or asr features for the first k-means (default="${target_type}")
    --target_model        # ssl/asr targets: model .pth or packed .zip (default="${target_model}")
    --target_layer        # ssl/asr targets: encoder block, empty = final (default="${target_layer}")
    --n_clusters          # k of the first iteration (default="${n_clusters}")
    --kmeans_fraction     # share of train utterances for the k-means (default="${kmeans_fraction}")
    --kmeans_max_frames   # cap on k-means frames (default="${kmeans_max_frames}")
    --kmeans_seed         # seed of the k-means (default="${kmeans_seed}")
    --keep_target_feats   # keep the dumped features (default="${keep_target_feats}")
    --ssl_config          # pretraining config (required for stages 3-6)
    --ssl_tag             # experiment name (default: from the config name)
    --ssl_args            # extra options for espnet2.bin.ssl_train (default="${ssl_args}")
    --ssl_iterations      # HuBERT iterations (default="${ssl_iterations}")
    --next_target_layer   # layer for iterations 2..N, empty = middle (default="${next_target_layer}")
    --next_n_clusters     # k of iterations 2..N (default="${next_n_clusters}")
    --ssl_model_name      # checkpoint used for the next iteration and packed (default="${ssl_model_name}")
EOM
)

log "$0 $*"
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "Error: unexpected argument '$1'"; echo "${help_message}" >&2; exit 2
fi
[ -n "${train_set}" ] || { log "Error: --train_set is required"; exit 2; }
[ -n "${valid_set}" ] || { log "Error: --valid_set is required"; exit 2; }
if [ "${stop_stage}" -ge 3 ] && [ "${stage}" -le 6 ] && [ -z "${ssl_config}" ]; then
    log "Error: --ssl_config is required for stages 3-6 (e.g. conf/tuning/train_ssl_hubert_tiny.yaml)"
    exit 2
fi
[ -n "${ssl_tag}" ] || ssl_tag=$(basename "${ssl_config:-none}" .yaml | sed 's/^train_//')

. ./path.sh

# unique_words WORD...: the words in their first-seen order, each once, space separated
unique_words() {
    echo "$*" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' '
}

# is_done FILE STAMP: true when FILE exists and holds exactly STAMP
is_done() {
    [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

# model_stamp FILE: the file and its modification time, so a retrained model is noticed
model_stamp() {
    if [ -n "$1" ]; then echo "$1@$(stat -L -c %Y "$1" 2> /dev/null || echo missing)"; fi
}

# make_targets TAG TYPE K LAYER MODEL: features of train and valid, k-means on train,
# labels of both in ${dumpdir}/targets/TAG/<set>/text, token list TAG/tokens.txt
make_targets() {
    local tag=$1 type=$2 k=$3 layer=$4 model=$5
    local dir="${dumpdir}/targets/${tag}"
    local stamp
    stamp="type=${type} k=${k} layer=${layer} model=$(model_stamp "${model}")"
    stamp+=" fraction=${kmeans_fraction} max_frames=${kmeans_max_frames}"
    stamp+=" seed=${kmeans_seed} sets=${train_set},${valid_set} cnn=${ssl_config}"
    if is_done "${dir}/.done" "${stamp}"; then
        log "targets ${dir}: already done with the same options; skipping"
        return
    fi
    rm -f "${dir}/.done"
    local feat_opts=(--feature_type "${type}")
    [ -z "${layer}" ] || feat_opts+=(--layer "${layer}")
    if [ "${type}" != mfcc ]; then
        [ -f "${model}" ] || { log "Error: ${type} targets need --target_model, a model file ('${model}' does not exist)"; exit 1; }
        case "${model}" in
            *.zip) feat_opts+=("--${type}_packed_model" "${model}") ;;
            *) feat_opts+=("--${type}_model_file" "${model}") ;;
        esac
    fi
    local dset
    for dset in "${train_set}" "${valid_set}"; do
        log "targets ${tag}: ${type} features of ${dset}"
        # no more shards than utterances, as ESPnet's recipes do
        local num_utts set_nj
        num_utts=$(wc -l < "${dumpdir}/raw/${dset}/wav.scp")
        set_nj=$(( nj < num_utts ? nj : num_utts ))
        python -m espnet2.bin.ssl_dump_feats "${feat_opts[@]}" --nj "${set_nj}" \
            --wav_scp "${dumpdir}/raw/${dset}/wav.scp" --out_dir "${dir}/feats/${dset}"
    done
    log "targets ${tag}: k-means, k=${k}, on ${kmeans_fraction} of ${train_set}"
    rm -rf "${dir}/kmeans"
    python -m espnet2.bin.ssl_kmeans fit --feats_scp "${dir}/feats/${train_set}/feats.scp" \
        --out_dir "${dir}/kmeans" --n_clusters "${k}" --fraction "${kmeans_fraction}" \
        --max_frames "${kmeans_max_frames}" --seed "${kmeans_seed}"
    for dset in "${train_set}" "${valid_set}"; do
        log "targets ${tag}: labels of ${dset}"
        python -m espnet2.bin.ssl_kmeans apply --kmeans_dir "${dir}/kmeans" \
            --feats_scp "${dir}/feats/${dset}/feats.scp" \
            --utt2num_samples "${dumpdir}/raw/${dset}/utt2num_samples" \
            --sample_rate "${fs}" --ssl_config "${ssl_config}" \
            --output "${dir}/${dset}/text" --token_list "${dir}/tokens.txt"
    done
    "${keep_target_feats}" || rm -rf "${dir}/feats"
    echo "${stamp}" > "${dir}/.done"
}

# pretrain EXP LABELS K: ssl_train into EXP; LABELS is a targets dir made by make_targets
# (its k is K), or empty for an objective without labels
pretrain() {
    local exp=$1 labels=$2 k=$3
    local stats="${expdir}/ssl_stats_${train_set}"
    local stamp="config=${ssl_config} labels=${labels} ngpu=${ngpu} args=${ssl_args}"
    if is_done "${exp}/.done" "${stamp}"; then
        log "pretraining ${exp}: already done with the same options; skipping"
        return
    fi
    if [ -f "${exp}/.options" ] && [ "$(cat "${exp}/.options")" != "${stamp}" ]; then
        log "Error: ${exp} holds a model trained with other options (${exp}/.options)."
        log "Remove ${exp} to retrain it, or choose another --ssl_tag."
        exit 1
    fi
    mkdir -p "${exp}"
    echo "${stamp}" > "${exp}/.options"

    local sets="${train_set},${valid_set}"
    if is_done "${stats}/.done" "${sets}"; then
        log "pretraining: statistics in ${stats} already collected; skipping"
    else
        log "pretraining: collect-stats of ${train_set} and ${valid_set} into ${stats}"
        rm -rf "${stats}"
        mkdir -p "${stats}"
        echo "<unk>" > "${stats}/token_list.txt"
        python -m espnet2.bin.ssl_train --collect_stats true --ngpu 0 \
            --config "${ssl_config}" --model_conf extract_feats_in_collect_stats=false \
            --token_list "${stats}/token_list.txt" --token_type word \
            --train_data_path_and_name_and_type "${dumpdir}/raw/${train_set}/wav.scp,speech,sound" \
            --valid_data_path_and_name_and_type "${dumpdir}/raw/${valid_set}/wav.scp,speech,sound" \
            --train_shape_file "${dumpdir}/raw/${train_set}/wav.scp" \
            --valid_shape_file "${dumpdir}/raw/${valid_set}/wav.scp" \
            --output_dir "${stats}" > "${stats}/collect_stats.log" 2>&1 \
            || { log "Error: collect-stats failed; see ${stats}/collect_stats.log"; exit 1; }
        echo "${sets}" > "${stats}/.done"
    fi

    local data_opts=(
        --train_data_path_and_name_and_type "${dumpdir}/raw/${train_set}/wav.scp,speech,sound"
        --valid_data_path_and_name_and_type "${dumpdir}/raw/${valid_set}/wav.scp,speech,sound"
        --train_shape_file "${stats}/train/speech_shape"
        --valid_shape_file "${stats}/valid/speech_shape"
    )
    if [ -n "${labels}" ]; then
        python -m espnet2.bin.ssl_recipe_config set_num_classes "${ssl_config}" "${k}" \
            "${exp}/train_config.yaml"
        data_opts+=(
            --train_data_path_and_name_and_type "${labels}/${train_set}/text,text,text"
            --valid_data_path_and_name_and_type "${labels}/${valid_set}/text,text,text"
            --token_list "${labels}/tokens.txt"
        )
    else
        cp "${ssl_config}" "${exp}/train_config.yaml"
        data_opts+=(--token_list "${stats}/token_list.txt")
    fi
    local dist_opts=()
    if [ "${ngpu}" -gt 1 ]; then
        dist_opts=(--multiprocessing_distributed true
                   --dist_init_method "file://$(cd "${exp}" && pwd)/.dist_init_$$")
    fi
    log "pretraining: espnet2.bin.ssl_train into ${exp} (log: ${exp}/train.log)"
    # shellcheck disable=SC2086
    python -m espnet2.bin.ssl_train --config "${exp}/train_config.yaml" \
        --ngpu "${ngpu}" "${dist_opts[@]}" --resume true --token_type word \
        "${data_opts[@]}" --output_dir "${exp}" ${ssl_args} > "${exp}/train.log" 2>&1 \
        || { log "Error: pretraining failed; see ${exp}/train.log"; tail -n 20 "${exp}/train.log" >&2; exit 1; }
    echo "${stamp}" > "${exp}/.done"
}

# final_tag: the experiment name of the last HuBERT iteration (or the only model)
final_tag() {
    if [ "${ssl_iterations}" -le 1 ]; then echo "${ssl_tag}"; else echo "${ssl_tag}_iter${ssl_iterations}"; fi
}

# write_model_card EXP: README.md of the packed model (what, how trained, last scores)
write_model_card() {
    local exp=$1
    local last_valid
    last_valid=$(grep -o "[0-9]*epoch results: .*" "${exp}/train.log" | tail -n 1 | sed 's/.*\[valid\] //')
    cat > "${exp}/README.md" << EOF
# ${exp##*/}: self-supervised speech model (ESPnet SSLTask)

- Recipe: \`$(basename "$(dirname "${PWD}")")/ssl1\`, stages 1-6
- Pretraining data: \`${train_set}\` (validation: \`${valid_set}\`), ${fs} Hz
- Config: \`${ssl_config}\` (as trained: \`config.yaml\` in this archive)
- HuBERT iterations: ${ssl_iterations}; first targets: ${target_type}, k=${n_clusters}; later: layer ${next_target_layer:-middle}, k=${next_n_clusters}
- Checkpoint: \`${ssl_model_name}\`
- Last validation scores: ${last_valid}
- Packed: $(date '+%Y-%m-%d')

Use it as the frontend of an ESPnet ASR model (\`frontend: espnet_ssl\` with this
archive's config and model file), or dump its layer features for the next k-means:
\`python -m espnet2.bin.ssl_dump_feats --feature_type ssl --ssl_packed_model <this zip> --layer L ...\`
EOF
}

# first_targets_tag: the targets dir name of iteration 1
first_targets_tag() {
    local layer_part=""
    [ -z "${target_layer}" ] || layer_part="_L${target_layer}"
    echo "${target_type}${layer_part}_km${n_clusters}"
}

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: Data preparation: local/data.sh ${local_data_opts}"
    sets=$(unique_words "${train_set} ${labeled_set} ${valid_set} ${test_sets}")
    done_file="data/.stage1.done"
    stamp="local_data_opts=${local_data_opts} sets=${sets} fs=${fs}"
    if is_done "${done_file}" "${stamp}"; then
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

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "Stage 2: Duration filtering into ${dumpdir}/raw (${min_wav_duration}-${max_wav_duration} s)"
    train_sets=$(unique_words "${train_set} ${labeled_set} ${valid_set}")
    all_sets=$(unique_words "${train_sets} ${test_sets}")
    for dset in ${all_sets}; do
        if [[ " ${train_sets} " == *" ${dset} "* ]]; then
            range=(--min_seconds "${min_wav_duration}" --max_seconds "${max_wav_duration}")
        else
            range=(--min_seconds 0 --max_seconds none)  # test sets are scored whole
        fi
        stamp="${range[*]} fs=${fs} data=$(cat "data/.stage1.done" 2> /dev/null || true)"
        if is_done "${dumpdir}/raw/.${dset}.done" "${stamp}"; then
            log "Stage 2: ${dumpdir}/raw/${dset} already done with the same options; skipping"
            continue
        fi
        mkdir -p "${dumpdir}/raw"
        rm -f "${dumpdir}/raw/.${dset}.done"
        python -m espnet2.bin.filter_data_dir "${range[@]}" --sample_rate "${fs}" \
            "data/${dset}" "${dumpdir}/raw/${dset}"
        echo "${stamp}" > "${dumpdir}/raw/.${dset}.done"
    done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    if [ "$(python -m espnet2.bin.ssl_recipe_config needs_labels "${ssl_config}")" = true ]; then
        log "Stage 3: HuBERT targets of iteration 1: $(first_targets_tag)"
        make_targets "$(first_targets_tag)" "${target_type}" "${n_clusters}" \
            "${target_layer}" "${target_model}"
    else
        log "Stage 3: ${ssl_config} trains without labels; no targets to make"
    fi
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    log "Stage 4: Pretraining ${expdir}/${ssl_tag} with ${ssl_config}"
    if [ "$(python -m espnet2.bin.ssl_recipe_config needs_labels "${ssl_config}")" = true ]; then
        pretrain "${expdir}/${ssl_tag}" "${dumpdir}/targets/$(first_targets_tag)" "${n_clusters}"
    else
        pretrain "${expdir}/${ssl_tag}" "" ""
    fi
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    if [ "${ssl_iterations}" -le 1 ]; then
        log "Stage 5: --ssl_iterations ${ssl_iterations}; no further HuBERT iteration"
    elif [ "$(python -m espnet2.bin.ssl_recipe_config needs_labels "${ssl_config}")" != true ]; then
        log "Error: --ssl_iterations ${ssl_iterations} needs a HuBERT config; ${ssl_config} trains without labels"
        exit 2
    else
        layer="${next_target_layer}"
        if [ -z "${layer}" ]; then
            layer=$(( ($(python -m espnet2.bin.ssl_recipe_config num_blocks "${ssl_config}") + 1) / 2 ))
        fi
        for iter in $(seq 2 "${ssl_iterations}"); do
            if [ "${iter}" -eq 2 ]; then prev="${ssl_tag}"; else prev="${ssl_tag}_iter$((iter - 1))"; fi
            log "Stage 5: HuBERT iteration ${iter}: layer ${layer} of ${expdir}/${prev}, k=${next_n_clusters}"
            tag="${prev}_L${layer}_km${next_n_clusters}"
            make_targets "${tag}" ssl "${next_n_clusters}" "${layer}" \
                "${expdir}/${prev}/${ssl_model_name}"
            pretrain "${expdir}/${ssl_tag}_iter${iter}" "${dumpdir}/targets/${tag}" "${next_n_clusters}"
        done
    fi
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    exp="${expdir}/$(final_tag)"
    zip="${exp}/$(final_tag).zip"
    log "Stage 6: Packing ${exp}/${ssl_model_name} into ${zip}"
    [ -f "${exp}/${ssl_model_name}" ] || { log "Error: ${exp}/${ssl_model_name} does not exist; run stages 4-5 first (or set --ssl_model_name)"; exit 1; }
    stamp="model=$(model_stamp "${exp}/${ssl_model_name}")"
    if is_done "${exp}/.pack.done" "${stamp}"; then
        log "Stage 6: already done with the same options; skipping"
    else
        rm -f "${exp}/.pack.done" "${zip}"
        write_model_card "${exp}"
        python -m espnet2.bin.pack ssl --ssl_train_config "${exp}/config.yaml" \
            --ssl_model_file "${exp}/${ssl_model_name}" --option "${exp}/README.md" \
            --outpath "${zip}"
        echo "${stamp}" > "${exp}/.pack.done"
    fi
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
