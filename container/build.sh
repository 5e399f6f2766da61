#!/usr/bin/env bash
# Build gapseek.sif from Singularity.def (run from anywhere; needs apptainer or singularity and network access).
#   bash container/build.sh [OUT.sif]
# On clusters without root, `--fakeroot` is usually what works; override with BUILD_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
tool=$(command -v apptainer || command -v singularity || true)
if [ -z "$tool" ]; then
  echo "container/build.sh: neither apptainer nor singularity is on PATH (module load apptainer?)" >&2
  exit 1
fi
if [ ! -f requirements.lock ]; then
  echo "container/build.sh: requirements.lock is missing: the image installs from it (make lock writes it)" >&2
  exit 1
fi
out=${1:-gapseek.sif}
# shellcheck disable=SC2086
"$tool" build ${BUILD_FLAGS:---fakeroot} "$out" Singularity.def
"$tool" test "$out"
echo "built $out"
