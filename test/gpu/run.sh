#!/usr/bin/env bash
# The GPU check (issue 23, item 6): everything of the CUDA side in one command, sized
# for one H100/H200 within 8 minutes (each part has a time cap; together 470 s).
#
#   bash test/gpu/run.sh --out DIR                # on a GPU machine, from any folder
#   bash test/gpu/run.sh --out DIR --device cpu --tiny true   # CPU dry run, tiny sizes
#
# Parts, cheapest and most important first (the recipe's CPU stages 1-3 run in the
# background from the start, niced, while the GPU does parts t, a-c):
#   t. the pytest tests marked gpu (test/gpu/test_gpu_check.py): CUDA draws of the
#      CPU generator, tiny models' parity and training, both benchmarks at tiny size;
#   a. loss parity: HuBERT and wav2vec 2.0 BASE built by SSLTask from the LibriSpeech
#      configs; eval-mode loss on the device in fp32 and bf16 autocast against CPU
#      fp32 on the same batch and random draws; two bf16 training steps with the
#      optimizer of SSLTask.build_optimizers, counters checked
#      (test/gpu/loss_parity.py);
#   b. wav2vec 2.0 BASE training step, ours vs transformers' Wav2Vec2ForPreTraining
#      (SDPA), bf16 autocast, 4 x 4 s and 6 x 15.6 s: step time, MFU,
#      max_memory_allocated (test/bench/bench_wav2vec2_step.py);
#   c. SummaryMixing vs attention (SDPA and ESPnet's relative-position attention) in
#      the same BASE block, bf16, 16 s and 32 s crops, batch 2: step time and
#      max_memory_allocated (test/bench/bench_summary_mixing.py);
#   d. egs2/mini_synth/ssl2/run.sh stage 4 (HuBERT tiny) with --ngpu 1 and bf16 AMP for
#      2 epochs in a scratch copy, after stages 1-3 on the CPU (test/gpu/recipe_check.py).
#
# Writes into --out: <part>.json (every number), <part>.log, status.tsv (part, exit
# status, seconds), nvidia_smi.txt, recipe_logs/, and results.md (the summary, also
# printed). Exits 1 when any part failed or ran out of time (all parts still run).
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') [${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}] $*" >&2
}

out="${OUT:-gpu_check_results}"  # results folder (default: $OUT, else ./gpu_check_results)
device=cuda             # cuda (the check) or cpu (a dry run of the same steps)
tiny=false              # tiny models and batches (the CPU dry run)
parts="t a b c d"       # parts to run, space separated
threads=8               # CPU threads of each benchmark process
cap_t=60                # time cap of part t in seconds
cap_a=80                # time cap of part a
cap_b=140               # time cap of part b (both batches)
cap_c=90                # time cap of part c
cap_d=100               # time cap of part d's stage 4 (stages 1-3 overlap parts t-c)
cap_prepare=300         # time cap of part d's stages 1-3 (background, CPU)
prepare_nice=10         # niceness of stages 1-3 (0 on a machine whose CPUs are busy: they starve)

help_message=$(cat << EOM
Usage: $0 [options]

Options:
    --out           # results folder (default="${out}")
    --device        # cuda or cpu (default="${device}")
    --tiny          # tiny sizes, for a CPU dry run (default="${tiny}")
    --parts         # parts to run, e.g. "a d" (default="${parts}")
    --threads       # CPU threads per benchmark (default="${threads}")
    --cap_t         # seconds (default="${cap_t}")
    --cap_a         # seconds (default="${cap_a}")
    --cap_b         # seconds (default="${cap_b}")
    --cap_c         # seconds (default="${cap_c}")
    --cap_d         # seconds (default="${cap_d}")
    --cap_prepare   # seconds (default="${cap_prepare}")
    --prepare_nice  # niceness of the background stages 1-3 (default="${prepare_nice}")
EOM
)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "${repo}/egs2/TEMPLATE/ssl2/utils/parse_options.sh"
if [ $# -ne 0 ]; then
    log "Error: unexpected argument '$1'"; echo "${help_message}" >&2; exit 2
fi
case "${device}" in cuda|cuda:*|cpu) ;; *) log "Error: --device must be cuda or cpu, not '${device}'"; exit 2 ;; esac
python="${repo}/tools/venv/bin/python"
[ -x "${python}" ] || { log "Error: ${python} is missing; run 'make -C tools' first"; exit 2; }
mkdir -p "${out}"
out=$(cd "${out}" && pwd)
cd "${repo}"
log "$0: results in ${out} (device ${device}, tiny ${tiny}, parts ${parts})"
: > "${out}/status.tsv"
command -v nvidia-smi > /dev/null && nvidia-smi > "${out}/nvidia_smi.txt" 2>&1 || true

# run_part NAME CAP COMMAND...: COMMAND under a time cap, its output in NAME.log and
# the console, its status and seconds in status.tsv (124: out of time)
run_part() {
    local name=$1 cap=$2 start=${SECONDS} status=0
    shift 2
    log "part ${name}: $* (cap ${cap} s)"
    timeout --kill-after=10 "${cap}" "$@" > "${out}/${name}.log" 2>&1 || status=$?
    printf '%s\t%s\t%s\n' "${name}" "${status}" "$((SECONDS - start))" >> "${out}/status.tsv"
    tail -n 3 "${out}/${name}.log" >&2
    log "part ${name}: exit status ${status} after $((SECONDS - start)) s"
}

has_part() { [[ " ${parts} " == *" $1 "* ]]; }

if "${tiny}"; then
    size=tiny; w2v_batches=("2 1" "2 2"); crops="1 2"; seconds="1.5 1.2"
    sm_variants="summary_mixing sdpa_attention self_attention"; bench_reps="--warmup 1 --repeats 2"
else
    size=base; w2v_batches=("4 4" "6 15.6"); crops="16 32"; seconds="4 3.5 3 2.5"
    sm_variants="summary_mixing sdpa_attention self_attention"; bench_reps="--warmup 2 --repeats 6"
fi
if [ "${device}" = cpu ]; then ngpu=0; peak_size=512; else ngpu=1; peak_size=8192; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_recipe.XXXXXX")

if has_part d; then  # stages 1-3 on the CPU, in the background
    log "part d: stages 1-3 in ${work} (background)"
    ( start=${SECONDS}; status=0
      timeout --kill-after=10 "${cap_prepare}" nice -n "${prepare_nice}" "${python}" test/gpu/recipe_check.py \
          prepare --work "${work}" --nj 4 --output "${out}/d_prepare.json" \
          > "${out}/d_prepare.log" 2>&1 || status=$?
      printf '%s\t%s\t%s\n' d_prepare "${status}" "$((SECONDS - start))" >> "${out}/status.tsv"
    ) &
    prepare_pid=$!
fi

if has_part t; then
    run_part t_pytest "${cap_t}" "${python}" -m pytest -q -m gpu test/gpu/test_gpu_check.py
fi

if has_part a; then
    # shellcheck disable=SC2086
    run_part a_parity "${cap_a}" "${python}" test/gpu/loss_parity.py --device "${device}" \
        --size "${size}" --seconds ${seconds} --output "${out}/a_parity.json"
fi

if has_part b; then
    start_b=${SECONDS}
    for batch in "${w2v_batches[@]}"; do
        read -r b s <<< "${batch}"
        left=$(( cap_b - (SECONDS - start_b) )); [ "${left}" -gt 10 ] || left=10
        # shellcheck disable=SC2086
        run_part "b_wav2vec2_${b}x${s}s" "${left}" "${python}" test/bench/bench_wav2vec2_step.py \
            --device "${device}" --dtype bf16 --sizes "${size}" --batch_size "${b}" \
            --audio_seconds "${s}" --threads "${threads}" --peak_size "${peak_size}" ${bench_reps} \
            --output "${out}/b_wav2vec2_${b}x${s}s.json"
    done
fi

if has_part c; then
    # shellcheck disable=SC2086
    run_part c_summary_mixing "${cap_c}" "${python}" test/bench/bench_summary_mixing.py \
        --device "${device}" --dtype bf16 --size "${size}" --crops ${crops} \
        --variants ${sm_variants} --batch_size 2 --threads "${threads}" ${bench_reps} \
        --denormals keep --output "${out}/c_summary_mixing.json"
fi

if has_part d; then
    wait "${prepare_pid}" || true
    if grep -q "^d_prepare	0	" "${out}/status.tsv"; then
        run_part d_recipe "${cap_d}" "${python}" test/gpu/recipe_check.py train \
            --work "${work}" --ngpu "${ngpu}" --output "${out}/d_recipe.json"
    else
        log "part d: stages 1-3 failed or ran out of time; see ${out}/d_prepare.log"
    fi
    mkdir -p "${out}/recipe_logs"
    recipe="${work}/egs2/mini_synth/ssl2"
    cp "${recipe}"/gpu_check_*.log "${out}/recipe_logs/" 2> /dev/null || true
    cp "${recipe}/exp/ssl_hubert_tiny/train.log" "${out}/recipe_logs/" 2> /dev/null || true
fi
rm -rf "${work}"

"${python}" test/gpu/summarise.py --out "${out}"
log "Successfully finished. [elapsed=${SECONDS}s]"
