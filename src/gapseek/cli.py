"""``gapseek`` command line: a thin argparse layer over the library."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from importlib import resources

from gapseek import __version__
from gapseek.errors import GapseekError, GapseekWarning

log = logging.getLogger("gapseek")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="checkpoint file or directory with band-gap.pth.tar and "
                   "atom_init.json (default: $GAPSEEK_MODEL_DIR, else the user cache, downloaded once)")
    p.add_argument("--model-sha256", default=None, metavar="HEX|any",
                   help="expected checkpoint sha256 (default: the published band-gap model's; 'any' to skip)")


def _featurize_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1; use the cores Slurm gives you)")
    p.add_argument("--batch-atoms", type=int, default=512, help="atoms per model batch (default 512)")
    p.add_argument("--no-reduce", action="store_true",
                   help="run the model on every atom, not once per class of equivalent atoms (slower; same "
                        "outputs up to float32 rounding)")
    p.add_argument("--chunk-size", type=int, default=256, help="files per worker task (default 256)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per file, 0 = no limit (default 120)")
    p.add_argument("--max-atoms", type=int, default=1000, help="cells with more sites fail (default 1000)")
    p.add_argument("--disorder", choices=["fail", "majority"], default="fail",
                   help="partially occupied sites: record a failure (default) or keep the majority occupant")
    p.add_argument("--reader", choices=["auto", "gemmi", "pymatgen"], default="auto",
                   help="CIF reader (default auto: gemmi, pymatgen when gemmi rejects the syntax)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing STORE/features.h5")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gapseek", description="CGCNN descriptors at cluster scale, and "
                                     "Bayesian search for crystals with a target band gap.")
    parser.add_argument("--version", action="version", version=f"gapseek {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("featurize", help="CIFs -> CGCNN descriptors + predicted gap in STORE/features.h5")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="CIF files, directories (recursive) or text files "
                   "listing paths")
    p.add_argument("--out", required=True, metavar="STORE", help="store directory")
    _featurize_args(p)
    p.set_defaults(func=cmd_featurize)

    p = sub.add_parser("demo", help="featurize the embedded example crystals (no data or cluster needed)")
    p.add_argument("--out", default="gapseek-demo", metavar="STORE", help="store directory (default gapseek-demo)")
    _featurize_args(p)
    p.set_defaults(func=cmd_demo, overwrite=True)

    p = sub.add_parser("export", help="write a store as CSV (id, formula, prediction, pooled*, hidden*)")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--csv", required=True, metavar="FILE")
    p.add_argument("--failures-csv", metavar="FILE", help="also write the failure records")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("model", help="show or fetch the pretrained model")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    q = msub.add_parser("info", help="where the model is resolved from, its sha256 and hyperparameters")
    _model_args(q)
    q.set_defaults(func=cmd_model_info)
    q = msub.add_parser("fetch", help="download the pinned model into the user cache (verified)")
    q.add_argument("--url", help="base URL of a mirror (default: the upstream repository at its pinned commit)")
    q.set_defaults(func=cmd_model_fetch)
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("gapseek: %(levelname)s: %(message)s"))
    root = logging.getLogger("gapseek")
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    warnings.simplefilter("default", GapseekWarning)


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
        read=ReadSettings(reader=args.reader, disorder=args.disorder, max_atoms=args.max_atoms),
        graph=GraphSettings(),
        device=args.device,
        workers=args.workers,
        batch_atoms=args.batch_atoms,
        chunk_size=args.chunk_size,
        timeout=args.timeout,
        reduce=not args.no_reduce,
    )


def run_featurize(inputs: list[str], out: str, args: argparse.Namespace) -> int:
    from gapseek.featurize import featurize_items
    from gapseek.inputs import collect_inputs
    from gapseek.store import StoreWriter, counts_by_category

    settings = _settings(args)
    items = collect_inputs(inputs)
    lm = _load(args)
    attrs = {
        "gapseek_version": __version__,
        "model_sha256": lm.checkpoint_sha256,
        "atom_init_sha256": lm.atom_init_sha256,
        "model_epoch": int(lm.epoch or -1),
        "reader": settings.read.reader,
        "disorder": settings.read.disorder,
        "max_atoms": settings.read.max_atoms,
        "n_inputs": len(items),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **settings.graph.as_attrs(),
    }
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


def cmd_featurize(args: argparse.Namespace) -> int:
    return run_featurize(args.inputs, args.out, args)


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
    from gapseek.hub import cache_dir, download_model

    target = download_model(cache_dir() / "models" / "cgcnn-band-gap", base_url=args.url)
    print(f"gapseek model fetch: verified files in {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GapseekError as exc:
        print(f"gapseek: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gapseek: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
