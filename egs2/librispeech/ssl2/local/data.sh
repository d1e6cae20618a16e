#!/usr/bin/env bash
# Data preparation of LibriSpeech (+ Libri-light's limited-supervision sets): finds each
# corpus part locally or downloads it, then writes the Kaldi-style data dirs
#   data/train_960   train-clean-100 + train-clean-360 + train-other-500 (960 h)
#   data/dev_clean, data/dev_other, data/test_clean, data/test_other
#   data/dev         dev-clean + dev-other (the validation set of run.sh)
#   data/train_10min Libri-light 1h/0              (--librilight true)
#   data/train_1h    Libri-light 1h/{0..5}
#   data/train_10h   Libri-light 1h/{0..5} + 9h
# with local/prepare_librispeech.py (wav.scp lists absolute FLAC paths).
#
# Sources: LibriSpeech is OpenSLR resource 12 (https://www.openslr.org/12), one
# <part>.tar.gz per part, each extracting to LibriSpeech/<part>/. The Libri-light sets
# are librispeech_finetuning.tgz, laid out as 1h/{0..5}/{clean,other}/ and
# 9h/{clean,other}/ (facebookresearch/libri-light @ 07fa3887, data_preparation/README.md,
# "2. Get the limited-supervision train data"; the same folders as ESPnet's
# egs2/librilight_limited/asr1/local/data.sh @ 1fd61980).
#
# Idempotent: an extracted part is never downloaded again (archives are extracted into a
# temporary folder and renamed, so a part folder is complete or absent); data/ is
# written again only when the folders or options change (data/.prepare_librispeech.done).
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') [${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}] $*" >&2
}

librispeech_dir=""        # folder holding LibriSpeech/<part>/ (empty: the download_dir)
librilight_dir=""         # folder holding librispeech_finetuning/ (empty: the download_dir)
download_dir=downloads    # where missing parts are downloaded to and extracted
download=true             # download missing parts (false: stop with an error instead)
librilight=true           # prepare train_10min, train_1h, train_10h (fine-tuning sets)
librispeech_url=https://www.openslr.org/resources/12  # OpenSLR resource 12 (LibriSpeech)
librilight_url=https://dl.fbaipublicfiles.com/librilight/data/librispeech_finetuning.tgz  # Libri-light
nj=8                      # threads reading the FLAC headers

help_message=$(cat << EOM
Usage: $0 [options]   (run.sh passes them with --local_data_opts "...")

Options:
    --librispeech_dir  # folder holding LibriSpeech/<part>/ (default="${librispeech_dir}": the download_dir)
    --librilight_dir   # folder holding librispeech_finetuning/ (default="${librilight_dir}": the download_dir)
    --download_dir     # where missing parts are downloaded and extracted (default="${download_dir}")
    --download         # download missing parts, true or false (default="${download}")
    --librilight       # prepare the Libri-light sets train_10min/1h/10h (default="${librilight}")
    --librispeech_url  # LibriSpeech archives (default="${librispeech_url}")
    --librilight_url   # Libri-light archive (default="${librilight_url}")
    --nj               # threads reading the FLAC headers (default="${nj}")
EOM
)

log "$0 $*"
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "Error: unexpected argument '$1'"; echo "${help_message}" >&2; exit 2
fi
[ -n "${librispeech_dir}" ] || librispeech_dir="${download_dir}"
[ -n "${librilight_dir}" ] || librilight_dir="${download_dir}"

. ./path.sh

# fetch URL: download URL into ${download_dir}, resuming a partial file
fetch() {
    local url=$1
    local file="${download_dir}/${url##*/}"
    if [ -f "${file}.done" ]; then
        log "${file}: already downloaded"
        return
    fi
    mkdir -p "${download_dir}"
    log "Downloading ${url} into ${download_dir}"
    if command -v wget > /dev/null; then
        wget -c --progress=dot:giga -P "${download_dir}" "${url}"
    elif command -v curl > /dev/null; then
        curl -fL -C - -o "${file}" "${url}"
    else
        log "Error: neither wget nor curl is installed; download ${url} into ${download_dir} by hand"
        exit 1
    fi
    touch "${file}.done"
}

# extract ARCHIVE TOP SUB: extract ARCHIVE, move its TOP/SUB to ${download_dir}/TOP/SUB
extract() {
    local archive=$1 top=$2 sub=$3
    local tmp="${download_dir}/.extract_${sub//\//_}"
    log "Extracting ${archive}"
    rm -rf "${tmp}"
    mkdir -p "${tmp}" "${download_dir}/${top}"
    if ! tar -xzf "${archive}" -C "${tmp}"; then
        log "Error: cannot extract ${archive} (damaged or incomplete)."
        log "Fix: delete ${archive} and ${archive}.done, then run again to download it again."
        exit 1
    fi
    [ -d "${tmp}/${top}/${sub}" ] || { log "Error: ${archive} holds no ${top}/${sub}/"; exit 1; }
    mv "${tmp}/${top}/${sub}" "${download_dir}/${top}/${sub}"
    rm -rf "${tmp}"
}

# missing WHAT SUBDIR OPTION DIR [HINT]: the error for an absent part when downloading is off
missing() {
    local what=$1 sub=$2 option=$3 dir=$4 hint=${5:-}
    if [ "${dir}" = "${download_dir}" ]; then
        log "Error: ${what} not found: ${dir}/${sub} does not exist."
    else
        log "Error: ${what} not found: neither ${dir}/${sub} nor ${download_dir}/${sub} exists."
    fi
    log "Fix: pass ${option} <folder holding ${sub}> in --local_data_opts," \
        "or allow downloading it with --download true."
    [ -z "${hint}" ] || log "${hint}"
    exit 1
}

# librispeech_part PART: prints the folder of LibriSpeech part PART, downloading it if allowed
librispeech_part() {
    local part=$1
    local dir
    for dir in "${librispeech_dir}" "${download_dir}"; do
        if [ -d "${dir}/LibriSpeech/${part}" ]; then echo "${dir}/LibriSpeech/${part}"; return; fi
    done
    "${download}" || missing "LibriSpeech part ${part}" "LibriSpeech/${part}" --librispeech_dir "${librispeech_dir}"
    fetch "${librispeech_url}/${part}.tar.gz"
    extract "${download_dir}/${part}.tar.gz" LibriSpeech "${part}"
    echo "${download_dir}/LibriSpeech/${part}"
}

# librilight_folder: prints the librispeech_finetuning folder, downloading it if allowed
librilight_folder() {
    local dir
    for dir in "${librilight_dir}" "${download_dir}"; do
        if [ -d "${dir}/librispeech_finetuning" ]; then echo "${dir}/librispeech_finetuning"; return; fi
    done
    "${download}" || missing "Libri-light (the fine-tuning sets train_10min, train_1h, train_10h)" \
        librispeech_finetuning --librilight_dir "${librilight_dir}" \
        "Or, for pretraining only, pass --librilight false here and --labeled_set \"\" to run.sh."
    fetch "${librilight_url}"
    extract "${download_dir}/${librilight_url##*/}" . librispeech_finetuning
    echo "${download_dir}/librispeech_finetuning"
}

# librilight_folds LL: checks that LL has the documented layout (stops if a fold is missing)
librilight_folds() {
    local ll=$1 sub
    for sub in 1h/{0..5}/{clean,other} 9h/{clean,other}; do
        if [ ! -d "${ll}/${sub}" ]; then
            log "Error: ${ll}/${sub} does not exist; Libri-light's librispeech_finetuning/ holds" \
                "1h/{0..5}/{clean,other}/ and 9h/{clean,other}/."
            log "Fix: extract librispeech_finetuning.tgz again (or delete ${ll} and run with --download true)."
            exit 1
        fi
    done
}

parts=(train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other)
declare -A dirs
for part in "${parts[@]}"; do
    dirs[${part}]=$(librispeech_part "${part}")
done
sets=(
    --set train_960 "${dirs[train-clean-100]}" "${dirs[train-clean-360]}" "${dirs[train-other-500]}"
    --set dev "${dirs[dev-clean]}" "${dirs[dev-other]}"
)
for part in dev-clean dev-other test-clean test-other; do
    sets+=(--set "${part//-/_}" "${dirs[${part}]}")
done
if "${librilight}"; then
    ll=$(librilight_folder)
    librilight_folds "${ll}"
    sets+=(
        --set train_10min "${ll}/1h/0/clean" "${ll}/1h/0/other"
        --set train_1h "${ll}"/1h/{0..5}/{clean,other}
        --set train_10h "${ll}"/1h/{0..5}/{clean,other} "${ll}/9h/clean" "${ll}/9h/other"
    )
else
    log "--librilight false: no train_10min, train_1h or train_10h; give run.sh --labeled_set \"\" (no fine-tuning)"
fi

done_file=data/.prepare_librispeech.done
stamp="${sets[*]}"
names=$(printf '%s\n' "${sets[@]}" | awk 'prev == "--set" { print } { prev = $0 }')
complete=true
for name in ${names}; do [ -d "data/${name}" ] || complete=false; done
if "${complete}" && [ -f "${done_file}" ] && [ "$(cat "${done_file}")" = "${stamp}" ]; then
    log "data/: already prepared from the same folders (${done_file}); skipping"
else
    rm -f "${done_file}"
    mkdir -p data
    python local/prepare_librispeech.py --out_dir data --nj "${nj}" "${sets[@]}"
    echo "${stamp}" > "${done_file}"
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
