# shellcheck shell=bash disable=SC2154
# Sourced by the gapseek Slurm scripts, slurm/pipeline.sh and container/run.sh, after they have set $here
# (this directory). It
#   1. sources the site set-up: $GAPSEEK_SITE if set, else slurm/site.sh beside this file if it exists
#      (module loads, venv/conda activation, GAPSEEK_IMAGE, SBATCH_ACCOUNT=...: see site.sh.example). Under
#      SBATCH_EXPORT=NONE a job starts from a clean login environment and gets only what this file sets up;
#      GAPSEEK_SITE itself is not passed on then, so use slurm/site.sh;
#   2. defines gapseek_cmd PATH...: sets GAPSEEK=(how to run gapseek), chosen by ONE variable:
#        GAPSEEK_IMAGE=/path/gapseek.sif -> apptainer/singularity exec --nv the image (model baked in),
#                                           binding $GAPSEEK_BIND if set, else the filesystems of PATH...
#        unset                           -> the `gapseek` on PATH
#   3. defines job_header STEP: the job's SLURM_* variables and the gapseek version, at the top of its log.

die() { echo "gapseek: $*" >&2; exit 1; }

gapseek_site=""
if [ -n "${GAPSEEK_SITE:-}" ]; then
    if [ ! -r "$GAPSEEK_SITE" ] || [ -d "$GAPSEEK_SITE" ]; then
        die "GAPSEEK_SITE=$GAPSEEK_SITE is not a readable file"
    fi
    gapseek_site=$GAPSEEK_SITE
elif [ -f "$here/site.sh" ]; then
    gapseek_site=$here/site.sh
fi
if [ -n "$gapseek_site" ]; then
    set +u  # module and conda scripts read unset variables
    # shellcheck disable=SC1090
    source "$gapseek_site"
    set -u
fi

# The directory to bind for PATH: its top-level directory (/scratch for /scratch/u/store; symlinks are not
# resolved, so the path exists in the image as it is written). Nothing for the image's own system directories
# (with a warning: a bind would hide them), nor for a directory that does not exist here.
fs_top() {
    local p
    p=$(realpath -m -s -- "$1")
    p=${p#/}
    p=/${p%%/*}
    case $p in
        /|/bin|/boot|/dev|/etc|/lib|/lib32|/lib64|/libx32|/opt|/proc|/root|/run|/sbin|/srv|/sys|/usr|/var)
            echo "gapseek: not binding $1 into the image (it is under the image's $p); set GAPSEEK_BIND" >&2 ;;
        *) if [ -d "$p" ]; then echo "$p"; fi ;;
    esac
}

# The top-level directories of the files an argument names: a store's inputs (gapseek status --input-dirs, in the
# image), or the absolute paths listed in a text file (an index ROOT that lists CIFs).
listed_tops() {
    local p=$1 tool=$2
    if [ -f "$p/manifest.h5" ]; then
        local top
        top=$(fs_top "$p")
        "$tool" exec ${top:+--bind "$top"} "$GAPSEEK_IMAGE" gapseek status "$p" --input-dirs
    elif [ -f "$p" ] && [[ $p != *.cif && $p != *.h5 && $p != *.sif ]]; then
        grep -ao '^/[^/]*' "$p" | sort -u || true
    fi
}

gapseek_cmd() {
    if [ -z "${GAPSEEK_IMAGE:-}" ]; then
        command -v gapseek >/dev/null || die "no gapseek on PATH${SLURM_JOB_ID:+ in job $SLURM_JOB_ID}:" \
            "activate its venv (or module load it) in the site file" \
            "(${gapseek_site:-$here/site.sh, see site.sh.example}), or set GAPSEEK_IMAGE"
        GAPSEEK=(gapseek)
        return 0
    fi
    [ -f "$GAPSEEK_IMAGE" ] || die "GAPSEEK_IMAGE=$GAPSEEK_IMAGE: no such file"
    local tool binds p q
    tool=$(command -v apptainer || command -v singularity) \
        || die "GAPSEEK_IMAGE is set but neither apptainer nor singularity is on PATH" \
               "(module load it in the site file)"
    if [ -n "${GAPSEEK_BIND:-}" ]; then
        binds=$GAPSEEK_BIND  # exactly what the user lists: src[:dest[:ro]],...
    else
        binds=$({
            fs_top "$PWD"
            for p in "$@"; do
                case $p in -*) continue ;; esac  # options are not paths (their values may be)
                fs_top "$p"
                listed_tops "$p" "$tool" | while read -r q; do fs_top "$q"; done
            done
        } | sort -u | paste -sd, -)
    fi
    GAPSEEK=("$tool" exec --nv)
    if [ -n "$binds" ]; then GAPSEEK+=(--bind "$binds"); fi
    GAPSEEK+=("$GAPSEEK_IMAGE" gapseek)
}

job_header() {
    echo "== gapseek $1: job ${SLURM_JOB_ID:-(none)} on $(hostname) at $(date '+%F %T %z')"
    echo "   $("${GAPSEEK[@]}" --version 2>&1 | tail -1), run as: ${GAPSEEK[*]}"
    echo "   scripts: $here; site file: ${gapseek_site:-(none)}; working directory: $PWD"
    env | grep '^SLURM_' | sort | sed 's/^/   /' || true
    echo "=="
}
