#!/bin/bash
# The whole chain on a Slurm cluster, each step after the previous one succeeded:
#   index -> featurize (array job(s), one task per shard) -> merge (--dependency=afterok on the arrays)
#   -> PCA + search (afterok on the merge; only with --search)
#
#   slurm/pipeline.sh [--now] ROOT... --out STORE [--search LABELS.csv TARGET_EV OUT_DIR]
#
#   (default)  submit an index job; when it is done, that job submits the rest (the number of shards, hence
#              the array size, is known only then). Needs sbatch to work inside jobs.
#   --now      index here, on the login node (~4 min for 500,000 COD-like files on 2 cores), then submit the
#              arrays, merge and search at once, chained by dependencies: for sites that forbid submitting from
#              jobs.
#
# Run it from any directory (relative paths are made absolute). Logs: STORE/logs/. Settings, from the
# environment or the site file (slurm/site.sh, see site.sh.example):
#   SHARD_SIZE           manifest rows per shard, on average: shards are cut by estimated work (4096)
#   PACK                 1 (default): index packs every CIF into STORE/inputs.h5, and each shard task reads
#                        its rows from that one file instead of opening thousands (parallel file systems);
#                        0: the tasks read the CIF files themselves
#   PARALLEL             array tasks running at once (16)
#   GAPSEEK_GRES         the featurize tasks' GPU request, e.g. gpu:a100:1 (default: featurize.sbatch's gpu:1;
#                        none on CPU nodes)
#   GAPSEEK_SBATCH_ARGS  options added to every sbatch call, e.g. "--account=abc --partition=p"; Slurm's
#                        SBATCH_* variables work too (they, too, apply to every step)
#   GAPSEEK_FEATURIZE_ARGS  options for every featurize task, e.g. "--timeout 60 --memory-limit 3"
#   GAPSEEK_IMAGE        run every step inside the Singularity/Apptainer image (GAPSEEK_BIND: what to bind)
# Arrays longer than the cluster's MaxArraySize are split, each part with its --shard-offset.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=slurm/common.sh
source "$here/common.sh"

usage="usage: $0 [--now] ROOT... --out STORE [--search LABELS.csv TARGET_EV OUT_DIR]"
now=0
after_index=0
store=""
roots=()
search=()
while [ $# -gt 0 ]; do
    case $1 in
        --now) now=1; shift ;;
        --after-index) after_index=1; shift ;;  # internal: the index job submitting the rest
        --out) [ $# -ge 2 ] || die "--out needs STORE; $usage"; store=$2; shift 2 ;;
        --out=*) store=${1#--out=}; shift ;;
        --search) [ $# -ge 4 ] || die "--search needs LABELS.csv TARGET_EV OUT_DIR; $usage"
                  search=("$2" "$3" "$4"); shift 4 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) die "unknown option $1; $usage" ;;
        *) roots+=("$1"); shift ;;
    esac
done

# settings, validated
SHARD_SIZE=${SHARD_SIZE:-4096}
PARALLEL=${PARALLEL:-16}
[[ $SHARD_SIZE =~ ^[1-9][0-9]*$ ]] || die "SHARD_SIZE must be a positive number of rows, got '$SHARD_SIZE'"
[[ $PARALLEL =~ ^[1-9][0-9]*$ ]] || die "PARALLEL must be a positive number of tasks, got '$PARALLEL'"
PACK=${PACK:-1}
case $PACK in 1) index_opts=(--pack) ;; 0) index_opts=() ;; *) die "PACK must be 1 or 0, got '$PACK'" ;; esac
read -r -a extra <<< "${GAPSEEK_SBATCH_ARGS:-}"
read -r -a featurize_opts <<< "${GAPSEEK_FEATURIZE_ARGS:-}"
gres=()
if [ -n "${GAPSEEK_GRES:-}" ]; then
    [[ $GAPSEEK_GRES =~ ^[A-Za-z0-9_:,.-]+$ ]] || die "GAPSEEK_GRES looks wrong: '$GAPSEEK_GRES' (e.g. gpu:a100:1)"
    gres=(--gres="$GAPSEEK_GRES")
fi
[ -n "$store" ] || die "no --out STORE (the store is now given with --out); $usage"
store=$(realpath -m -s -- "$store")  # absolute; symlinks kept, as gapseek index keeps them
if [ $after_index = 0 ]; then
    [ ${#roots[@]} -gt 0 ] || die "no ROOT to index; $usage"
    for i in "${!roots[@]}"; do
        [ -e "${roots[i]}" ] || die "ROOT ${roots[i]} does not exist (from $PWD)"
        roots[i]=$(realpath -s -- "${roots[i]}")
    done
fi
if [ ${#search[@]} -gt 0 ]; then
    [ -f "${search[0]}" ] || die "labels file ${search[0]} not found (from $PWD)"
    [[ ${search[1]} =~ ^[0-9]*\.?[0-9]+$ ]] || die "TARGET_EV must be a number of eV, got '${search[1]}'"
    search[0]=$(realpath -s -- "${search[0]}")
    search[2]=$(realpath -m -s -- "${search[2]}")
fi
mkdir -p "$store/logs"

# sbatch --parsable with the extra options -> $jid; if sbatch fails, stop and say what was submitted already
submitted=()
submit() {
    local out rc
    out=$(sbatch --parsable ${extra[@]+"${extra[@]}"} "$@") || {
        rc=$?
        echo "gapseek pipeline: sbatch failed (exit status $rc): sbatch ${extra[*]-} $*" >&2
        if [ ${#submitted[@]} -gt 0 ]; then
            echo "  already submitted: ${submitted[*]}; cancel them (scancel ${submitted[*]})," \
                 "fix the cause and run pipeline.sh again (finished shards are kept)" >&2
        fi
        exit 1
    }
    jid=${out%%;*}
    [[ $jid =~ ^[0-9]+$ ]] || die "sbatch printed '$out', not a job id"
    submitted+=("$jid")
}

# the featurize array(s), the merge after them, the search after the merge
submit_rest() {
    local arrays off count merge deps=""
    gapseek_cmd "$store"
    # the arrays that cover every shard, "OFFSET COUNT" each, split at the cluster's MaxArraySize (gapseek reads
    # it, as `gapseek submit` does)
    arrays=$("${GAPSEEK[@]}" status "$store" --arrays) || die "gapseek status $store --arrays failed"
    [ -n "$arrays" ] || die "gapseek status $store --arrays listed no shards"
    while read -r off count; do
        submit ${gres[@]+"${gres[@]}"} --array=0-$((count - 1))%"$PARALLEL" \
            --output="$store/logs/gapseek-featurize-%A_%a.log" "$here/featurize.sbatch" "$store" --shard-offset "$off" \
            ${featurize_opts[@]+"${featurize_opts[@]}"} </dev/null
        deps="$deps:$jid"
        echo "featurize shards $off..$((off + count - 1)): array job $jid"
    done <<< "$arrays"
    submit --dependency=afterok"$deps" --output="$store/logs/gapseek-merge-%j.log" "$here/merge.sbatch" "$store"
    merge=$jid
    echo "merge: job $merge (after$deps)"
    if [ ${#search[@]} -gt 0 ]; then
        submit --dependency=afterok:"$merge" --output="$store/logs/gapseek-search-%j.log" \
            "$here/search.sbatch" "$store" "${search[@]}"
        echo "search: job $jid (after $merge)"
    fi
}

if [ $after_index = 1 ]; then
    submit_rest
elif [ $now = 1 ]; then
    gapseek_cmd "${roots[@]}" "$store"
    "${GAPSEEK[@]}" index "${roots[@]}" --out "$store" --shard-size "$SHARD_SIZE" ${index_opts[@]+"${index_opts[@]}"} \
        --overwrite
    submit_rest
    echo "gapseek pipeline: jobs ${submitted[*]} submitted; logs in $store/logs"
else
    # the index job runs this script again with --after-index, with the submission settings of this shell
    # (passed as arguments, so they hold under SBATCH_EXPORT=NONE too)
    next=(env "PARALLEL=$PARALLEL" "PACK=$PACK" "GAPSEEK_SBATCH_ARGS=${GAPSEEK_SBATCH_ARGS:-}"
          "GAPSEEK_GRES=${GAPSEEK_GRES:-}" "GAPSEEK_FEATURIZE_ARGS=${GAPSEEK_FEATURIZE_ARGS:-}")
    for v in $(compgen -e | grep '^SBATCH_' || true); do next+=("$v=${!v}"); done
    next+=(bash "$here/pipeline.sh" --after-index --out "$store")
    if [ ${#search[@]} -gt 0 ]; then next+=(--search "${search[@]}"); fi
    submit --output="$store/logs/gapseek-index-%j.log" "$here/index.sbatch" "${roots[@]}" --out "$store" \
        --shard-size "$SHARD_SIZE" ${index_opts[@]+"${index_opts[@]}"} -- "${next[@]}"
    echo "gapseek pipeline: index job $jid; it submits featurize, merge and search when it is done"
    echo "logs in $store/logs; follow with: squeue -u \$USER; gapseek status $store"
fi
