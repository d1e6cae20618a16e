#!/usr/bin/env bash
# The shared stage script of the SSL recipes. egs2/<corpus>/ssl2/run.sh calls it with the
# corpus's sets and options; a new corpus needs only its own local/data.sh and conf/.
#
# Stages (run a range with --stage N --stop_stage M; each is idempotent: a finished stage
# leaves a .done marker holding its options, and is skipped while they stay the same):
#   1. Data preparation: local/data.sh ${local_data_opts} writes Kaldi-style data dirs
#      data/<set> (wav.scp, text, utt2spk, spk2utt, utt2dur); every set is then validated
#      (sorted, consistent ids, readable mono audio at ${fs} Hz, non-empty text) in ${nj}
#      processes, decoding every file (--check_audio full) or reading headers only.
#   2. Duration filtering: ${dumpdir}/raw/<set> = data/<set> without the utterances
#      shorter than ${min_wav_duration} s or longer than ${max_wav_duration} s (training
#      sets only; test sets are kept whole), listed in ${dumpdir}/raw/<set>/filtered_utts.
#      With --train_hours H, train_set is cut to a seeded random subset of H hours
#      (nested: a larger H keeps a superset); use one --dumpdir per H.
#   3. HuBERT targets (skipped when the objective needs no labels, e.g. wav2vec 2.0):
#      ${target_type} features of the train and valid sets (${nj} shards in parallel
#      processes: on the CPU, or for model features one per GPU with --ngpu > 0,
#      logs in <feats>/log/dump.<j>.log), faiss k-means with
#      ${n_clusters} clusters on a seeded sample of train, one label per CNN frame:
#      ${dumpdir}/targets/<tag>/{<set>/text,tokens.txt,kmeans/}. A fairseq wav2vec 2.0
#      or HuBERT checkpoint (--target_model x.pt, --target_type ssl) is first converted
#      once into ${expdir}/fairseq_<name>/ (espnet2.bin.ssl_fairseq_import).
#   4. Pretraining: ESPnet's collect-stats, then espnet2.bin.ssl_train with
#      ${ssl_config} (the objective, HuBERT or wav2vec 2.0, comes from its loss:) into
#      ${expdir}/<ssl_tag>. An interrupted run resumes from its last checkpoint. Every
#      statistic is then plotted against updates and hours seen (<exp>/images_budget).
#   5. Further HuBERT iterations (--ssl_iterations N > 1): for i = 2..N, targets from
#      layer ${next_target_layer} of iteration i-1's model (${next_n_clusters} clusters),
#      then pretraining into ${expdir}/<ssl_tag>_iter<i>.
#   6. Packing for the model zoo: the last iteration's ${ssl_model_name}, its config, a
#      README.md model card (+ model_card.json) and, for HuBERT, the token list and k-means
#      centroids of its targets into ${expdir}/<last tag>/<last tag>.zip
#      (espnet2.bin.ssl_pack pack; espnet_model_zoo's ModelDownloader unpacks it).
#   7. Fine-tuning: a ${token_type} token list of ${labeled_set}, ESPnet's collect-stats,
#      then espnet2.bin.asr_train with ${asr_config} (CTC, frontend: espnet_ssl loading
#      the packed zip, or --pretrained_model, unpacked once into <asr exp>/ssl_model/;
#      a fairseq .pt is converted once into ${expdir}/fairseq_<name>/) into
#      ${expdir}/<asr_tag>; with --asr_baseline true also the same config from an
#      untrained model of the same architecture into ${expdir}/<asr_tag>_scratch
#      (--finetune_jobs 2 trains the two at once, each on half the CPU cores).
#      With --phone_probe true also the phone recognition probe (SUPERB PR, S.-w. Yang
#      et al., Interspeech 2021, arXiv:2105.01051): the phones of each set's phones.ctm
#      as ${dumpdir}/raw/<set>/text_phn (espnet2.bin.ssl_phone_text), their token list,
#      and ${probe_config} (the same model frozen, a learned softmax-weighted sum of its
#      layers, a linear CTC head) into ${expdir}/<asr_tag>_phones. A set without
#      phones.ctm stops the run after stage 2.
#   8. Decoding and scoring: espnet2.bin.asr_inference (CTC) of every test set by every
#      model, all in one espnet2.bin.ssl_decode process (ESPnet imported once) with
#      ${inference_nj} workers, into <asr exp>/decode_<set>/text, WER and CER by
#      espnet2.bin.asr_score into <asr exp>/decode_<set>/score/, and a table of all
#      sets (and the baseline) in ${expdir}/<asr_tag>/RESULTS.md; with --phone_probe
#      true the probe's PER (its WER against text_phn) in <asr_tag>_phones/RESULTS.md.
#   9. Release: the zip again with the fine-tuning results (and the probe's PER) in its
#      model card into ${expdir}/<last tag>/release/<last tag>.zip, and the Hugging Face
#      hub folder release/hf_hub/ (the archive's files, the card as README.md, and the
#      transformers config.json + weights of espnet2.bin.ssl_hf_convert where the
#      architecture has a transformers class); the upload command (network, token) is
#      printed, not run.
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') [${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}] $*" >&2
}

# General
stage=1                 # first stage to run
stop_stage=10000        # last stage to run
nj=4                    # parallel jobs of the data validation and the feature dumps (shards)
ngpu=0                  # GPUs per node for pretraining, fine-tuning and model feature dumps (0: CPU)
deterministic=false     # true: cuDNN deterministic algorithms, no benchmark, in every training (slower)
num_nodes=1             # nodes for pretraining and fine-tuning (> 1: needs --cuda_cmd)
cuda_cmd=""             # num_nodes > 1: Kaldi-style job script of the cluster (slurm.pl, queue.pl)
dumpdir=dump            # filtered sets, features and labels
expdir=exp              # models and logs
# Data
local_data_opts=""      # options passed to local/data.sh
train_set=""            # unlabeled pretraining set (required)
labeled_set=""          # labeled subset used for fine-tuning (optional)
valid_set=""            # validation set (required)
test_sets=""            # evaluation sets, space separated (optional)
fs=16000                # sample rate of the audio in Hz
check_audio=full        # stage 1: full (decode every file) or header (headers only; misses corrupt payloads, NaN)
min_wav_duration=0.1    # shortest training utterance in seconds (the CNN needs 0.025 s)
max_wav_duration=20     # longest training utterance in seconds (memory)
train_hours=""          # pretrain on a seeded subset of this many hours of train_set (empty: all)
train_hours_seed=0      # seed of that subset (same seed: nested subsets)
# Targets (HuBERT)
target_type=mfcc        # features of the first iteration's k-means: mfcc, ssl or asr
target_model=""         # ssl/asr targets: a .pth next to its config.yaml, a packed .zip (ssl: or a fairseq .pt)
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
# Fine-tuning (CTC ASR on the labeled set, the packed model as espnet_ssl frontend)
asr_config=""           # ASR config with frontend: espnet_ssl (required for stages 7-8)
asr_tag=""              # experiment name (default: asr_<last ssl tag>)
pretrained_model=""     # fine-tune this packed .zip (.pth beside its config.yaml, fairseq .pt), not stage 6's
asr_args=""             # extra options for espnet2.bin.asr_train
asr_baseline=false      # also fine-tune the same ASR config from an untrained SSL model
finetune_jobs=1         # fine-tunings trained at once (the model and its baseline); CPU: nproc/N threads each
token_type=char         # ASR output units: char or bpe (sentencepiece)
nbpe=100                # bpe: sentencepiece vocabulary size
asr_model_name=valid.loss.best.pth  # ASR checkpoint decoded in stage 8
# Phone recognition probe (SUPERB PR: the SSL model frozen, a weighted sum of its layers)
phone_probe=false       # also train a linear CTC phone probe on the frozen model and score its PER
probe_config=""         # ASR config of the probe (required with --phone_probe true)
probe_args=""           # extra options for the probe's espnet2.bin.asr_train
# Decoding and scoring
inference_nj=4          # decoding workers (and shards of each set)
gpu_inference=false     # decode on GPUs (one per job, round robin over --ngpu)
inference_args=""       # extra options for espnet2.bin.asr_inference
# Release
hf_repo=""              # Hugging Face hub repository of stage 9 (default: <your-hf-user>/<last tag>)

help_message=$(cat << EOM
Usage: $0 --train_set <set> --valid_set <set> [options]

Options:
    --stage               # first stage to run (default="${stage}")
    --stop_stage          # last stage to run (default="${stop_stage}")
    --nj                  # parallel jobs of the validation and the feature dumps (default="${nj}")
    --ngpu                # GPUs per node for training and model feature dumps, 0 for CPU (default="${ngpu}")
    --deterministic       # true: --cudnn_deterministic true --cudnn_benchmark false for every
                          # training; false: the training config decides (the pretraining
                          # configs: benchmark on, not deterministic: faster convolutions for the
                          # waveform CNN and the positional conv; cost on a GPU not measured
                          # yet). Not part of the .done stamps (default="${deterministic}")
    --num_nodes           # nodes for training (default="${num_nodes}")
    --cuda_cmd            # num_nodes > 1: job script, e.g. "utils/slurm.pl" (default="${cuda_cmd}")
    --dumpdir             # filtered sets, features and labels (default="${dumpdir}")
    --expdir              # models and logs (default="${expdir}")
    --local_data_opts     # options passed to local/data.sh (default="${local_data_opts}")
    --train_set           # unlabeled pretraining set in data/ (required)
    --labeled_set         # labeled subset used for fine-tuning (default="${labeled_set}")
    --valid_set           # validation set in data/ (required)
    --test_sets           # evaluation sets, space separated (default="${test_sets}")
    --fs                  # sample rate of the audio in Hz (default="${fs}")
    --check_audio         # stage 1: full decodes every audio file; header reads headers only
                          # (fast; misses corrupt FLAC payloads and NaN samples, found later
                          # by training one at a time) (default="${check_audio}")
    --min_wav_duration    # shortest training utterance, s (default="${min_wav_duration}")
    --max_wav_duration    # longest training utterance, s (default="${max_wav_duration}")
    --train_hours         # seeded subset of train_set, in hours; empty = all (default="${train_hours}")
    --train_hours_seed    # seed of that subset (default="${train_hours_seed}")
    --target_type         # mfcc, ssl or asr features for the first k-means (default="${target_type}")
    --target_model        # ssl/asr targets: model .pth or packed .zip; ssl: or a fairseq .pt
                          # (default="${target_model}")
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
    --asr_config          # ASR fine-tuning config, frontend: espnet_ssl (required for stages 7-8)
    --asr_tag             # fine-tuning experiment name (default: asr_<last ssl tag>)
    --pretrained_model    # fine-tune this packed .zip, .pth or fairseq .pt instead of stage 6's
                          # (default="${pretrained_model}")
    --asr_args            # extra options for espnet2.bin.asr_train (default="${asr_args}")
    --asr_baseline        # also fine-tune from an untrained SSL model (default="${asr_baseline}")
    --finetune_jobs       # stage 7: fine-tunings trained at once, e.g. 2: the model and its
                          # --asr_baseline side by side; with --ngpu 0 each on nproc/N threads
                          # (default="${finetune_jobs}")
    --token_type          # char or bpe (default="${token_type}")
    --nbpe                # bpe vocabulary size (default="${nbpe}")
    --asr_model_name      # ASR checkpoint decoded in stage 8 (default="${asr_model_name}")
    --phone_probe         # also train and score the frozen-model phone probe (default="${phone_probe}")
    --probe_config        # ASR config of the probe (required with --phone_probe true)
    --probe_args          # extra options for the probe's asr_train (default="${probe_args}")
    --inference_nj        # decoding workers and shards of each set (default="${inference_nj}")
    --gpu_inference       # decode on GPUs (default="${gpu_inference}")
    --inference_args      # extra options for espnet2.bin.asr_inference (default="${inference_args}")
    --hf_repo             # hub repository of stage 9, <user>/<name> (default: <your-hf-user>/<last tag>)
EOM
)

log "$0 $*"
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "Error: unexpected argument '$1'"; echo "${help_message}" >&2; exit 2
fi
[ -n "${train_set}" ] || { log "Error: --train_set is required"; exit 2; }
[ -n "${valid_set}" ] || { log "Error: --valid_set is required"; exit 2; }
case "${check_audio}" in
    full|header) ;;
    *) log "Error: --check_audio must be full or header, not '${check_audio}'"; exit 2 ;;
esac
if ! [[ "${finetune_jobs}" =~ ^[1-9][0-9]*$ ]]; then
    log "Error: --finetune_jobs must be a positive integer, not '${finetune_jobs}'"
    exit 2
fi
if [ "${num_nodes}" -gt 1 ] && [ -z "${cuda_cmd}" ]; then
    log "Error: --num_nodes ${num_nodes} needs --cuda_cmd, the cluster's job script (e.g. ESPnet's utils/slurm.pl)"
    exit 2
fi
if [ "${stop_stage}" -ge 3 ] && [ "${stage}" -le 6 ] && [ -z "${ssl_config}" ]; then
    log "Error: --ssl_config is required for stages 3-6 (e.g. conf/train_ssl_hubert_tiny.yaml)"
    exit 2
fi
if [ "${stop_stage}" -ge 7 ] && [ "${stage}" -le 8 ]; then
    if [ -z "${asr_config}" ]; then
        log "Error: --asr_config is required for stages 7-8 (e.g. conf/train_asr_ctc_tiny.yaml)"
        exit 2
    fi
    [ -n "${labeled_set}" ] || { log "Error: --labeled_set is required for stages 7-8"; exit 2; }
    [ -n "${test_sets}" ] || { log "Error: --test_sets is required for stage 8"; exit 2; }
    case "${token_type}" in
        char|bpe) ;;
        *) log "Error: --token_type must be char or bpe, not '${token_type}'"; exit 2 ;;
    esac
    if "${phone_probe}" && [ -z "${probe_config}" ]; then
        log "Error: --phone_probe true needs --probe_config (e.g. conf/train_asr_phone_probe_tiny.yaml)"
        exit 2
    fi
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

# run_stamped FILE STAMP WHAT COMMAND...: COMMAND once per STAMP, the options it depends
# on. While FILE (a .done marker) holds STAMP it is skipped, logging WHAT; otherwise FILE
# is removed, COMMAND runs, and STAMP is written into FILE only once COMMAND succeeded:
# changed options redo the step, and an interrupted one leaves no stamp. Every .done
# marker of this script is checked and written here, and only here.
run_stamped() {
    local file=$1 stamp=$2 what=$3
    shift 3
    if is_done "${file}" "${stamp}"; then
        log "${what}: already done with the same options; skipping"
        return 0
    fi
    rm -f "${file}"
    "$@"
    local status=$?  # non-zero only where errexit is off, as inside $(...)
    [ "${status}" -eq 0 ] || return "${status}"
    mkdir -p "$(dirname "${file}")"
    echo "${stamp}" > "${file}"
}

# model_stamp FILE: the file and its modification time, so a retrained model is noticed
model_stamp() {
    if [ -n "$1" ]; then echo "$1@$(stat -L -c %Y "$1" 2> /dev/null || echo missing)"; fi
}

# fairseq_dir PT: the folder the fairseq checkpoint PT is converted into
fairseq_dir() {
    echo "${expdir}/fairseq_$(basename "$1" .pt)"
}

# import_fairseq PT: the fairseq wav2vec 2.0 / HuBERT checkpoint PT as config.yaml +
# model.pth in $(fairseq_dir PT) (espnet2.bin.ssl_fairseq_import; a HuBERT gets a new
# head with fairseq's number of classes), once: redone when PT's checksum changes
import_fairseq() {
    local pt=$1
    local dir stamp
    dir=$(fairseq_dir "${pt}")
    [ -f "${pt}" ] || { log "Error: the fairseq checkpoint '${pt}' does not exist"; exit 1; }
    stamp="sha256=$(sha256sum "${pt}" | cut -d ' ' -f 1)"
    run_stamped "${dir}/.done" "${stamp}" "fairseq ${pt}: conversion into ${dir}" \
        convert_fairseq "${pt}" "${dir}"
}

# convert_fairseq PT DIR: espnet2.bin.ssl_fairseq_import of PT into DIR
convert_fairseq() {
    local pt=$1 dir=$2
    mkdir -p "${dir}"
    log "fairseq ${pt}: converting into ${dir} (log: ${dir}/import.log)"
    python -m espnet2.bin.ssl_fairseq_import --checkpoint "${pt}" --out_dir "${dir}" \
        > "${dir}/import.log" 2>&1 || {
        log "Error: ssl_fairseq_import failed; see ${dir}/import.log"
        tail -n 1 "${dir}/import.log" >&2
        exit 1
    }
}

# make_targets TAG TYPE K LAYER MODEL: features of train and valid, k-means on train,
# labels of both in ${dumpdir}/targets/TAG/<set>/text, token list TAG/tokens.txt
make_targets() {
    local tag=$1 type=$2 k=$3 layer=$4 model=$5
    local stamp
    if [[ "${model}" == *.pt ]] && [ "${type}" != mfcc ]; then
        if [ "${type}" != ssl ]; then
            log "Error: '${model}' is a fairseq SSL checkpoint; use it with --target_type ssl"
            exit 2
        fi
        import_fairseq "${model}"
        model="$(fairseq_dir "${model}")/model.pth"
    fi
    stamp="type=${type} k=${k} layer=${layer} model=$(model_stamp "${model}")"
    stamp+=" fraction=${kmeans_fraction} max_frames=${kmeans_max_frames}"
    stamp+=" seed=${kmeans_seed} sets=${train_set},${valid_set} cnn=${ssl_config}"
    run_stamped "${dumpdir}/targets/${tag}/.done" "${stamp}" "targets ${dumpdir}/targets/${tag}" \
        dump_targets "${tag}" "${type}" "${k}" "${layer}" "${model}"
}

# dump_targets TAG TYPE K LAYER MODEL: the work of make_targets (MODEL: no fairseq .pt)
dump_targets() {
    local tag=$1 type=$2 k=$3 layer=$4 model=$5
    local dir="${dumpdir}/targets/${tag}"
    local feat_opts=(--feature_type "${type}")
    [ -z "${layer}" ] || feat_opts+=(--layer "${layer}")
    # model features: one process per GPU (bf16, checked against fp32), or on the CPU
    if [ "${type}" = mfcc ]; then
        :
    elif [ "${ngpu}" -gt 0 ]; then
        feat_opts+=(--ngpu "${ngpu}")
    else
        feat_opts+=(--device cpu)
    fi
    if [ "${type}" != mfcc ]; then
        if [ ! -f "${model}" ]; then
            log "Error: ${type} targets need --target_model, a model file ('${model}' does not exist)"
            exit 1
        fi
        case "${model}" in
            *.zip) feat_opts+=("--${type}_packed_model" "${model}") ;;
            *) feat_opts+=("--${type}_model_file" "${model}") ;;
        esac
    fi
    local dset
    for dset in "${train_set}" "${valid_set}"; do
        log "targets ${tag}: ${type} features of ${dset} (logs: ${dir}/feats/${dset}/log/dump.*.log)"
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
    label_quality "${tag}" "${dir}"
    "${keep_target_feats}" || rm -rf "${dir}/feats"
}

# label_quality TAG DIR: phone purity, cluster purity and PNMI of DIR's train labels
# into DIR/quality.json, when the corpus has phone alignments (data/<train>/phones.ctm)
label_quality() {
    local tag=$1 dir=$2
    local ctm="data/${train_set}/phones.ctm"
    [ -f "${ctm}" ] || return 0
    log "targets ${tag}: label quality against ${ctm}"
    python -m espnet2.bin.ssl_label_quality --ctm "${ctm}" \
        --labels "${tag}=${dir}/${train_set}/text" \
        --utt2num_samples "${dumpdir}/raw/${train_set}/utt2num_samples" \
        --sample_rate "${fs}" --common_only true --output "${dir}/quality.json" > /dev/null
}

# pretrain EXP LABELS K: ssl_train into EXP; LABELS is a targets dir made by make_targets
# (its k is K), or empty for an objective without labels
pretrain() {
    local exp=$1 labels=$2 k=$3
    local stamp="config=${ssl_config} labels=${labels} ngpu=${ngpu} args=${ssl_args}"
    claim_exp "${exp}" "${stamp}"
    run_stamped "${exp}/.done" "${stamp}" "${exp}" train_ssl "${exp}" "${labels}" "${k}"
}

# ssl_stats_dir: ESPnet's collect-stats of the pretraining (the shapes the sampler sorts by)
ssl_stats_dir() {
    echo "${expdir}/ssl_stats_${train_set}"
}

# train_ssl EXP LABELS K: the work of pretrain: collect-stats (once per set of
# utterances), ssl_train, the statistics plotted against updates and hours seen
train_ssl() {
    local exp=$1 labels=$2 k=$3
    local stats sets
    stats=$(ssl_stats_dir)
    # the sets as stage 2 left them (another --dumpdir, e.g. --train_hours: collect again)
    sets="${train_set},${valid_set} $(cat "${dumpdir}/raw/.${train_set}.done" 2> /dev/null || true)"
    run_stamped "${stats}/.done" "${sets}" "pretraining: statistics in ${stats}" collect_ssl_stats

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
    # shellcheck disable=SC2046,SC2086
    train_or_fail ssl_train "${exp}" --config "${exp}/train_config.yaml" \
        --ngpu "${ngpu}" $(dist_options "${exp}") $(cudnn_options) --resume true --token_type word \
        "${data_opts[@]}" --output_dir "${exp}" ${ssl_args}
    log "pretraining: statistics against updates and hours seen in ${exp}/images_budget"
    python -m espnet2.bin.ssl_plot_stats "${exp}"
}

# collect_ssl_stats: ESPnet's collect-stats of the train and valid sets into $(ssl_stats_dir)
collect_ssl_stats() {
    local stats
    stats=$(ssl_stats_dir)
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
}

# claim_exp EXP STAMP: stops when EXP holds a model trained with options other than
# STAMP (EXP/.options, written before the training starts: a resumed run keeps them)
claim_exp() {
    local exp=$1 stamp=$2
    if [ ! -f "${exp}/.options" ]; then
        mkdir -p "${exp}"
        echo "${stamp}" > "${exp}/.options"
    elif [ "$(cat "${exp}/.options")" != "${stamp}" ]; then
        log "Error: ${exp} holds a model trained with other options (${exp}/.options)."
        log "Remove ${exp} to retrain it, or choose another experiment name (--ssl_tag/--asr_tag)."
        exit 1
    fi
}

# dist_options EXP: the options of a multi-GPU run on one node (none for ngpu <= 1)
dist_options() {
    if [ "${ngpu}" -gt 1 ] && [ "${num_nodes}" -le 1 ]; then
        local dir
        dir=$(cd "$1" && pwd)
        echo "--multiprocessing_distributed true --dist_init_method file://${dir}/.dist_init_$$"
    fi
}

# cudnn_options: with --deterministic true, the options that make cuDNN deterministic
# (they override the training config); nothing otherwise. Left out of the .done and
# .options stamps: a run may be resumed with the other setting (same model, other
# rounding), and a finished experiment is not retrained for it
cudnn_options() {
    if "${deterministic}"; then echo "--cudnn_deterministic true --cudnn_benchmark false"; fi
}

# train_or_fail TOOL EXP ARGS...: python -m espnet2.bin.TOOL ARGS > EXP/train.log
train_or_fail() {
    local tool=$1 exp=$2
    shift 2
    log "${tool}: into ${exp} (log: ${exp}/train.log)"
    if [ "${num_nodes}" -gt 1 ]; then
        # ESPnet's launcher: one process per node through the cluster's job script
        # (srun with slurm.pl, mpirun otherwise), file:// rendezvous in EXP
        python -m espnet2.bin.launch --cmd "${cuda_cmd}" \
            --log "${exp}/train.log" --ngpu "${ngpu}" --num_nodes "${num_nodes}" \
            --init_file_prefix "${exp}/.dist_init_" --multiprocessing_distributed true -- \
            python -m "espnet2.bin.${tool}" "$@" \
            || { log "Error: ${tool} failed; see ${exp}/train.log"; exit 1; }
        return
    fi
    python -m "espnet2.bin.${tool}" "$@" > "${exp}/train.log" 2>&1 || {
        log "Error: ${tool} failed; see ${exp}/train.log"
        tail -n 20 "${exp}/train.log" >&2
        exit 1
    }
}

# final_tag: the experiment name of the last HuBERT iteration (or the only model)
final_tag() {
    if [ "${ssl_iterations}" -le 1 ]; then echo "${ssl_tag}"; else echo "${ssl_tag}_iter${ssl_iterations}"; fi
}

# pack_ssl pack EXP ZIP [OPTIONS] | pack_ssl release EXP DIR [OPTIONS]: EXP's
# ${ssl_model_name} with its model card and HuBERT's targets into ZIP (espnet2.bin.ssl_pack
# pack), or the release into DIR (the zip with the fine-tuning results, the
# transformers export where there is one, the hub folder; espnet2.bin.ssl_pack release);
# ZIP or DIR is removed first
pack_ssl() {
    local command=$1 exp=$2 out=$3
    shift 3
    local out_opt=--outpath
    [ "${command}" = pack ] || out_opt=--out_dir
    local iterations="HuBERT iterations: ${ssl_iterations}; first targets: ${target_type}, k=${n_clusters}"
    iterations+="; later: layer ${next_target_layer:-middle}, k=${next_n_clusters}"
    rm -rf "${out}"
    mkdir -p "$(dirname "${out}")"
    python -m espnet2.bin.ssl_pack "${command}" --exp_dir "${exp}" \
        --model_file "${exp}/${ssl_model_name}" \
        --train_data "${dumpdir}/raw/${train_set}" --valid_data "${dumpdir}/raw/${valid_set}" \
        --recipe "$(basename "$(dirname "${PWD}")")/ssl2" \
        --description "Config: \`${ssl_config}\` (as trained: \`config.yaml\` in this archive)" \
        --description "${iterations}" \
        "$@" "${out_opt}" "${out}" > "${exp}/${command}.log" 2>&1 || {
        log "Error: ssl_pack ${command} failed; see ${exp}/${command}.log"
        tail -n 5 "${exp}/${command}.log" >&2
        exit 1
    }
}

# first_targets_tag: the targets dir name of iteration 1
first_targets_tag() {
    local layer_part=""
    [ -z "${target_layer}" ] || layer_part="_L${target_layer}"
    echo "${target_type}${layer_part}_km${n_clusters}"
}

# The output units of a fine-tuning (UNIT below): char or bpe (--token_type: the ASR of
# stage 7) or phn (the phone probe: the phones of text_phn, one word token each)

# unit_text UNIT: the transcript file of UNIT in every ${dumpdir}/raw/<set>
unit_text() {
    if [ "$1" = phn ]; then echo text_phn; else echo text; fi
}

# token_dir UNIT: the token list of UNIT (and the sentencepiece model for bpe)
token_dir() {
    if [ "$1" = bpe ]; then
        echo "${dumpdir}/token_list/${labeled_set}_bpe${nbpe}"
    else
        echo "${dumpdir}/token_list/${labeled_set}_$1"
    fi
}

# make_token_list UNIT: UNIT tokens of the labeled set's $(unit_text UNIT), with
# <blank>, <unk> and <sos/eos>
make_token_list() {
    local unit=$1
    local dir stamp
    dir=$(token_dir "${unit}")
    stamp="type=${unit} nbpe=${nbpe} data=$(cat "${dumpdir}/raw/.${labeled_set}.done")"
    run_stamped "${dir}/.done" "${stamp}" "tokens ${dir}" write_token_list "${unit}"
}

# write_token_list UNIT: the work of make_token_list
write_token_list() {
    local unit=$1
    local dir text
    dir=$(token_dir "${unit}")
    text="${dumpdir}/raw/${labeled_set}/$(unit_text "${unit}")"
    rm -rf "${dir}"
    mkdir -p "${dir}"
    local opts=(--token_type "${unit}")
    [ "${unit}" != phn ] || opts=(--token_type word)  # phones: space separated
    if [ "${unit}" = bpe ]; then
        cut -f 2- -d " " "${text}" > "${dir}/train.txt"
        python -m espnet2.bin.spm_train --input="${dir}/train.txt" --vocab_size="${nbpe}" \
            --model_type=unigram --model_prefix="${dir}/bpe" --character_coverage=1.0 \
            --input_sentence_size=100000000 > "${dir}/spm_train.log" 2>&1 || {
            log "Error: sentencepiece training failed; see ${dir}/spm_train.log (a smaller --nbpe?)"
            exit 1
        }
        opts+=(--bpemodel "${dir}/bpe.model")
    fi
    log "tokens: ${unit} token list of ${text} into ${dir}/tokens.txt"
    python -m espnet2.bin.tokenize_text "${opts[@]}" --input "${text}" \
        --output "${dir}/tokens.txt" --field 2- --write_vocabulary true \
        --add_symbol "<blank>:0" --add_symbol "<unk>:1" --add_symbol "<sos/eos>:-1"
}

# asr_token_options UNIT: the token options of asr_train
asr_token_options() {
    local unit=$1
    local type="${unit}"
    [ "${unit}" != phn ] || type=word
    echo "--token_type ${type} --token_list $(token_dir "${unit}")/tokens.txt"
    if [ "${unit}" = bpe ]; then echo "--bpemodel $(token_dir "${unit}")/bpe.model"; fi
}

# asr_data_options UNIT: the data options of asr_train (audio and UNIT transcripts of
# the labeled and valid sets), one a line
asr_data_options() {
    local unit=$1
    local dset split=train
    for dset in "${labeled_set}" "${valid_set}"; do
        printf '%s\n' "--${split}_data_path_and_name_and_type" "${dumpdir}/raw/${dset}/wav.scp,speech,sound"
        printf '%s\n' "--${split}_data_path_and_name_and_type" "${dumpdir}/raw/${dset}/$(unit_text "${unit}"),text,text"
        split=valid
    done
}

# asr_stats_dir UNIT: collect-stats of the fine-tuning, one per token list
asr_stats_dir() {
    echo "${expdir}/asr_stats_$(basename "$(token_dir "$1")")"
}

# asr_stats CONFIG UNIT: ESPnet's collect-stats of the labeled and valid sets (the
# shapes the batch sampler sorts by), once per token list
asr_stats() {
    local config=$1 unit=$2
    local stats stamp
    stats=$(asr_stats_dir "${unit}")
    stamp="sets=${labeled_set},${valid_set} tokens=$(cat "$(token_dir "${unit}")/.done")"
    run_stamped "${stats}/.done" "${stamp}" "fine-tuning: statistics in ${stats}" \
        collect_asr_stats "${config}" "${unit}"
}

# collect_asr_stats CONFIG UNIT: the work of asr_stats
collect_asr_stats() {
    local config=$1 unit=$2
    local stats data_opts
    stats=$(asr_stats_dir "${unit}")
    mapfile -t data_opts < <(asr_data_options "${unit}")
    log "fine-tuning: collect-stats of ${labeled_set} and ${valid_set} into ${stats}"
    rm -rf "${stats}"
    mkdir -p "${stats}"
    # shellcheck disable=SC2046
    python -m espnet2.bin.asr_train --collect_stats true --ngpu 0 --config "${config}" \
        --model_conf extract_feats_in_collect_stats=false $(asr_token_options "${unit}") \
        "${data_opts[@]}" \
        --train_shape_file "${dumpdir}/raw/${labeled_set}/wav.scp" \
        --valid_shape_file "${dumpdir}/raw/${valid_set}/wav.scp" \
        --output_dir "${stats}" > "${stats}/collect_stats.log" 2>&1 \
        || { log "Error: collect-stats failed; see ${stats}/collect_stats.log"; exit 1; }
}

# finetune_stamp EXP MODEL CONFIG UNIT ARGS: the options a fine-tuning depends on
finetune_stamp() {
    local model=$2 config=$3 unit=$4 args=$5
    echo "config=${config} model=$(model_stamp "${model}") tokens=$(token_dir "${unit}")" \
        "ngpu=${ngpu} args=${args}"
}

finetune_queue=()  # EXP STAMP UNIT ARGS of each fine-tuning set up and not yet trained

# finetune_setup CONFIG UNIT ARGS EXP MODEL: the set-up of asr_train of CONFIG (extra
# options ARGS) on UNIT transcripts into EXP, the espnet_ssl frontend loading MODEL (a
# packed zip, or a .pth next to its config.yaml): EXP's train config and the
# collect-stats of UNIT (shared by all its fine-tunings); EXP is then queued for
# finetune_run
finetune_setup() {
    local config=$1 unit=$2 args=$3 exp=$4 model=$5
    local stamp
    stamp=$(finetune_stamp "${exp}" "${model}" "${config}" "${unit}" "${args}")
    claim_exp "${exp}" "${stamp}"
    # the run_stamped call of train_in_background redoes EXP; set it up first
    if ! is_done "${exp}/.done" "${stamp}"; then
        python -m espnet2.bin.ssl_recipe_config set_frontend_model "${config}" "${model}" \
            "${exp}/train_config.yaml"
        asr_stats "${exp}/train_config.yaml" "${unit}"
    fi
    finetune_queue+=("${exp}" "${stamp}" "${unit}" "${args}")
}

# finetune_run: the trainings of the queued fine-tunings, ${finetune_jobs} at a time
# (with --ngpu 0 each on nproc/${finetune_jobs} threads, OMP_NUM_THREADS); a failed one
# stops the script once the others have finished
finetune_run() {
    local threads="" pids=() exps=() failed=() i
    if [ "${finetune_jobs}" -gt 1 ] && [ "${ngpu}" -eq 0 ]; then
        threads=$(( $(nproc) / finetune_jobs > 0 ? $(nproc) / finetune_jobs : 1 ))
    fi
    for ((i = 0; i < ${#finetune_queue[@]}; i += 4)); do
        if [ "${#pids[@]}" -ge "${finetune_jobs}" ]; then
            wait "${pids[0]}" || failed+=("${exps[0]}")
            pids=("${pids[@]:1}") exps=("${exps[@]:1}")
        fi
        train_in_background "${finetune_queue[@]:i:4}" "${threads}" &
        pids+=($!) exps+=("${finetune_queue[i]}")
    done
    finetune_queue=()
    for i in "${!pids[@]}"; do
        wait "${pids[i]}" || failed+=("${exps[i]}")
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        log "Error: fine-tuning failed: ${failed[*]} (see train.log in each)"
        exit 1
    fi
}

# finetune_all CONFIG UNIT ARGS EXP MODEL [EXP MODEL ...]: finetune_setup of each EXP
# from its MODEL, then finetune_run
finetune_all() {
    local config=$1 unit=$2 args=$3
    shift 3
    while [ $# -gt 0 ]; do
        finetune_setup "${config}" "${unit}" "${args}" "$1" "$2"
        shift 2
    done
    finetune_run
}

# train_in_background EXP STAMP UNIT ARGS THREADS: the training of finetune_run, EXP set
# up, once per STAMP; THREADS (if not empty) is its OMP_NUM_THREADS
train_in_background() {
    local exp=$1 stamp=$2 unit=$3 args=$4 threads=$5
    [ -z "${threads}" ] || export OMP_NUM_THREADS="${threads}"
    run_stamped "${exp}/.done" "${stamp}" "${exp}" train_asr "${exp}" "${unit}" "${args}"
}

# train_asr EXP UNIT ARGS: asr_train of EXP/train_config.yaml (set up by finetune_setup)
train_asr() {
    local exp=$1 unit=$2 args=$3
    local stats data_opts
    stats=$(asr_stats_dir "${unit}")
    mapfile -t data_opts < <(asr_data_options "${unit}")
    # shellcheck disable=SC2046,SC2086
    train_or_fail asr_train "${exp}" --config "${exp}/train_config.yaml" \
        --ngpu "${ngpu}" $(dist_options "${exp}") $(cudnn_options) --resume true \
        $(asr_token_options "${unit}") "${data_opts[@]}" \
        --train_shape_file "${stats}/train/speech_shape" \
        --train_shape_file "${stats}/train/text_shape" \
        --valid_shape_file "${stats}/valid/speech_shape" \
        --valid_shape_file "${stats}/valid/text_shape" \
        --output_dir "${exp}" ${args}
}

# phone_text SET: ${dumpdir}/raw/SET/text_phn, the phones of its phones.ctm in time
# order, one line per utterance (espnet2.bin.ssl_phone_text; the phone probe's text)
phone_text() {
    local dir="${dumpdir}/raw/$1" stamp
    stamp="data=$(cat "${dumpdir}/raw/.$1.done")"
    run_stamped "${dir}/.text_phn.done" "${stamp}" "phones ${dir}/text_phn" write_phone_text "${dir}"
}

# write_phone_text DIR: the work of phone_text
write_phone_text() {
    local dir=$1
    python -m espnet2.bin.ssl_phone_text --ctm "${dir}/phones.ctm" \
        --utt_list "${dir}/wav.scp" --output "${dir}/text_phn" \
        || { log "Error: no phone transcripts for ${dir} (see above)"; exit 1; }
}

# untrained_dir: the folder of the from-scratch baseline's untrained model
untrained_dir() {
    if [ -n "${pretrained_model}" ]; then
        echo "${expdir}/${asr_tag}_untrained"
    else
        echo "${expdir}/$(final_tag)_untrained"
    fi
}

# make_untrained_model: $(untrained_dir)/untrained.pth, a model of the last SSL model's
# architecture with fresh weights (the from-scratch baseline). Read from the trained
# model's config.yaml, or for a --pretrained_model zip from the zip itself (unpacked
# into that folder)
make_untrained_model() {
    local dir config
    dir=$(untrained_dir)
    config="${expdir}/$(final_tag)/config.yaml"
    if [ -n "${pretrained_model}" ]; then
        config=$(ssl_model)
        [[ "${config}" == *.zip ]] || config="$(dirname "${config}")/config.yaml"
    fi
    run_stamped "${dir}/.done" "config=$(model_stamp "${config}")" "untrained model ${dir}" \
        python -m espnet2.bin.ssl_recipe_config untrained_model "${config}" "${dir}" --seed 0
}

# ssl_model: the SSL model stage 7 fine-tunes (--pretrained_model, a fairseq .pt as
# converted by import_fairseq, else stage 6's zip)
ssl_model() {
    case "${pretrained_model}" in
        "") echo "${expdir}/$(final_tag)/$(final_tag).zip" ;;
        *.pt) echo "$(fairseq_dir "${pretrained_model}")/model.pth" ;;
        *) echo "${pretrained_model}" ;;
    esac
}

# asr_exps: the fine-tuning experiments, "name=dir" (the baseline when asked for)
asr_exps() {
    echo "pretrained=${expdir}/${asr_tag}"
    if "${asr_baseline}"; then echo "scratch=${expdir}/${asr_tag}_scratch"; fi
}

# probe_exp: the experiment of the phone probe (--phone_probe true)
probe_exp() {
    echo "${expdir}/${asr_tag}_phones"
}

# decode_stamp EXP SET: what the decoding of SET by EXP depends on: the model, the
# options and the data
decode_stamp() {
    local exp=$1 dset=$2
    echo "model=$(model_stamp "${exp}/${asr_model_name}") args=${inference_args}" \
        "data=$(cat "${dumpdir}/raw/.${dset}.done")"
}

# decode_jobs EXP:UNIT...: the espnet2.bin.ssl_decode --job options, one a line, of
# every test set that an EXP has not decoded with the same model, options and data
decode_jobs() {
    local spec exp unit dset ref
    for spec in "$@"; do
        exp=${spec%:*} unit=${spec##*:}
        if [ ! -f "${exp}/${asr_model_name}" ]; then
            log "Error: ${exp}/${asr_model_name} does not exist; run stage 7 first (or set --asr_model_name)"
            exit 1
        fi
        for dset in ${test_sets}; do
            ref="${dumpdir}/raw/${dset}/$(unit_text "${unit}")"
            [ -f "${ref}" ] || { log "Error: ${ref} does not exist; run stage 7 first"; exit 1; }
            is_done "${exp}/decode_${dset}/.done" "$(decode_stamp "${exp}" "${dset}")" \
                || printf '%s\n' --job "${exp}/config.yaml" "${exp}/${asr_model_name}" \
                    "${dumpdir}/raw/${dset}/wav.scp" "${exp}/decode_${dset}"
        done
    done
}

# decode_all EXP:UNIT...: CTC decoding of every test set by each EXP's ${asr_model_name}
# that is not done with the same model, options and data, all of them in one process
# (espnet2.bin.ssl_decode: ESPnet's asr_inference in ${inference_nj} forked workers)
# into EXP/decode_SET/text; then the WER and CER of each against SET's UNIT transcripts
# ($(unit_text UNIT); for phones the WER is the PER) into EXP/decode_SET/score/
decode_all() {
    local spec exp dset listing jobs=() gpus=0
    listing=$(decode_jobs "$@")
    [ -z "${listing}" ] || mapfile -t jobs <<< "${listing}"
    if [ "${#jobs[@]}" -gt 0 ]; then
        ! "${gpu_inference}" || gpus=$(( ngpu > 0 ? ngpu : 1 ))
        log "decoding $(( ${#jobs[@]} / 5 )) set(s) in one process, ${inference_nj} workers" \
            "(logs: <exp>/decode_<set>/logdir/decode.*.log)"
        # shellcheck disable=SC2086
        python -m espnet2.bin.ssl_decode --nj "${inference_nj}" --gpus "${gpus}" "${jobs[@]}" \
            -- --batch_size 1 --beam_size 10 --ctc_weight 1.0 --lm_weight 0.0 \
            --ngram_weight 0.0 --penalty 0.0 ${inference_args} \
            || { log "Error: decoding failed (see above)"; exit 1; }
    fi
    for spec in "$@"; do
        exp=${spec%:*}
        for dset in ${test_sets}; do
            run_stamped "${exp}/decode_${dset}/.done" "$(decode_stamp "${exp}" "${dset}")" \
                "decoding ${exp}/decode_${dset}" \
                score_set "${exp}" "${dset}" "${dumpdir}/raw/${dset}/$(unit_text "${spec##*:}")"
        done
    done
}

# score_set EXP SET REF: the WER and CER of EXP/decode_SET/text against REF
score_set() {
    local exp=$1 dset=$2 ref=$3
    local dir="${exp}/decode_${dset}"
    [ -f "${dir}/text" ] || { log "Error: ${dir}/text does not exist; decode again"; exit 1; }
    python -m espnet2.bin.asr_score score --ref "${ref}" \
        --hyp "${dir}/text" --out_dir "${dir}/score"
}

# results_table FILE UNIT TITLE SYSTEMS NOTE...: the scores of every test set by each
# of SYSTEMS ("name=exp ...", decoded by decode_all), their tables into FILE (asr_score
# report; --unit phone for phn: PER) with the NOTEs as bullet points
results_table() {
    local file=$1 unit=$2 title=$3 systems=$4
    shift 4
    local opts=() scores="" system dset note
    for system in ${systems}; do
        for dset in ${test_sets}; do
            scores+=" $(model_stamp "${system#*=}/decode_${dset}/score/result.json")"
        done
        opts+=(--system "${system}")
    done
    for note in "$@"; do opts+=(--description "${note}"); done
    local done_file report_unit=word
    done_file="$(dirname "${file}")/.results.done"
    [ -f "${file}" ] || rm -f "${done_file}"  # a deleted table is written again
    [ "${unit}" != phn ] || report_unit=phone
    # shellcheck disable=SC2086
    run_stamped "${done_file}" "${opts[*]}${scores}" "${file}" \
        python -m espnet2.bin.asr_score report --unit "${report_unit}" "${opts[@]}" \
        --sets ${test_sets} --output "${file}" --title "${title}"
}

# prepare_data SETS: the work of stage 1: local/data.sh, then data/<set> of each of SETS
# validated
prepare_data() {
    local sets=$1
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
    # shellcheck disable=SC2046,SC2086
    python -m espnet2.bin.validate_data_dir --sample_rate "${fs}" --nj "${nj}" \
        --check_audio "${check_audio}" $(printf 'data/%s ' ${sets})
}

# release_ssl EXP DIR REPO OPTIONS...: the work of stage 9: EXP's release into DIR for the
# hub repository REPO (OPTIONS: the --results tables of its card); the upload is printed
release_ssl() {
    local exp=$1 release=$2 repo=$3
    shift 3
    pack_ssl release "${exp}" "${release}" "$@" --hf_repo "${repo}"
    if grep -q "no transformers export" "${exp}/release.log"; then
        log "Stage 9: $(grep -o "no transformers export.*" "${exp}/release.log")"
    fi
    cat "${release}/upload_command.txt" >&2
}

# Computed once: whether ${ssl_config}'s objective trains on k-means labels (HuBERT) or
# not (wav2vec 2.0), which stages 3-5 branch on (a Python tool that imports torch)
needs_labels=false
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 3 ]; then
    needs_labels=$(python -m espnet2.bin.ssl_recipe_config needs_labels "${ssl_config}")
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: Data preparation: local/data.sh ${local_data_opts}"
    sets=$(unique_words "${train_set} ${labeled_set} ${valid_set} ${test_sets}")
    stamp="local_data_opts=${local_data_opts} sets=${sets} fs=${fs}"
    run_stamped data/.stage1.done "${stamp}" "Stage 1" prepare_data "${sets}"
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
        if [ "${dset}" = "${train_set}" ] && [ -n "${train_hours}" ]; then
            range+=(--max_hours "${train_hours}" --seed "${train_hours_seed}")
        fi
        stamp="${range[*]} fs=${fs} data=$(cat "data/.stage1.done" 2> /dev/null || true)"
        mkdir -p "${dumpdir}/raw"
        run_stamped "${dumpdir}/raw/.${dset}.done" "${stamp}" "Stage 2: ${dumpdir}/raw/${dset}" \
            python -m espnet2.bin.filter_data_dir "${range[@]}" --sample_rate "${fs}" \
            "data/${dset}" "${dumpdir}/raw/${dset}"
    done
fi

# --phone_probe needs the phone alignments of the sets it uses: stop before the
# pretraining, not at stage 7
if "${phone_probe}" && [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    for dset in $(unique_words "${labeled_set} ${valid_set} ${test_sets}"); do
        ctm="${dumpdir}/raw/${dset}/phones.ctm"
        [ ! -f "${ctm}" ] || continue
        error="Error: --phone_probe true needs ${ctm}, the phone alignments of ${dset}"
        error+=" ('<utt> 1 <start_s> <dur_s> <phone>' lines; stage 2 copies data/${dset}/phones.ctm)."
        error+=" Fix: provide data/${dset}/phones.ctm and run stage 2 again, or run with --phone_probe false"
        log "${error}"
        exit 1
    done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    if [ "${needs_labels}" = true ]; then
        log "Stage 3: HuBERT targets of iteration 1: $(first_targets_tag)"
        make_targets "$(first_targets_tag)" "${target_type}" "${n_clusters}" \
            "${target_layer}" "${target_model}"
    else
        log "Stage 3: ${ssl_config} trains without labels; no targets to make"
    fi
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    log "Stage 4: Pretraining ${expdir}/${ssl_tag} with ${ssl_config}"
    if [ "${needs_labels}" = true ]; then
        pretrain "${expdir}/${ssl_tag}" "${dumpdir}/targets/$(first_targets_tag)" "${n_clusters}"
    else
        pretrain "${expdir}/${ssl_tag}" "" ""
    fi
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    if [ "${ssl_iterations}" -le 1 ]; then
        log "Stage 5: --ssl_iterations ${ssl_iterations}; no further HuBERT iteration"
    elif [ "${needs_labels}" != true ]; then
        log "Error: --ssl_iterations ${ssl_iterations} needs a HuBERT config;" \
            "${ssl_config} trains without labels"
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
    if [ ! -f "${exp}/${ssl_model_name}" ]; then
        log "Error: ${exp}/${ssl_model_name} does not exist; run stages 4-5 first (or set --ssl_model_name)"
        exit 1
    fi
    run_stamped "${exp}/.pack.done" "model=$(model_stamp "${exp}/${ssl_model_name}")" "Stage 6" \
        pack_ssl pack "${exp}" "${zip}"
fi

[ -n "${asr_tag}" ] || asr_tag="asr_$(final_tag)"

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    zip=$(ssl_model)
    log "Stage 7: Fine-tuning ${zip} on ${labeled_set} with ${asr_config} into ${expdir}/${asr_tag}"
    if [[ "${pretrained_model}" == *.pt ]]; then
        import_fairseq "${pretrained_model}"  # into $(dirname "${zip}")
    fi
    if [ ! -f "${zip}" ]; then
        if [ -n "${pretrained_model}" ]; then
            error="Error: --pretrained_model ${zip} does not exist (a packed .zip, a .pth next to its"
            error+=" config.yaml, or a fairseq .pt; a model zoo or hub name: espnet_model_zoo_download"
            error+=" --unpack true NAME prints the unpacked ssl_model_file to pass)"
            log "${error}"
        else
            log "Error: ${zip} does not exist; run stage 6 first"
        fi
        exit 1
    fi
    untrained_pid=""
    if "${asr_baseline}"; then
        log "Stage 7: the baseline: ${asr_config} from an untrained model into ${expdir}/${asr_tag}_scratch"
        # built while the token list and the statistics are made (one process each)
        make_untrained_model & untrained_pid=$!
    fi
    make_token_list "${token_type}"
    finetune_setup "${asr_config}" "${token_type}" "${asr_args}" "${expdir}/${asr_tag}" "${zip}"
    if "${asr_baseline}"; then
        wait "${untrained_pid}" || { log "Error: no untrained model (see above)"; exit 1; }
        finetune_setup "${asr_config}" "${token_type}" "${asr_args}" \
            "${expdir}/${asr_tag}_scratch" "$(untrained_dir)/untrained.pth"
    fi
    finetune_run
    if "${phone_probe}"; then
        log "Stage 7: the phone probe: ${probe_config} on the frozen ${zip} into $(probe_exp)"
        for dset in $(unique_words "${labeled_set} ${valid_set} ${test_sets}"); do
            phone_text "${dset}"
        done
        make_token_list phn
        finetune_all "${probe_config}" phn "${probe_args}" "$(probe_exp)" "${zip}"
    fi
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
    log "Stage 8: Decoding and scoring ${test_sets} into ${expdir}/${asr_tag}/RESULTS.md"
    tokens="${token_type}"
    [ "${token_type}" != bpe ] || tokens+=" (${nbpe})"
    decoding="Decoding: espnet2.bin.asr_inference, CTC only, --beam_size 10 ${inference_args}"
    model_note="SSL model: $(ssl_model)"
    [ -n "${pretrained_model}" ] || model_note+=" (${ssl_config}, ${ssl_iterations} iteration(s))"
    notes=(
        "${model_note}"
        "Fine-tuning: ${asr_config} on ${labeled_set}, ${tokens} tokens, checkpoint ${asr_model_name}"
        "${decoding}"
    )
    if "${asr_baseline}"; then
        notes+=("scratch: the same ASR config from an untrained model of the same architecture")
    fi
    specs=()
    for system in $(asr_exps); do specs+=("${system#*=}:${token_type}"); done
    ! "${phone_probe}" || specs+=("$(probe_exp):phn")
    decode_all "${specs[@]}"
    results_table "${expdir}/${asr_tag}/RESULTS.md" "${token_type}" \
        "${asr_tag}: CTC fine-tuning of $(final_tag)" "$(asr_exps)" "${notes[@]}"
    if "${phone_probe}"; then
        log "Stage 8: the phone probe: PER of ${test_sets} into $(probe_exp)/RESULTS.md"
        per_note="PER (phone error rate, %): the WER of the decoded phone sequences against text_phn,"
        per_note+=" each set's phones.ctm in time order (espnet2.bin.ssl_phone_text: pauses left out,"
        per_note+=" stress marks merged)"
        probe_note="SSL model: $(ssl_model), frozen (SUPERB phone recognition, arXiv:2105.01051:"
        probe_note+=" a learned softmax-weighted sum of its layers, a linear CTC head)"
        results_table "$(probe_exp)/RESULTS.md" phn \
            "${asr_tag}_phones: phone recognition (PER) with the frozen $(final_tag)" \
            "probe=$(probe_exp)" "${per_note}" "${probe_note}" \
            "Probe: ${probe_config} on ${labeled_set}, checkpoint ${asr_model_name}" \
            "${decoding}"
    fi
fi

if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 9 ]; then
    exp="${expdir}/$(final_tag)"
    release="${exp}/release"
    repo="${hf_repo:-<your-hf-user>/$(final_tag)}"
    results="${expdir}/${asr_tag}/RESULTS.md"
    log "Stage 9: Release of ${exp} into ${release}: zoo zip with ${results}, hub folder for ${repo}"
    if [ ! -f "${exp}/${ssl_model_name}" ]; then
        log "Error: ${exp}/${ssl_model_name} does not exist; run stages 4-5 first"
        exit 1
    fi
    if [ ! -f "${results}" ]; then
        log "Warning: ${results} does not exist (stages 7-8 write it); the card will say it is not fine-tuned yet"
    fi
    stamp="model=$(model_stamp "${exp}/${ssl_model_name}") results=$(model_stamp "${results}") repo=${repo}"
    results_opts=(--results "${results}")
    if "${phone_probe}"; then
        # the probe's PER table follows the fine-tuning's in the card
        [ -f "$(probe_exp)/RESULTS.md" ] || log "Warning: $(probe_exp)/RESULTS.md does not exist (stages 7-8 write it)"
        stamp+=" probe=$(model_stamp "$(probe_exp)/RESULTS.md")"
        results_opts+=(--results "$(probe_exp)/RESULTS.md")
    fi
    run_stamped "${release}/.done" "${stamp}" "Stage 9" \
        release_ssl "${exp}" "${release}" "${repo}" "${results_opts[@]}"
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
