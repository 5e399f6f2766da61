"""The command line's grammar: every subcommand, option and help text, and nothing else. Each subcommand names its
handler as ``"MODULE:FUNCTION"`` of :mod:`gapseek.cli` (``func``), imported only when it runs, so ``gapseek
--help`` and ``gapseek status`` do not import torch."""

from __future__ import annotations

import argparse

from gapseek import __version__

__all__ = ["build_parser"]


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: "(default: X)" is appended unless the text already speaks of
    its default, or there is none to tell (a flag, a required option, an unset value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (action.option_strings and "default" not in text and not action.required and d is not None
                and d is not False and d != [] and d is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """The parser of gapseek and of each of its subcommands (add_subparsers makes children of the same class)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _hide(p: argparse.ArgumentParser, *options: str) -> None:
    """Leave ``options`` out of ``p``'s help (they are shared with other subcommands but unused by this one)."""
    for action in p._actions:
        if any(o in action.option_strings for o in options):
            action.help = argparse.SUPPRESS


def _describe(parser: argparse.ArgumentParser) -> None:
    """``gapseek COMMAND --help`` opens with the line that ``gapseek --help`` shows for COMMAND."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                child = action.choices[choice.dest]
                if child.description is None:
                    child.description = choice.help
                _describe(child)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="checkpoint file or directory with band-gap.pth.tar and "
                   "atom_init.json (default: $GAPSEEK_MODEL_DIR, else the user cache, downloaded once)")
    p.add_argument("--model-sha256", default=None, metavar="HEX|any",
                   help="expected checkpoint sha256 (default: the published band-gap model's; 'any' to skip)")


def _featurize_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes, each file read in one (default 1; use the cores Slurm gives you)")
    p.add_argument("--batch-atoms", type=int, default=512, help="atoms per model batch (default 512)")
    p.add_argument("--no-reduce", action="store_true",
                   help="run the model on every atom, not once per class of equivalent atoms (slower; same "
                        "outputs up to float32 rounding)")
    p.add_argument("--chunk-size", type=int, default=256, help="files per worker task (default 256)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds one file may take to read and graph; past it its worker process is killed and "
                        "the file recorded as 'timeout', 0 = no limit (default 120)")
    p.add_argument("--memory-limit", type=float, default=4.0, metavar="GiB",
                   help="memory each worker process may add to what it holds at start (RLIMIT_AS); a file that "
                        "needs more is recorded as 'memory' or 'crashed', 0 = no cap (default 4)")
    p.add_argument("--max-file-size", type=float, default=100.0, metavar="MB",
                   help="larger files are recorded as 'too-large' without being read (default 100)")
    p.add_argument("--max-atoms", type=int, default=1000, help="cells with more sites fail (default 1000)")
    p.add_argument("--disorder", choices=["fail", "majority"], default="fail",
                   help="partially occupied sites: record a failure (default) or keep the majority occupant")
    p.add_argument("--reader", choices=["auto", "gemmi", "pymatgen"], default="auto",
                   help="CIF reader (default auto: gemmi, pymatgen when gemmi rejects the syntax)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing STORE/features.h5")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gapseek", description="CGCNN descriptors at cluster scale, and "
                                     "Bayesian search for crystals with a target band gap.")
    parser.add_argument("--version", action="version", version=f"gapseek {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output: -v info, -vv debug and tracebacks (default: warnings and errors)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ingest", help="download crystals from a database into a folder of CIFs + labels")
    p.set_defaults(func="ingest:cmd_ingest_source")  # no source given: say which there are
    isub = p.add_subparsers(dest="source", metavar="SOURCE")
    q = isub.add_parser("mp", help="the Materials Project (official client mp-api; key from $MP_API_KEY): "
                        "OUT/cif/*.cif, OUT/labels.csv, OUT/properties.csv, OUT/gapseek-source.json",
                        description="Materials matching the criteria, from the summary endpoint. Resumable: run the "
                        "same command again after an interruption. Ranges are MIN:MAX (either side may be empty).")
    q.add_argument("out", metavar="OUT", help="folder to write (then: gapseek index OUT --out STORE)")
    q.add_argument("--band-gap", metavar="MIN:MAX", help="PBE band gap, eV (the write-up: 2.3:2.8)")
    q.add_argument("--energy-above-hull", metavar="MIN:MAX", help="eV/atom, e.g. :0.05")
    q.add_argument("--formation-energy", metavar="MIN:MAX", help="formation energy per atom, eV/atom")
    q.add_argument("--num-sites", metavar="MIN:MAX", help="sites in the cell")
    q.add_argument("--num-elements", metavar="MIN:MAX", help="distinct elements")
    q.add_argument("--elements", metavar="A,B", help="every one of these present")
    q.add_argument("--exclude-elements", metavar="A,B", help="none of these present")
    q.add_argument("--chemsys", metavar="A-B-C", help="exactly these elements, e.g. Li-Fe-O")
    q.add_argument("--stable", action="store_true", default=None, help="only materials on the convex hull")
    t = q.add_mutually_exclusive_group()
    t.add_argument("--theoretical", dest="theoretical", action="store_true", default=None,
                   help="only materials without an experimental (ICSD) match")
    t.add_argument("--experimental", dest="theoretical", action="store_false",
                   help="only materials with an experimental (ICSD) match")
    q.add_argument("--api-key", metavar="KEY", help="API key (default: $MP_API_KEY; prefer the variable: a key on "
                   "the command line shows in the process list and shell history)")
    q.add_argument("--endpoint", metavar="URL", help="API server (default: $MP_API_ENDPOINT, else the client's)")
    q.add_argument("--batch", type=int, default=500, help="structures per request")
    q.add_argument("--restart", action="store_true", help="discard an earlier download in OUT and start over")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func="ingest:cmd_ingest_mp")

    p = sub.add_parser("index", help="walk CIF trees into STORE/manifest.h5 (stable ids, hashes, shard plan)")
    p.add_argument("roots", nargs="+", metavar="ROOT", help="directories (recursive), CIF files or path lists")
    p.add_argument("--out", required=True, metavar="STORE", help="store directory (manifest.h5 is written there)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shard-size", type=int, default=4096, help="manifest rows per shard (default 4096)")
    g.add_argument("--shards", type=int, default=None, metavar="N",
                   help="plan about N equal shards instead of --shard-size")
    p.add_argument("--chunk-size", type=int, default=256, help="featurizer chunk size the plan aligns to")
    p.add_argument("--balance", choices=("work", "count"), default="work",
                   help="cut shards so each holds about the same estimated work (atoms in the cells, from the CIF "
                        "text; default) or the same number of files")
    p.add_argument("--pack", action="store_true",
                   help="also pack every CIF into STORE/inputs.h5 (read once here): shard tasks then open one file, "
                        "not thousands (for parallel file systems)")
    p.add_argument("--threads", type=int, default=8,
                   help="processes reading, hashing and sizing up files in parallel (default 8)")
    g = p.add_argument_group("composition filter", "index only crystals whose formula (_chemical_formula_sum) "
                             "passes; the others are listed in STORE/filtered.tsv with the reason")
    g.add_argument("--elements", metavar="A,B", help="every one of these present (e.g. O: only oxides)")
    g.add_argument("--exclude-elements", metavar="A,B", help="none of these present; symbols or the groups "
                   "radioactive, noble-gases, lanthanides, actinides")
    g.add_argument("--num-elements", metavar="N|MIN:MAX", help="how many distinct elements")
    p.add_argument("--skip-cod-duplicates", action="store_true",
                   help="leave out COD entries marked as duplicates of another (_cod_duplicate_entry); by default "
                        "they are kept and listed in STORE/cod-duplicates.tsv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    p.set_defaults(func="cluster:cmd_index")

    p = sub.add_parser("featurize", help="CIFs -> CGCNN descriptors + predicted gap in STORE/features.h5",
                       description="Two forms. `gapseek featurize INPUT... --out STORE` featurizes in one go. "
                       "`gapseek featurize STORE [--shard I/N | --mpi]` featurizes shards of an indexed store "
                       "(inside a Slurm array job the shard is $SLURM_ARRAY_TASK_ID); then `gapseek merge`.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="CIF files, directories (recursive) or text files "
                   "listing paths; or one indexed STORE")
    p.add_argument("--out", metavar="STORE", help="store directory (the one-go form)")
    p.add_argument("--shard", metavar="I[/N]", help="featurize shard I of an indexed store (default: "
                   "$SLURM_ARRAY_TASK_ID + $GAPSEEK_SHARD_OFFSET in an array job, else every shard)")
    p.add_argument("--mpi", action="store_true", help="MPI ranks share the shards (run under srun/mpiexec)")
    p.add_argument("--merge", action="store_true", help="merge the store when all shards are done "
                   "(with --mpi: rank 0, after the others finish)")
    p.add_argument("--checkpoint-every", type=int, default=2048, metavar="ROWS",
                   help="rows per checkpointed block of a shard (a multiple of --chunk-size; default 2048)")
    _featurize_args(p)
    p.set_defaults(func="featurize:cmd_featurize")

    p = sub.add_parser("merge", help="verify every shard of STORE and build STORE/features.h5")
    p.add_argument("store", metavar="STORE", help="an indexed store (made by `gapseek index`)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing STORE/features.h5")
    p.set_defaults(func="cluster:cmd_merge")

    p = sub.add_parser("status", help="which shards of STORE are complete, partial, stale, corrupt or missing",
                       description="Which shards of STORE are complete, partial, stale, corrupt or missing, and the "
                       "command that redoes the others. Every part file is read in full and checked against its "
                       "checksums. Exit status: 0 when every shard is complete (`gapseek merge` will accept "
                       "them), 3 when some are not, 1 on an error; with --todo or --num-shards, 0 unless an "
                       "error.")
    p.add_argument("store", metavar="STORE", help="an indexed store (made by `gapseek index`)")
    p.add_argument("--num-shards", action="store_true", help="print only the number of shards (for scripts)")
    p.add_argument("--todo", action="store_true", help="print only the shards still to do, comma separated")
    p.add_argument("--arrays", action="store_true",
                   help="print the Slurm arrays that cover every shard, one 'OFFSET COUNT' line each (split at "
                        "--max-array-size; for sbatch --array=0-$((COUNT-1)) ... --shard-offset OFFSET)")
    p.add_argument("--max-array-size", type=int, default=None, metavar="N",
                   help="with --arrays: the longest array (default: the cluster's MaxArraySize)")
    p.add_argument("--input-dirs", action="store_true",
                   help="print the top-level directories the store's inputs lie under, one a line (what a "
                        "container must bind)")
    p.set_defaults(func="cluster:cmd_status")

    p = sub.add_parser("submit", help="featurize STORE's shards through submitit (Slurm array, or local)")
    p.add_argument("store", metavar="STORE", help="an indexed store (made by `gapseek index`)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="local processes (default, no cluster needed) or a Slurm array job")
    p.add_argument("--partition", help="Slurm partition (default: the cluster's default partition)")
    p.add_argument("--time", type=int, default=120, metavar="MIN", help="time limit per array task, in minutes")
    p.add_argument("--cpus", type=int, default=4, help="CPUs per array task; they run the graph workers")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per array task (the model runs on cuda when > 0)")
    p.add_argument("--mem-gb", type=int, default=8, help="memory per array task, in GB")
    p.add_argument("--parallel", type=int, default=16, help="array tasks running at once (sbatch --array=...%%K)")
    p.add_argument("--max-array-size", type=int, default=None,
                   help="split arrays to this size (default: the cluster's MaxArraySize)")
    p.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option for submitit's slurm_additional_parameters (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="submit and return (default: wait, then merge)")
    p.add_argument("--checkpoint-every", type=int, default=2048, metavar="ROWS",
                   help="rows per checkpointed block of a shard (a multiple of --chunk-size)")
    _featurize_args(p)
    p.set_defaults(func="cluster:cmd_submit")

    p = sub.add_parser("demo", help="featurize the embedded example crystals (no data or cluster needed)")
    p.add_argument("--out", default="gapseek-demo", metavar="STORE", help="store directory (default gapseek-demo)")
    _featurize_args(p)
    p.set_defaults(func="featurize:cmd_demo", overwrite=True)

    p = sub.add_parser("pca", help="fit PCA on the store's vectors and save it in STORE/features.h5")
    p.add_argument("store", metavar="STORE", help="feature store directory (or its features.h5)")
    p.add_argument("--components", type=int, default=3, help="components to keep (default 3; search, campaign "
                   "and suggest use the leading --components of it)")
    p.add_argument("--vector", choices=["hidden", "pooled", "both"], default="pooled",
                   help="descriptors to fit it on (default pooled, as search, campaign and suggest)")
    p.add_argument("--batch-rows", type=int, default=100_000, help="rows per block of the incremental fit")
    p.set_defaults(func="search:cmd_pca")

    def campaign_args(q: argparse.ArgumentParser, simulated: bool) -> None:
        q.add_argument("--target", type=float, required=True, metavar="EV", help="target band gap T (eV)")
        q.add_argument("--tolerance", type=float, default=0.01, metavar="EV",
                       help="a crystal is a hit when |gap - T| <= this, in eV")
        q.add_argument("--engine", default="shell",
                       help="shell (default: the CGCNN prediction calibrated on the labels as a filter, an isotropic "
                            "GP + EI inside), gp, gp-ei, gp-abs, gp-noprior (ARD kernels), gp-iso, gp-abs-iso "
                            "(isotropic), gpyopt, random, predicted")
        q.add_argument("--vector", choices=["hidden", "pooled", "both"], default="pooled",
                       help="descriptors the engines see: pooled (64-d), hidden (32-d) or both")
        q.add_argument("--features", choices=["pca", "full"], default="pca",
                       help="engine inputs: the store's PCA (default) or the full vectors")
        q.add_argument("--components", type=int, default=3, help="PCA components (default 3)")
        q.add_argument("--label-range", type=float, nargs=2, metavar=("LO", "HI"),
                       help="only candidates whose known gap lies in [LO, HI] (the write-up: 2.3 2.8)")
        q.add_argument("--prediction-input", action="store_true",
                       help="give engines the CGCNN prediction as one more input column")
        q.add_argument("--drop-missing", action="store_true", help="leave out labels whose ids are not in STORE")
        q.add_argument("--seed", type=int, default=0,
                       help="random seed of the campaign (the prior draw and the engines' random choices)")
        if simulated:
            q.add_argument("--labels", required=True, metavar="FILE", help="id,band_gap CSV: the oracle")
            q.add_argument("--prior", default="100", metavar="FILE|N",
                           help="labelled start: N drawn at random from the pool, or a id,band_gap file")
            q.add_argument("--budget", type=int, default=30, help="trials (default 30)")
            q.add_argument("--batch", type=int, default=1, help="crystals proposed per round (default 1)")

    def filter_args(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("candidate filters", "crystals they leave out are never proposed (the prior may "
                                 "hold them); elements come from the store's formulas")
        g.add_argument("--require-elements", metavar="EL,EL", help="only crystals holding every one of these "
                       "elements (e.g. Fe,O)")
        g.add_argument("--exclude-elements", metavar="EL,EL", help="no crystal holding any of these (e.g. Pb,Cd,Hg)")
        g.add_argument("--max-elements", type=int, metavar="N", help="at most N distinct elements")
        g.add_argument("--max-atoms", type=int, metavar="N", help="at most N atoms in the cell (the store's n_atoms)")
        g.add_argument("--exclude", metavar="FILE", help="ids or reduced formulas never to propose, one a line "
                       "(# comments); its entries are kept in campaign.json")

    p = sub.add_parser("search", help="a simulated campaign end to end (labels act as the oracle)")
    p.add_argument("store", metavar="STORE", help="feature store directory (or its features.h5)")
    campaign_args(p, simulated=True)
    filter_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="campaign directory (resumed if it exists)")
    p.add_argument("--overwrite", action="store_true", help="start the campaign in DIR anew")
    p.set_defaults(func="search:cmd_search")

    p = sub.add_parser("campaign", help="start a lab campaign: gapseek campaign STORE --target T --prior FILE "
                       "--out DIR, then suggest/tell")
    p.add_argument("store", metavar="STORE", help="feature store directory (or its features.h5)")
    campaign_args(p, simulated=False)
    filter_args(p)
    p.add_argument("--prior", required=True, metavar="FILE", help="id,band_gap of the crystals measured so far")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="campaign directory to create (campaign.json, trials.csv, suggestions.csv)")
    p.add_argument("--overwrite", action="store_true", help="replace a campaign that DIR already holds")
    p.add_argument("--plan", type=int, default=100, metavar="N",
                   help="trials the lab plans: the forecast printed (and saved in DIR/forecast.json) is for N")
    p.set_defaults(func="search:cmd_campaign")

    p = sub.add_parser("forecast", help="expected trials to a first hit and hits in a budget, engine vs random, "
                       "from a campaign's labels so far")
    p.add_argument("campaign", metavar="DIR", help="campaign directory (from `gapseek campaign`)")
    p.add_argument("--budget", type=int, default=100, metavar="N", help="trials to forecast for")
    p.add_argument("--json", action="store_true", help="print the forecast as JSON")
    p.set_defaults(func="search:cmd_forecast")

    p = sub.add_parser("suggest", help="propose the next crystals to measure (jointly, for a batch)")
    p.add_argument("campaign", metavar="DIR", help="campaign directory (made by `gapseek campaign`)")
    p.add_argument("--n", type=int, default=1, help="how many crystals, proposed jointly (default 1)")
    p.add_argument("--ignore-pending", action="store_true",
                   help="disregard earlier suggestions not yet told, for this call (by default they are taken "
                        "as being measured: never proposed again, and the gp engines condition on them)")
    p.set_defaults(func="search:cmd_suggest")

    p = sub.add_parser("tell", help="record measured band gaps (id,band_gap CSV), or crystals that could not be "
                       "made or measured (--failed), in a campaign")
    p.add_argument("campaign", metavar="DIR", help="campaign directory (made by `gapseek campaign`)")
    p.add_argument("results", metavar="FILE", nargs="?", help="id,band_gap CSV of measurements")
    p.add_argument("--release", nargs="+", metavar="ID", default=[],
                   help="pending suggestions that will not be measured (they may be proposed again); put FILE "
                        "before --release")
    p.add_argument("--failed", nargs="+", metavar="ID", default=[],
                   help="crystals that could not be made or measured: recorded in DIR/failed.csv (not as trials) and "
                        "never proposed again; put FILE before --failed")
    p.add_argument("--reason", metavar="TEXT", help="why the --failed crystals failed (e.g. \"could not be "
                   "synthesised\"), kept in failed.csv")
    p.set_defaults(func="search:cmd_tell")

    p = sub.add_parser("benchmark", help="repeat simulated campaigns over seeds and engines; summary + plot")
    p.add_argument("store", metavar="STORE", help="feature store directory (or its features.h5)")
    campaign_args(p, simulated=True)
    _hide(p, "--engine", "--seed")  # a benchmark runs --engines over the seeds 0..--seeds-1
    p.add_argument("--engines", default="random,predicted,shell",
                   help="comma-separated engines to compare (names as for `gapseek search --engine`)")
    p.add_argument("--seeds", type=int, default=20, metavar="N",
                   help="campaigns per engine, with seeds 0..N-1 (seed s draws the prior, the same for every engine)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for summary.json, runs.csv and curves.png")
    p.add_argument("--overwrite", action="store_true",
                   help="start DIR anew (by default a rerun resumes it: only the (engine, seed) campaigns missing "
                        "from DIR/runs.csv run, and other settings than DIR's are refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--targets", metavar="LIST|LO:HI:STEP",
                   help="run every engine over these targets (2.0,2.534 or 1.0:4.0:0.25, both ends included), "
                        "each in DIR/T<target>/, and report per target and over all of them (DIR/targets.json); "
                        "replaces --target")
    for action in p._actions:
        if "--target" in action.option_strings:
            action.required = False  # --target or --targets
    p.set_defaults(func="benchmark:cmd_benchmark")

    p = sub.add_parser("export", help="write a store as CSV (id, formula, prediction, pooled*, hidden*)")
    p.add_argument("store", metavar="STORE", help="feature store directory (or its features.h5)")
    p.add_argument("--csv", required=True, metavar="FILE",
                   help="output CSV, one row per featurized crystal: id, formula, prediction, pooled0..63, hidden0..31")
    p.add_argument("--failures-csv", metavar="FILE", help="also write the failure records")
    p.set_defaults(func="featurize:cmd_export")

    p = sub.add_parser("model", help="show or fetch the pretrained model")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    q = msub.add_parser("info", help="where the model is resolved from, its sha256 and hyperparameters")
    _model_args(q)
    q.set_defaults(func="featurize:cmd_model_info")
    q = msub.add_parser("fetch", help="install the pinned model into the user cache, verified by sha256, from a "
                        "local copy (--from DIR) or by download; every later command then finds it there")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--from", dest="source", metavar="DIR",
                   help="copy from a folder holding band-gap.pth.tar and atom_init.json (no network needed)")
    g.add_argument("--url", metavar="MIRROR", help="download from a mirror laid out like the upstream repository "
                   "(default: $GAPSEEK_MODEL_URL, else the upstream repository at its pinned commit)")
    q.set_defaults(func="featurize:cmd_model_fetch")
    _describe(parser)
    return parser
