#!/bin/bash
# The whole chain on a Slurm cluster, each step after the previous one succeeded:
#   index (one job) -> featurize (array job(s), one task per shard) -> merge (--dependency=afterok on the
#   arrays) -> search (--dependency=afterok on the merge; only when LABELS TARGET OUT are given)
#
#   slurm/pipeline.sh ROOT STORE [LABELS TARGET OUT]
#
# The array size is known only once the index exists, so the index job calls this script again
# (--after-index) to submit the rest. Arrays longer than the cluster's MaxArraySize are split and each part
# gets GAPSEEK_SHARD_OFFSET. Set GAPSEEK_IMAGE to run every step inside the Singularity image.
# EDIT: SHARD_SIZE (rows per shard), PARALLEL (array tasks at once), and the #SBATCH lines of the .sbatch files;
# GAPSEEK_SBATCH_ARGS adds options to every sbatch call (e.g. "--account=abc", or "--gres=none" on CPU nodes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GAPSEEK_SLURM_DIR=$here
PARALLEL=${PARALLEL:-16}
read -r -a extra <<< "${GAPSEEK_SBATCH_ARGS:-}"
mkdir -p logs

if [ "${1:-}" = --after-index ]; then
    store=${2:?}; shift 2
    source "$here/common.sh"
    n=$("${GAPSEEK[@]}" status "$store" --num-shards)
    max=$(scontrol show config 2>/dev/null | awk '/^MaxArraySize/ {print $3}')
    max=${max:-1001}
    deps=""
    for ((off = 0; off < n; off += max - 1)); do
        count=$(( n - off < max - 1 ? n - off : max - 1 ))
        a=$(sbatch --parsable "${extra[@]}" --export=ALL,GAPSEEK_SHARD_OFFSET=$off \
            --array=0-$((count - 1))%$PARALLEL "$here/featurize.sbatch" "$store")
        deps="$deps:$a"
        echo "featurize shards $off..$((off + count - 1)): array job $a"
    done
    m=$(sbatch --parsable "${extra[@]}" --dependency=afterok$deps "$here/merge.sbatch" "$store")
    echo "merge: job $m (after$deps)"
    if [ $# -ge 3 ]; then
        s=$(sbatch --parsable "${extra[@]}" --dependency=afterok:$m "$here/search.sbatch" "$store" "$1" "$2" "$3")
        echo "search: job $s (after $m)"
    fi
    exit 0
fi

root=${1:?usage: slurm/pipeline.sh ROOT STORE [LABELS TARGET OUT]}
store=$(realpath -m "${2:?usage: slurm/pipeline.sh ROOT STORE [LABELS TARGET OUT]}")
shift 2
jid=$(sbatch --parsable "${extra[@]}" --export=ALL,GAPSEEK_CONTINUE=1 "$here/index.sbatch" "$root" "$store" "$@")
echo "gapseek pipeline: index job $jid; it submits featurize, merge and search when it is done (logs/)"
echo "follow with: squeue -u \$USER; gapseek status $store"
