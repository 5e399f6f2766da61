#!/usr/bin/env bash
# Run gapseek inside the image with GPUs (--nv), as the Slurm jobs do (slurm/common.sh):
#   container/run.sh featurize /scratch/me/cifs --out /scratch/me/store --device cuda
# Image: $GAPSEEK_IMAGE (default gapseek.sif). Binds: $GAPSEEK_BIND (src[:dest[:ro]],... exactly), else the
# top-level directories of the current directory and of every argument that is a path (/scratch for
# /scratch/me/cifs), plus those of the files a CIF listing or an indexed store names. The site file
# (slurm/site.sh or $GAPSEEK_SITE: module load apptainer, ...) is sourced first.
set -euo pipefail
here=$(cd "$(dirname "$0")/../slurm" && pwd)
# shellcheck source=slurm/common.sh
source "$here/common.sh"
export GAPSEEK_IMAGE=${GAPSEEK_IMAGE:-gapseek.sif}
gapseek_cmd "$@"
exec "${GAPSEEK[@]}" "$@"
