"""``gapseek featurize`` (one go), ``demo``, ``export`` and ``model``: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys

from gapseek.cli.cluster import run_shards
from gapseek.cli.options import load, settings
from gapseek.errors import ConfigError
from gapseek.featurize import FeaturizeResult, featurize_to_store
from gapseek.featurize.run import example_inputs
from gapseek.ingest.source import folder_provenance
from gapseek.model.hub import download_model, install_model, model_cache_dir, resolve_model
from gapseek.store import export_csv, open_store
from gapseek.store.manifest import is_indexed
from gapseek.structure import collect_inputs


def run_featurize(inputs: list[str], out: str, args: argparse.Namespace) -> FeaturizeResult:
    config = settings(args)
    items = collect_inputs(inputs)
    lm = load(args)
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="cif", dynamic_ncols=True)
    try:
        res = featurize_to_store(items, out, lm, config, overwrite=args.overwrite,
                                 on_chunk=bar.update if bar else None,
                                 provenance=folder_provenance(inputs, [it.path for it in items]))
    finally:
        if bar:
            bar.close()
    cats = ", ".join(f"{k} {v}" for k, v in res.failures_by_category.items())
    print(f"gapseek featurize: {res.n_ok} ok / {res.n_failed} failed of {res.n_inputs} inputs "
          f"in {res.seconds:.1f} s ({res.rate:.1f} crystals/s) -> {res.path}"
          + (f"\n  failures: {cats}" if cats else ""))
    return res


def cmd_featurize(args: argparse.Namespace) -> int:
    if args.out is None:
        if len(args.inputs) == 1 and is_indexed(args.inputs[0]):
            return run_shards(args.inputs[0], args)
        raise ConfigError("give --out STORE (one-go form), or exactly one indexed STORE (made by `gapseek index`)")
    if args.shard or args.mpi or args.merge:
        raise ConfigError("--shard, --mpi and --merge apply to an indexed store: `gapseek featurize STORE ...`")
    run_featurize(args.inputs, args.out, args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    with example_inputs() as d:
        run_featurize([str(d)], args.out, args)
    fs = open_store(args.out)
    print(f"\n{'id':<20} {'formula':<10} {'predicted gap (eV)':>18}")
    for i in range(len(fs)):
        print(f"{fs.ids[i]:<20} {fs.formula[i]:<10} {fs.prediction[i]:>18.3f}")
    for fid, _, reason in fs.failures:
        print(f"{fid:<20} failed: {reason}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    n = export_csv(args.store, args.csv, args.failures_csv)
    print(f"gapseek export: {n} rows -> {args.csv}")
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    files = resolve_model(args.model)
    lm = load(args)
    print(f"checkpoint : {files.checkpoint} (from {files.source})\natom_init  : {files.atom_init}\n"
          f"sha256     : {lm.checkpoint_sha256}\nepoch      : {lm.epoch}\nmodel      : {lm.model.init_args}")
    return 0


def cmd_model_fetch(args: argparse.Namespace) -> int:
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
