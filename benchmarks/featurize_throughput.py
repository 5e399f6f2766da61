"""Featurization throughput on one core: gapseek vs the original CGCNN pipeline, in the same run.

    python benchmarks/featurize_throughput.py [--set mp|cod] [--n 1000] [--repeats 3] [--seed 0]

Both sides featurize the same random sample of ../shared/data/mp-gap-36k (``--set mp``: small inorganic
cells) or of the COD entries in ../shared/data/cod-robustness that read as ordered crystals (``--set cod``:
larger cells, molecular crystals with H, up to ~1,000 atoms) (CIF -> graph -> model -> 64+32-d vectors and
prediction) with one thread, each in its own fresh process (so peak RSS is its own). Sides are
interleaved ``repeats`` times and the medians are reported, because this machine is shared and noisy.
Each side first processes one extra crystal outside the sample, untimed, so that lazy imports (pymatgen's
CIF parser, gemmi, vesin) count for neither: the figure is the steady-state rate of a long run.

The baseline does what the original code (cgcnn/data.py + predict.py at f42ab23) does per crystal:
``Structure.from_file``, atom_init lookups, ``get_all_neighbors(8)``, a Python sort per atom, the first 12,
``GaussianDistance.expand``, then the model on batches of 256 crystals. It uses gapseek's model class, whose
forward pass is the original's operation for operation.

Where the time goes: a third child times gapseek's stages one by one on the same crystals (read + parse, graph,
model on batches of --batch-atoms atoms), one thread. On a GPU the graph workers (CPU) feed one model process:
(read + graph) / model-on-the-GPU is the number of graph workers one GPU needs; the CPU model time printed here
is an upper bound of the GPU's.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MP = SHARED / "data" / "mp-gap-36k" / "cifs"
MODEL = SHARED / "models" / "cgcnn"
COD = SHARED / "data" / "cod-robustness"


def cod_files() -> list[str]:
    """The COD entries of ../shared that pymatgen reads as ordered crystals of real elements (both sides can
    featurize them)."""
    import csv
    import warnings

    from pymatgen.core import Structure

    with open(COD / "manifest.csv") as fh:
        files = sorted(str(COD / r["file"]) for r in csv.DictReader(fh)
                       if r["pymatgen"] == "ok" and r["is_ordered_first"] == "True")
    keep = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:  # the original code needs real elements (no dummy species such as 'X' or 'Lp')
            try:
                [sp.number for sp in Structure.from_file(f).species]  # what the original looks up
            except AttributeError:
                continue
            keep.append(f)
    return keep


def run_split(files: list[str], batch_atoms: int, warmup: str) -> dict:
    """Seconds spent reading + parsing, building graphs and running the model, gapseek's code, one thread."""
    import torch

    from gapseek.featurize import FeaturizeSettings
    from gapseek.graph import atom_classes, build_graph
    from gapseek.model import load_model
    from gapseek.model.collate import collate
    from gapseek.structure.cif import crystal_from_bytes

    torch.set_num_threads(1)
    settings = FeaturizeSettings(batch_atoms=batch_atoms)
    lm = load_model(MODEL / "band-gap.pth.tar", MODEL / "atom_init.json")
    build_graph(crystal_from_bytes(Path(warmup).read_bytes()), settings.graph)
    t = {"read": 0.0, "graph": 0.0, "model": 0.0}
    graphs, atoms = [], 0
    for f in files:
        t0 = time.perf_counter()
        try:
            crystal = crystal_from_bytes(Path(f).read_bytes(), settings.read)
        except Exception:
            t["read"] += time.perf_counter() - t0
            continue
        t1 = time.perf_counter()
        try:
            g = build_graph(crystal, settings.graph)
            atom_classes(g)
        except Exception:
            continue
        finally:
            t["read"] += t1 - t0
            t["graph"] += time.perf_counter() - t1
        graphs.append(g)
        atoms += crystal.n_atoms
    t0 = time.perf_counter()
    batch = []
    with torch.no_grad():
        for g in graphs + [None]:
            if g is not None:
                batch.append(g)
            if batch and (g is None or sum(x.nbr_idx.shape[0] for x in batch) >= batch_atoms):
                lm.model(collate(batch, lm.atom_init, settings.graph, settings.reduce))
                batch = []
    t["model"] = time.perf_counter() - t0
    return {"n": len(files), "ok": len(graphs), "atoms": atoms, **t}


def run_ours(files: list[str], batch_atoms: int, warmup: str) -> dict:
    import torch

    from gapseek.featurize import FeaturizeSettings, featurize_items
    from gapseek.featurize.supervise import peak_rss_mb
    from gapseek.model import load_model
    from gapseek.structure import InputItem, crystal_id

    torch.set_num_threads(1)
    lm = load_model(MODEL / "band-gap.pth.tar", MODEL / "atom_init.json")
    items = [InputItem(crystal_id(f), f) for f in files]
    list(featurize_items([InputItem("warmup", warmup)], lm))  # lazy imports and tables, outside the timing
    t0 = time.perf_counter()
    ok = sum(rows.n_ok for rows in featurize_items(items, lm, FeaturizeSettings(batch_atoms=batch_atoms)))
    dt = time.perf_counter() - t0
    return {"n": len(files), "ok": ok, "seconds": dt, "peak_rss_mb": peak_rss_mb()}


def run_baseline(files: list[str], warmup: str) -> dict:
    import numpy as np
    import torch
    from original_cgcnn import build_graph_original  # beside this file
    from pymatgen.core import Structure

    from gapseek.featurize.supervise import peak_rss_mb
    from gapseek.graph import GraphSettings, gaussian_expand
    from gapseek.model import Batch, load_model

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    lm = load_model(MODEL / "band-gap.pth.tar", MODEL / "atom_init.json")
    gs = GraphSettings()
    build_graph_original(Structure.from_file(warmup), gs)  # lazy imports, outside the timing
    t0 = time.perf_counter()
    ok = 0
    for s in range(0, len(files), 256):  # predict.py's default batch size
        atom_fea, nbr_fea, nbr_idx, crystal_idx = [], [], [], []
        base = 0
        for k, f in enumerate(files[s:s + 256]):
            st = Structure.from_file(f)
            g = build_graph_original(st, gs)
            atom_fea.append(torch.Tensor(np.vstack([lm.atom_init[site.specie.number] for site in st])))
            nbr_fea.append(torch.Tensor(gaussian_expand(g.nbr_dist, gs)))
            nbr_idx.append(torch.LongTensor(g.nbr_idx.astype(np.int64)) + base)
            crystal_idx.append(torch.full((len(st),), k, dtype=torch.long))
            base += len(st)
        b = Batch(torch.cat(atom_fea), torch.cat(nbr_fea), torch.cat(nbr_idx), torch.cat(crystal_idx), len(nbr_fea))
        pred, _, _ = lm.model(b)
        ok += int(pred.shape[0])
    dt = time.perf_counter() - t0
    return {"n": len(files), "ok": ok, "seconds": dt, "peak_rss_mb": peak_rss_mb()}


def _child(side: str, list_file: str, batch_atoms: int) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--list", list_file, "--batch-atoms", str(batch_atoms)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-atoms", type=int, default=512)
    ap.add_argument("--set", choices=["mp", "cod"], default="mp", help="the crystals: mp-gap-36k or COD entries")
    ap.add_argument("--child", choices=["ours", "baseline", "split"], help=argparse.SUPPRESS)
    ap.add_argument("--list", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        warmup, *files = Path(args.list).read_text().split()
        run = {"ours": run_ours, "split": run_split}.get(args.child)
        res = run(files, args.batch_atoms, warmup) if run else run_baseline(files, warmup)
        print(json.dumps(res))
        return 0

    if not MP.is_dir() or not MODEL.is_dir():
        print(f"skipped: {MP} or {MODEL} is absent (the benchmark reads ../shared)")
        return 0
    files = sorted(str(p) for p in MP.glob("*.cif")) if args.set == "mp" else cod_files()
    # one more crystal, outside the sample, warms up both sides (imports done lazily on first use)
    args.n = min(args.n, len(files) - 1)
    sample = random.Random(args.seed).sample(files, args.n + 1)
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(sample))
        list_file = fh.name
    results: dict[str, list[dict]] = {"ours": [], "baseline": []}
    for r in range(args.repeats):
        for side in ("baseline", "ours"):
            res = _child(side, list_file, args.batch_atoms)
            results[side].append(res)
            print(f"  repeat {r + 1}/{args.repeats} {side:>8}: {res['n'] / res['seconds']:8.1f} crystals/s, "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    split = _child("split", list_file, args.batch_atoms)
    Path(list_file).unlink()
    med = {s: statistics.median(x["n"] / x["seconds"] for x in v) for s, v in results.items()}
    rss = {s: statistics.median(x["peak_rss_mb"] for x in v) for s, v in results.items()}
    what = "mp-gap-36k crystals" if args.set == "mp" else "ordered COD entries (cod-robustness)"
    print(f"\nfeaturize throughput, {args.n} random {what}, 1 core, median of {args.repeats}:")
    print(f"  {'':<10}{'crystals/s':>12}{'peak RSS MB':>14}")
    print(f"  {'original':<10}{med['baseline']:>12.1f}{rss['baseline']:>14.0f}")
    print(f"  {'gapseek':<10}{med['ours']:>12.1f}{rss['ours']:>14.0f}")
    print(f"  ratio gapseek/original: {med['ours'] / med['baseline']:.1f}x (goal: >= 20x)")
    ok, total = split["ok"], split["read"] + split["graph"] + split["model"]
    print(f"where gapseek's time goes ({ok} crystals, {split['atoms'] / max(ok, 1):.0f} atoms each on average, one "
          f"thread): read+parse {split['read'] / total:.0%}, graph {split['graph'] / total:.0%}, model "
          f"{split['model'] / total:.0%}; ms per crystal: read+parse {1e3 * split['read'] / ok:.2f}, graph "
          f"{1e3 * split['graph'] / ok:.2f}, model (CPU) {1e3 * split['model'] / ok:.2f}")
    ratio = (split["read"] + split["graph"]) / split["model"]
    print(f"  graph workers per model process: (read+graph)/model = {ratio:.1f} with the model on this CPU core; "
          "a GPU running the model S times faster than one core needs S times as many")
    return 0


if __name__ == "__main__":
    sys.exit(main())
