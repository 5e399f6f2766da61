# Sourced by the gapseek sbatch scripts: how to run gapseek, chosen by ONE variable.
#   GAPSEEK_IMAGE=/path/gapseek.sif  -> singularity/apptainer exec --nv the image (model baked in)
#   unset                            -> the `gapseek` on PATH (e.g. `source .venv/bin/activate` before sbatch;
#                                       sbatch passes the environment on by default)
# EDIT: GAPSEEK_MODEL_DIR if your model is not in the image or the user cache.
if [ -n "${GAPSEEK_IMAGE:-}" ]; then
    _tool=$(command -v apptainer || command -v singularity) || { echo "no apptainer/singularity" >&2; exit 1; }
    GAPSEEK=("$_tool" exec --nv --bind "${GAPSEEK_BIND:-$PWD}" "$GAPSEEK_IMAGE" gapseek)
else
    GAPSEEK=(gapseek)
fi
