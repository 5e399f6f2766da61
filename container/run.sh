#!/usr/bin/env bash
# Run gapseek inside the image with GPUs (--nv) and the current directory bound:
#   container/run.sh featurize cifs/ --out store --device cuda
set -euo pipefail
image=${GAPSEEK_IMAGE:-gapseek.sif}
tool=$(command -v apptainer || command -v singularity) || { echo "no apptainer/singularity on PATH" >&2; exit 1; }
exec "$tool" exec --nv --bind "$PWD" --pwd "$PWD" "$image" gapseek "$@"
