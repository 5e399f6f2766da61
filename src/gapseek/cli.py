"""``gapseek`` command line: a thin argparse layer over the library."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import warnings
from importlib import resources

from gapseek import __version__
from gapseek.errors import GapseekError, GapseekWarning

log = logging.getLogger("gapseek")


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

    p = sub.add_parser("index", help="walk CIF trees into STORE/manifest.h5 (stable ids, hashes, shard plan)")
    p.add_argument("roots", nargs="+", metavar="ROOT", help="directories (recursive), CIF files or path lists")
    p.add_argument("--out", required=True, metavar="STORE", help="store directory (manifest.h5 is written there)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shard-size", type=int, default=4096, help="manifest rows per shard (default 4096)")
    g.add_argument("--shards", type=int, default=None, metavar="N",
                   help="plan about N equal shards instead of --shard-size")
    p.add_argument("--chunk-size", type=int, default=256, help="featurizer chunk size the plan aligns to")
    p.add_argument("--threads", type=int, default=8, help="threads hashing files (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    p.set_defaults(func=cmd_index)

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
    p.set_defaults(func=cmd_featurize)

    p = sub.add_parser("merge", help="verify every shard of STORE and build STORE/features.h5")
    p.add_argument("store", metavar="STORE", help="an indexed store (made by `gapseek index`)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing STORE/features.h5")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("status", help="which shards of STORE are complete, partial, stale, corrupt or missing",
                       description="Which shards of STORE are complete, partial, stale, corrupt or missing, and the "
                       "command that redoes the others. Every part file is read in full and checked against its "
                       "checksums. Exit status: 0 when every shard is complete (`gapseek merge` will accept "
                       "them), 3 when some are not, 1 on an error; with --todo or --num-shards, 0 unless an "
                       "error.")
    p.add_argument("store", metavar="STORE", help="an indexed store (made by `gapseek index`)")
    p.add_argument("--num-shards", action="store_true", help="print only the number of shards (for scripts)")
    p.add_argument("--todo", action="store_true", help="print only the shards still to do, comma separated")
    p.set_defaults(func=cmd_status)

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
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("demo", help="featurize the embedded example crystals (no data or cluster needed)")
    p.add_argument("--out", default="gapseek-demo", metavar="STORE", help="store directory (default gapseek-demo)")
    _featurize_args(p)
    p.set_defaults(func=cmd_demo, overwrite=True)

    p = sub.add_parser("pca", help="fit PCA on the store's vectors and save it in STORE/features.h5")
    p.add_argument("store", metavar="STORE", help="feature store directory (or its features.h5)")
    p.add_argument("--components", type=int, default=3, help="components to keep (default 3; search, campaign "
                   "and suggest use the leading --components of it)")
    p.add_argument("--vector", choices=["hidden", "pooled", "both"], default="pooled",
                   help="descriptors to fit it on (default pooled, as search, campaign and suggest)")
    p.add_argument("--batch-rows", type=int, default=100_000, help="rows per block of the incremental fit")
    p.set_defaults(func=cmd_pca)

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
    p.set_defaults(func=cmd_search)

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
    p.set_defaults(func=cmd_campaign)

    p = sub.add_parser("forecast", help="expected trials to a first hit and hits in a budget, engine vs random, "
                       "from a campaign's labels so far")
    p.add_argument("campaign", metavar="DIR", help="campaign directory (from `gapseek campaign`)")
    p.add_argument("--budget", type=int, default=100, metavar="N", help="trials to forecast for")
    p.add_argument("--json", action="store_true", help="print the forecast as JSON")
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("suggest", help="propose the next crystals to measure (jointly, for a batch)")
    p.add_argument("campaign", metavar="DIR", help="campaign directory (made by `gapseek campaign`)")
    p.add_argument("--n", type=int, default=1, help="how many crystals, proposed jointly (default 1)")
    p.add_argument("--ignore-pending", action="store_true",
                   help="disregard earlier suggestions not yet told, for this call (by default they are taken "
                        "as being measured: never proposed again, and the gp engines condition on them)")
    p.set_defaults(func=cmd_suggest)

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
    p.set_defaults(func=cmd_tell)

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
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("export", help="write a store as CSV (id, formula, prediction, pooled*, hidden*)")
    p.add_argument("store", metavar="STORE", help="feature store directory (or its features.h5)")
    p.add_argument("--csv", required=True, metavar="FILE",
                   help="output CSV, one row per featurized crystal: id, formula, prediction, pooled0..63, hidden0..31")
    p.add_argument("--failures-csv", metavar="FILE", help="also write the failure records")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("model", help="show or fetch the pretrained model")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    q = msub.add_parser("info", help="where the model is resolved from, its sha256 and hyperparameters")
    _model_args(q)
    q.set_defaults(func=cmd_model_info)
    q = msub.add_parser("fetch", help="install the pinned model into the user cache, verified by sha256, from a "
                        "local copy (--from DIR) or by download; every later command then finds it there")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--from", dest="source", metavar="DIR",
                   help="copy from a folder holding band-gap.pth.tar and atom_init.json (no network needed)")
    g.add_argument("--url", metavar="MIRROR", help="download from a mirror laid out like the upstream repository "
                   "(default: $GAPSEEK_MODEL_URL, else the upstream repository at its pinned commit)")
    q.set_defaults(func=cmd_model_fetch)
    _describe(parser)
    return parser


class _Formatter(logging.Formatter):
    """``gapseek: warning: ...`` (``info``, ``debug``), like the CLI's ``gapseek: error: ...``."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"gapseek: {record.levelname.lower()}: {record.message}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of the CLI: every warning that the filters let through (each once per place, the
    Python default) goes to stderr through the gapseek logger, at any verbosity. (``logging.captureWarnings`` is
    no use here: it sends them to a "py.warnings" logger that, without a handler of its own, drops them.)"""
    if issubclass(category, GapseekWarning):
        log.warning("%s", message)
    else:  # a library's: say whose
        log.warning("%s (%s from %s:%s)", message, category.__name__, filename, lineno)


def _setup_logging(verbose: int) -> None:
    """Log records of gapseek and the warnings to stderr. Call it inside ``warnings.catch_warnings()``."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("gapseek")
    root.handlers[:] = [handler]
    root.setLevel(level)
    warnings.simplefilter("default", GapseekWarning)
    warnings.showwarning = _show_warning


def _load(args: argparse.Namespace):
    from gapseek.hub import PINNED, resolve_model
    from gapseek.model import load_model

    files = resolve_model(args.model)
    expected = args.model_sha256
    if expected is None:
        expected = PINNED["band-gap.pth.tar"].sha256
    elif expected.lower() == "any":
        expected = None
    return load_model(files.checkpoint, files.atom_init, expected_sha256=expected)


def _settings(args: argparse.Namespace):
    from gapseek.cif import ReadSettings
    from gapseek.featurize import FeaturizeSettings
    from gapseek.graph import GraphSettings

    return FeaturizeSettings(
        read=ReadSettings(reader=args.reader, disorder=args.disorder, max_atoms=args.max_atoms,
                          max_bytes=max(1, int(args.max_file_size * 1e6))),
        graph=GraphSettings(),
        device=args.device,
        workers=args.workers,
        batch_atoms=args.batch_atoms,
        chunk_size=args.chunk_size,
        timeout=args.timeout,
        memory_limit=args.memory_limit,
        reduce=not args.no_reduce,
    )


def run_featurize(inputs: list[str], out: str, args: argparse.Namespace) -> int:
    from gapseek.featurize import featurize_items, settings_attrs
    from gapseek.inputs import collect_inputs
    from gapseek.store import StoreWriter, counts_by_category

    settings = _settings(args)
    items = collect_inputs(inputs)
    lm = _load(args)
    attrs = {**settings_attrs(lm, settings), "n_inputs": len(items),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="cif", dynamic_ncols=True)
    t0 = time.perf_counter()
    failures = []
    with StoreWriter(out, attrs=attrs, overwrite=args.overwrite) as writer:
        for rows in featurize_items(items, lm, settings,
                                    on_chunk=(lambda rows, n: bar.update(n)) if bar else None):
            writer.write(rows)
            failures.extend(rows.failures)
        elapsed = time.perf_counter() - t0
        path = writer.commit({"elapsed_s": elapsed})
    if bar:
        bar.close()
    rate = len(items) / elapsed if elapsed > 0 else float("inf")
    cats = ", ".join(f"{k} {v}" for k, v in counts_by_category(failures).items())
    print(f"gapseek featurize: {writer.n_ok} ok / {writer.n_failed} failed of {len(items)} inputs "
          f"in {elapsed:.1f} s ({rate:.1f} crystals/s) -> {path}" + (f"\n  failures: {cats}" if cats else ""))
    return 0


def _is_indexed_store(path: str) -> bool:
    from pathlib import Path

    from gapseek.manifest import MANIFEST_FILE

    return (Path(path) / MANIFEST_FILE).is_file()


def cmd_featurize(args: argparse.Namespace) -> int:
    from gapseek.errors import ConfigError

    if args.out is None:
        if len(args.inputs) == 1 and _is_indexed_store(args.inputs[0]):
            return run_shards(args.inputs[0], args)
        raise ConfigError("give --out STORE (one-go form), or exactly one indexed STORE (made by `gapseek index`)")
    if args.shard or args.mpi or args.merge:
        raise ConfigError("--shard, --mpi and --merge apply to an indexed store: `gapseek featurize STORE ...`")
    return run_featurize(args.inputs, args.out, args)


def _report_shard(res) -> None:
    if res.status == "skipped":
        print(f"shard {res.index}: complete already; skipped")
    else:
        rate = res.n_entries / res.seconds if res.seconds > 0 else float("inf")
        extra = f" (resumed: {res.blocks_reused} checkpointed block(s) kept)" if res.blocks_reused else ""
        print(f"shard {res.index}: {res.n_ok} ok / {res.n_failed} failed of {res.n_entries} in "
              f"{res.seconds:.1f} s ({rate:.1f} crystals/s){extra}", flush=True)


def run_shards(store: str, args: argparse.Namespace) -> int:
    from gapseek.manifest import read_plan
    from gapseek.sharding import merge_shards, run_shard, shard_env_index
    from gapseek.shards import parse_shard

    plan = read_plan(store)
    settings = _settings(args)
    if args.mpi:
        from gapseek.mpi import run_mpi

        return run_mpi(store, _load(args), settings, args.checkpoint_every, merge=args.merge, report=_report_shard)
    if args.shard is not None:
        shards = [parse_shard(args.shard, plan.num_shards)]
    elif (env := shard_env_index()) is not None:
        shards = [parse_shard(str(env), plan.num_shards)]
    else:
        shards = list(range(plan.num_shards))
    lm = _load(args)
    for i in shards:
        _report_shard(run_shard(store, i, lm, settings, args.checkpoint_every))
    if args.merge:
        print(f"gapseek merge: -> {merge_shards(store, overwrite=True)}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from gapseek.manifest import build_manifest, write_manifest

    t0 = time.perf_counter()
    man, dups = build_manifest(args.roots, shard_size=args.shard_size, num_shards=args.shards,
                               chunk_size=args.chunk_size, threads=args.threads)
    path = write_manifest(args.out, man, dups, overwrite=args.overwrite)
    print(f"gapseek index: {len(man)} inputs, {man.plan.num_shards} shard(s) of {man.plan.shard_size} "
          f"in {time.perf_counter() - t0:.1f} s -> {path}")
    if dups:
        same = sum(1 for d in dups if d[4])
        print(f"  {len(dups)} file(s) share an id with another ({same} with identical content); kept as ID~k, "
              f"listed in {args.out}/duplicates.tsv")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    import h5py

    from gapseek.sharding import merge_shards

    t0 = time.perf_counter()
    path = merge_shards(args.store, overwrite=args.overwrite)
    with h5py.File(path, "r") as f:
        n_ok, n_failed = int(f.attrs["n_features"]), int(f.attrs["n_failures"])
    print(f"gapseek merge: {n_ok} features + {n_failed} failures = every manifest entry once, "
          f"in {time.perf_counter() - t0:.1f} s -> {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gapseek.manifest import read_plan
    from gapseek.sharding import rerun_hint, shard_states

    if args.num_shards:
        print(read_plan(args.store).num_shards)
        return 0
    states = shard_states(args.store)
    todo = [s.index for s in states if s.state != "complete"]
    if args.todo:
        print(",".join(map(str, todo)))
        return 0
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    print(f"{args.store}: {len(states)} shard(s): " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for s in states:
        if s.state != "complete":
            print(f"  shard {s.index}: {s.state}" + (f" - {s.detail}" if s.detail else ""))
    if todo:
        print(rerun_hint(args.store, todo))
        return 3  # some shard is not complete (see the help: 1 is an error, 2 a usage error)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from gapseek.submit import SubmitSettings, submit_shards

    sub = SubmitSettings(
        executor=args.executor, partition=args.partition, time_min=args.time, cpus=args.cpus, gpus=args.gpus,
        mem_gb=args.mem_gb, parallel=args.parallel, max_array_size=args.max_array_size,
        slurm_options=tuple(args.slurm_option), checkpoint_every=args.checkpoint_every,
    )
    settings = _settings(args)
    lm = _load(args)  # fail early, here, on a missing or wrong model
    return submit_shards(args.store, sub, settings, model=(str(lm.checkpoint_path), str(lm.atom_init_path),
                                                             lm.checkpoint_sha256), wait=not args.no_wait)


def cmd_demo(args: argparse.Namespace) -> int:
    from gapseek.store import open_store

    examples = resources.files("gapseek") / "data" / "examples"
    with resources.as_file(examples) as d:
        rc = run_featurize([str(d)], args.out, args)
    fs = open_store(args.out)
    print(f"\n{'id':<20} {'formula':<10} {'predicted gap (eV)':>18}")
    for i in range(len(fs)):
        print(f"{fs.ids[i]:<20} {fs.formula[i]:<10} {fs.prediction[i]:>18.3f}")
    for fid, _, reason in fs.failures:
        print(f"{fid:<20} failed: {reason}")
    return rc


def cmd_pca(args: argparse.Namespace) -> int:
    from gapseek.pca import fit_pca, save_pca, store_lock

    with store_lock(args.store):  # another `gapseek pca` on this store: this one waits, then fits on its own
        res = fit_pca(args.store, args.components, args.vector, args.batch_rows)
        path = save_pca(args.store, res, origin="gapseek pca")
    ratios = ", ".join(f"{r:.3f}" for r in res.explained_variance_ratio)
    print(f"gapseek pca: {args.vector}, {res.n_rows} rows ({res.method}); explained variance ratio {ratios} "
          f"(total {res.explained_variance_ratio.sum():.3f}) -> {path}:/pca/{args.vector}")
    print(f"  used by search, campaign and suggest with --vector {args.vector} (default pooled) and --components "
          f"<= {args.components} (default 3)")
    return 0


def _campaign_settings(args: argparse.Namespace):
    from gapseek.search.campaign import CampaignSettings
    from gapseek.search.engines import make_engine

    make_engine(args.engine)  # an unknown engine fails here, listing the valid ones
    exclude = getattr(args, "exclude", None)
    if exclude is not None:
        from gapseek.search.filters import read_exclude_file

        exclude = read_exclude_file(exclude)
    return CampaignSettings(
        target=args.target, tolerance=args.tolerance, engine=args.engine, vector=args.vector,
        features=args.features, components=args.components, budget=getattr(args, "budget", None),
        batch=getattr(args, "batch", 1), seed=args.seed,
        label_range=tuple(args.label_range) if args.label_range else None,
        prediction_input=args.prediction_input,
        require_elements=getattr(args, "require_elements", None),
        exclude_elements=getattr(args, "exclude_elements", None), max_elements=getattr(args, "max_elements", None),
        max_atoms=getattr(args, "max_atoms", None), exclude=exclude,
    )


def _prior_arg(text: str):
    from pathlib import Path

    from gapseek.labels import read_labels

    if text.isdigit():
        return int(text)
    if not Path(text).is_file():
        from gapseek.errors import InputError

        raise InputError(f"--prior {text}: neither a number nor a file")
    return list(read_labels(text))


def cmd_search(args: argparse.Namespace) -> int:
    from gapseek.labels import read_labels
    from gapseek.search.campaign import run_search

    def show(r: dict, why: str) -> None:
        mark = "HIT" if r["hit"] else ""
        print(f"trial {r['trial']:>3}  {r['id']:<14} {r['formula']:<16} gap {float(r['band_gap']):.4f} eV  "
              f"|gap-T| {float(r['abs_error']):.4f}  {mark:<3}  ({why})", flush=True)

    from gapseek.search.campaign import resumable

    settings = _campaign_settings(args)  # a negative target fails here
    labels, prior = read_labels(args.labels), _prior_arg(args.prior)
    camp = None if args.overwrite else resumable(args.out, args.store, args.labels, prior, settings)
    if camp is not None:
        done = sum(1 for r in camp.trials() if r["source"] != "prior")
        print(f"gapseek search: resuming {args.out} after trial {done}")
    s = run_search(args.store, labels, args.labels, prior, settings, args.out, overwrite=args.overwrite,
                   drop_missing=args.drop_missing, on_trial=show,
                   on_pca=lambda c: print(f"gapseek search: {c.note}", file=sys.stderr))
    first = (f"first at trial {s['first_hit']}" if s["found"]
             else f"none in {s['first_hit_censored_at']} trial(s)")
    print(f"gapseek search: {s['hits']} hit(s) in {s['trials']} trials, {first}; best |gap - T| "
          f"{s['best_abs_error']:.3g} eV (the prior's best: {s['prior_best_abs_error']:.3g} eV) -> "
          f"{args.out}/trials.csv, summary.json, campaign.png")
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    from gapseek.labels import read_labels
    from gapseek.search.campaign import start_lab_campaign

    settings = _campaign_settings(args)  # a negative target fails here
    camp, pool = start_lab_campaign(args.store, settings, read_labels(args.prior), args.out,
                                    overwrite=args.overwrite,
                                    on_pca=lambda c: print(f"gapseek campaign: {c.note}", file=sys.stderr))
    prior = [r for r in camp.trials() if r["source"] == "prior"]
    left = pool.proposable()
    left[[pool.index[r["id"]] for r in prior]] = False
    filtered = f" ({pool.filtered_out} left out by the candidate filters)" if pool.filtered_out else ""
    print(f"gapseek campaign: {args.out} with {len(prior)} prior measurement(s), {int(left.sum())} "
          f"candidates{filtered}; next: gapseek suggest {args.out} --n 4")
    fc = _forecast(camp, pool, args.plan)
    if fc is not None:
        print("\n".join(fc.lines()))
    return 0


def _forecast(camp, pool, budget: int):
    """The campaign's forecast for ``budget`` trials, saved as DIR/forecast.json; None (said on stderr) when the
    labels are too few for one."""
    from gapseek.errors import ConfigError
    from gapseek.search.forecast import forecast_pool
    from gapseek.search.report import write_json

    if budget < 1:
        raise ConfigError(f"the budget to forecast for must be at least 1; got {budget}")
    observed, y = camp.observed(pool)
    try:
        fc = forecast_pool(pool, observed, y, budget)
    except ConfigError as exc:
        print(f"gapseek: no forecast: {exc}", file=sys.stderr)
        return None
    write_json(camp.dir / "forecast.json", {"labels_used": len(observed), **fc.to_json()})
    return fc


def cmd_forecast(args: argparse.Namespace) -> int:
    import json

    camp, pool = _open_campaign(args.campaign, "forecast")
    with camp.lock():
        fc = _forecast(camp, pool, args.budget)
    if fc is None:
        return 1
    print(json.dumps(fc.to_json(), indent=2) if args.json else "\n".join(fc.lines()))
    return 0


def _open_campaign(directory: str, command: str | None = None):
    """The campaign and its pool, checked (:func:`gapseek.search.campaign.open_campaign`); with ``command``, the
    PCA its engine inputs come from is told on stderr."""
    from gapseek.search.campaign import open_campaign

    notice = (lambda c: print(f"gapseek {command}: {c.note}", file=sys.stderr)) if command else None
    return open_campaign(directory, on_pca=notice, origin=f"gapseek {command or 'tell'}")


def cmd_suggest(args: argparse.Namespace) -> int:
    import numpy as np

    from gapseek.errors import ConfigError, few
    from gapseek.search.engines import make_engine

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1; got {args.n}")
    camp, pool = _open_campaign(args.campaign, "suggest")
    with camp.lock():  # another suggest or tell on this campaign: wait for it, then propose knowing what it wrote
        observed, y = camp.observed(pool)
        camp.exclude_failed(pool)  # told failed since the pool was built: never proposed either
        pending = None if args.ignore_pending else camp.pending(pool)
        if pending is not None and pending.size:
            print(f"{pending.size} earlier suggestion(s) not yet told are taken as being measured: "
                  f"{few([pool.ids[i] for i in pending])} (`gapseek tell DIR --release ID...` for those that will "
                  f"not be; --ignore-pending disregards them for this call)")
        rng = np.random.default_rng(camp.settings.seed + len(observed))
        picks = make_engine(camp.settings.engine).propose(pool, observed, y, args.n, rng, pending=pending)
        if not picks:
            print("gapseek suggest: every crystal of the pool is measured or being measured; nothing to propose")
            return 0
        rows = [(pool.ids[i], pool.formula[i], why) for i, why in picks]
        camp.log_suggestions(rows)
    print(f"{'id':<16} {'formula':<16} {'CGCNN (eV)':>10}  why")
    for (i, why), (cid, formula, _) in zip(picks, rows):
        print(f"{cid:<16} {formula:<16} {pool.prediction[i]:>10.3f}  {why}")
    return 0


def cmd_tell(args: argparse.Namespace) -> int:
    from gapseek.errors import ConfigError
    from gapseek.labels import read_labels

    if args.reason is not None and not args.failed:
        raise ConfigError("--reason goes with --failed ID...")
    if not args.results and not args.release and not args.failed:
        raise ConfigError("tell needs a results FILE (id,band_gap), --release ID... and/or --failed ID...")
    camp, pool = _open_campaign(args.campaign)
    results = read_labels(args.results) if args.results else {}  # a bad line refuses the whole file
    with camp.lock():  # another tell or suggest on this campaign: wait for it, then check against what it wrote
        _tell_locked(camp, pool, results, args)
    return 0


def _tell_locked(camp, pool, results: dict[str, float], args: argparse.Namespace) -> None:
    """``gapseek tell``'s checks and writes, under the campaign's lock."""
    from gapseek.errors import GapseekError, InputError, few

    unknown = [c for c in results if c not in pool.index]
    told = {r["id"] for r in camp.trials()}
    again = [c for c in results if c in told]
    failed_before = camp.failed_ids()
    failed = [c for c in results if c in failed_before or c in args.failed]
    if unknown or again or failed:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} id(s) not in the campaign's store: {few(unknown)}")
        if again:
            parts.append(f"{len(again)} id(s) already recorded: {few(again)}")
        if failed:
            parts.append(f"{len(failed)} id(s) recorded as failed (failed.csv, or --failed now): {few(failed)}")
        raise InputError(f"{args.results}: " + "; ".join(parts) + " (nothing was recorded or released)")
    if args.failed:  # checked before anything is written, like the results (fail() checks again and writes)
        camp.check_failed(pool, args.failed)
    if args.release:  # checked before anything is written, like the results
        camp.release(pool, args.release)
        print(f"gapseek tell: released {len(args.release)} suggestion(s): {few(args.release)}")
    if args.failed:
        rows = camp.fail(pool, args.failed, args.reason or "")
        print(f"gapseek tell: recorded {len(rows)} crystal(s) as failed ({rows[0]['reason']}), never to be proposed "
              f"again: {few(args.failed)} -> {camp.dir}/failed.csv")
    if results:
        rows, unsuggested = camp.tell(pool, list(results.items()))
        hits = [r["id"] for r in rows if r["hit"]]
        print(f"gapseek tell: recorded {len(rows)} measurement(s)" + (f"; HITS: {', '.join(hits)}" if hits else ""))
        if unsuggested:
            print(f"  {len(unsuggested)} of them never suggested by this campaign: {few(unsuggested)} (recorded as "
                  f"lab-unsuggested in trials.csv: fine if the lab chose them; check the ids otherwise)")
    elif not args.failed:
        return
    try:
        summary = camp.report(len(pool))
    except (OSError, ValueError, GapseekError) as exc:  # the measurements are safe in trials.csv already
        log.warning("the campaign summary/plot could not be written (%s); the measurements ARE recorded", exc)
        return
    best = "none yet" if summary["best_abs_error"] is None else f"{summary['best_abs_error']:.3g} eV"
    failed = f", {summary['failed']} failed (not trials)" if summary.get("failed") else ""
    print(f"  campaign: {summary['trials']} measured, {summary['hits']} hit(s){failed}, best |gap - T| {best} -> "
          f"{camp.dir}/summary.json" + (", campaign.png" if summary["trials"] else ""))


def cmd_benchmark(args: argparse.Namespace) -> int:
    from gapseek.errors import ConfigError
    from gapseek.labels import read_labels
    from gapseek.search.benchmark import parse_targets, run_benchmark

    targets = parse_targets(args.targets) if args.targets else None
    if targets is None and args.target is None:
        raise ConfigError("benchmark needs --target T or --targets LIST|LO:HI:STEP")
    if targets is not None and args.target is not None:
        raise ConfigError("give --target or --targets, not both")
    if targets is not None:
        args.target = targets[0]
    settings = _campaign_settings(args)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    from gapseek.search.engines import make_engine

    for e in engines:
        make_engine(e)
    prior = _prior_arg(args.prior)
    if not isinstance(prior, int):
        from gapseek.errors import ConfigError

        raise ConfigError("benchmark draws the prior per seed: --prior takes a number")

    bar = None
    use_bar = not args.verbose and not args.no_progress and sys.stderr.isatty()

    def plan(recorded: int, to_run: int) -> None:
        nonlocal bar
        if recorded:
            print(f"gapseek benchmark: resuming {args.out}: {recorded} campaign(s) recorded, {to_run} to run",
                  flush=True)
        if use_bar and to_run:
            from tqdm import tqdm

            bar = tqdm(total=to_run, unit="campaign", dynamic_ncols=True)

    def progress(name, seed, res):
        first = res.first_hit if res.first_hit <= settings.budget else "none"
        if bar is not None:
            bar.set_postfix_str(f"seed {seed} {name}: first hit {first}", refresh=False)
            bar.update(1)
        else:  # one line per finished campaign, so that a log file shows progress
            print(f"seed {seed:>3} {name:<12} first hit {first:>4}  hits {res.hits}  ({res.seconds:.1f} s)",
                  flush=True)

    if targets is not None:
        return _benchmark_targets(args, settings, targets, engines, prior, progress, plan, lambda: bar)
    try:
        summary = run_benchmark(args.store, read_labels(args.labels), settings, engines, args.seeds, prior,
                                args.out, drop_missing=args.drop_missing, progress=progress,
                                overwrite=args.overwrite, labels_path=args.labels, on_plan=plan)
    finally:
        if bar is not None:
            bar.close()
    st = summary["setting"]
    print(f"\npool {st['pool']} ({st['hits_in_pool']} hits), budget {st['budget']}, prior {st['prior']}, "
          f"{st['seeds']} seed(s) recorded; random's exact expected first hit* {st['random_exact_first_hit_mean']:.1f}")
    print(f"{'engine':<12}{'runs':>5}{'first hit median*':>19}{'mean*':>7}{'found':>7}{'hits':>6}"
          f"{'accel. vs random [95% CI]':>28}{'vs exact random [95% CI]':>27}")

    def accel(e: dict, key: str) -> str:
        if key not in e:
            return "-"
        if e[key + "_ci95"] is None:
            return f"{e[key]:.2f} [one seed]"
        lo, hi = e[key + "_ci95"]
        return f"{e[key]:.2f} [{lo:.2f}, {hi:.2f}]"

    for name, e in summary["engines"].items():
        print(f"{name:<12}{e['runs']:>5}{e['first_hit_median']:>19.1f}{e['first_hit_mean']:>7.1f}"
              f"{e['found_rate']:>7.2f}{e['hits_mean']:>6.2f}{accel(e, 'acceleration_vs_random'):>28}"
              f"{accel(e, 'acceleration_vs_random_exact'):>27}")
    print(f"* a campaign without a hit counts as {st['censored_at']} (budget + 1) trials")
    _print_forecast_check(summary.get("forecast_check"), summary.get("ceiling"))
    print(f"-> {args.out}/summary.json, runs.csv, trials.csv, forecasts.csv, ceilings.csv, curves.png")
    return 0


def _print_forecast_check(fc: dict | None, ceiling: dict | None = None) -> None:
    if ceiling:
        print(f"ceiling: a predictor with the error each prior measures near T (sigma {ceiling['sigma_mean']:.2f} "
              f"eV on average), unbiased: mean first hit {ceiling['first_hit_mean']:.1f}, "
              f"{ceiling['acceleration_vs_random_exact']:.2f}x random's exact expectation")
    if not fc:
        return
    print(f"forecast from each prior, before any trial ({fc['campaigns_forecast']} campaigns): random "
          f"{fc['random_forecast_first_hit_mean']:.1f} forecast vs {fc['random_exact_first_hit_mean']:.1f} exact; "
          + "; ".join(f"{n} {e['forecast_first_hit_mean']:.1f} forecast vs {e['first_hit_mean']:.1f} realised, "
                      f"{100 * e['inside_forecast_10_90']:.0f}% inside the forecast's 10-90% range"
                      for n, e in fc["engines"].items()))


def _print_targets(s: dict, names: list[str]) -> None:
    print("\nper target: mean first hit* (found share), acceleration vs random's exact expectation [95% CI]")
    print(f"{'T (eV)':>7}{'random exact*':>14}" + "".join(f"{n:>30}" for n in names))
    for t in s["targets"]:
        row = s["per_target"][repr(t)]
        cells = []
        for n in names:
            e = row["engines"].get(n)
            cells.append("-" if e is None else f"{e['first_hit_mean']:.1f} ({e['found_rate']:.2f}) "
                         f"{e['acceleration_vs_random_exact']:.2f}" + ("!" if e["worse_than_random_and_predicted"]
                                                                      else ""))
        print(f"{t:>7g}{row['random_exact_first_hit_mean']:>14.1f}" + "".join(f"{c:>30}" for c in cells))


def _print_target_bands(s: dict, names: list[str]) -> None:
    """Per band of targets (targets.json's ``bands``): each engine's mean first hit*, its acceleration and how many
    of the band's targets it did worse than both random and predicted on."""
    print(f"\nper band of 0.5 eV of targets ({len(s['targets'])} targets; each one in targets.json): mean "
          "first hit*, acceleration vs random's exact expectation, targets worse than random and predicted")
    print(f"{'T (eV)':>12}{'targets':>8}{'random exact*':>14}" + "".join(f"{n:>24}" for n in names))
    for band in s["bands"]:
        cells = []
        for n in names:
            e = band["engines"].get(n)
            worse = 0 if e is None else e["targets_worse_than_random_and_predicted"]
            cells.append("-" if e is None else f"{e['first_hit_mean']:.1f} {e['acceleration_vs_random_exact']:.2f}x"
                         + (f" !{worse}" if worse else ""))
        print(f"{band['low']:>5.2f}-{band['high']:<6.2f}{band['targets']:>8}{band['random_exact_first_hit_mean']:>14.1f}"
              + "".join(f"{c:>24}" for c in cells))


def _benchmark_targets(args, settings, targets, engines, prior, progress, plan, get_bar) -> int:
    from gapseek.labels import read_labels
    from gapseek.search.benchmark import run_targets

    def on_target(t: float) -> None:
        bar = get_bar()
        if bar is not None:
            bar.close()
        print(f"gapseek benchmark: target {t:g} eV -> {args.out}/T{t:.4f}".rstrip("0").rstrip(".") + "/",
              flush=True)

    try:
        s = run_targets(args.store, read_labels(args.labels), settings, targets, engines, args.seeds, prior,
                        args.out, on_target=on_target, drop_missing=args.drop_missing, progress=progress,
                        overwrite=args.overwrite, labels_path=args.labels, on_plan=plan)
    finally:
        if get_bar() is not None:
            get_bar().close()

    def acc(e: dict) -> str:
        ci = e["acceleration_vs_random_exact_ci95"] or e["acceleration_vs_random_exact_ci95_over_targets"]
        return f"{e['acceleration_vs_random_exact']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    names = list(s["aggregate"])
    if len(s["targets"]) > 25:  # many targets: per 0.5 eV band here, every target in targets.json
        _print_target_bands(s, names)
    else:
        _print_targets(s, names)
    print("\nover all targets (acceleration = sum of random's exact expectations / sum of first hits; CI over "
          "seeds, or over targets with one seed)")
    print(f"{'engine':<12}{'campaigns':>10}{'mean*':>8}{'median*':>9}{'found':>7}{'accel. vs exact random':>30}"
          f"  worse than random and predicted on")
    for n, e in s["aggregate"].items():
        bad = e["targets_worse_than_random_and_predicted"]
        worse = (", ".join(f"{t:g}" for t in bad[:10]) + (f" ... ({len(bad)} of {len(s['targets'])} targets)"
                                                          if len(bad) > 10 else "")) or "none"
        print(f"{n:<12}{e['campaigns']:>10}{e['first_hit_mean']:>8.1f}{e['first_hit_median']:>9.1f}"
              f"{e['found_rate']:>7.2f}{acc(e):>30}  {worse}")
    if s["skipped"]:
        print(f"skipped (nothing to find): {', '.join(s['skipped'])}")
    _print_forecast_check(s.get("forecast_check"), s.get("ceiling"))
    print(f"* a campaign without a hit counts as {s['censored_at']} (budget + 1) trials; ! = worse than both "
          f"random's exact expectation and predicted on that target")
    print(f"-> {args.out}/targets.json, and per target {args.out}/T<target>/summary.json")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gapseek.store import export_csv

    n = export_csv(args.store, args.csv, args.failures_csv)
    print(f"gapseek export: {n} rows -> {args.csv}")
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from gapseek.hub import resolve_model

    files = resolve_model(args.model)
    lm = _load(args)
    print(f"checkpoint : {files.checkpoint} (from {files.source})\natom_init  : {files.atom_init}\n"
          f"sha256     : {lm.checkpoint_sha256}\nepoch      : {lm.epoch}\nmodel      : {lm.model.init_args}")
    return 0


def cmd_model_fetch(args: argparse.Namespace) -> int:
    from gapseek.hub import download_model, install_model, model_cache_dir

    target = model_cache_dir()
    if args.source:
        install_model(args.source, target)
        how = f"copied from {args.source}"
    else:
        download_model(target, base_url=args.url)
        how = "downloaded"
    print(f"gapseek model fetch: verified files in {target} ({how}); gapseek commands find the model there "
          "unless --model or $GAPSEEK_MODEL_DIR names another")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings(), _sigterm_as_interrupt():  # warnings' display ends with the command
        _setup_logging(args.verbose)
        try:
            return int(args.func(args) or 0)
        except (GapseekError, OSError) as exc:  # OSError: a path given cannot be read or written
            log.debug("traceback of the error below", exc_info=True)
            print(f"gapseek: error: {exc}", file=sys.stderr)
            return 1
        except _Terminated:
            print("gapseek: terminated (SIGTERM); temporary files removed, finished work kept", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print("gapseek: interrupted", file=sys.stderr)
            return 130


class _Terminated(KeyboardInterrupt):
    pass


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (Slurm's time limit, scancel, kill) unwinds like Ctrl-C, so writers remove their temporary files
    and worker processes are stopped, instead of the process vanishing mid-write."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
