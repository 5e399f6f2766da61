"""Packed vs loose inputs for one shard task: file opens, reads, wall time, input bytes.

    python benchmarks/packed_io.py POOL_CIF_DIR WORK [--shard-size 4096] [--shard 3] [--repeats 3]

Indexes the pool twice (loose, and --pack), then runs the same shard task of each store (``gapseek featurize
STORE --shard I``, 1 worker) under ``strace -f -e trace=open,openat`` (every file the task and its worker open:
Python's own imports included, the same in both) and
again without strace for the wall time (median of --repeats, alternating loose and packed on this shared
machine). Input bytes: the CIF files' sizes (loose) vs the compressed bytes of the shard's range in inputs.h5
(packed: the chunks the task reads). The index times of both are printed too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = ROOT.parent / "shared" / "models" / "cgcnn"


def gapseek(*args, strace: Path | None = None) -> float:
    cmd = [str(BIN / "gapseek"), *args]
    if strace is not None:
        cmd = ["strace", "-f", "-e", "trace=open,openat", "-o", str(strace), *cmd]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, GAPSEEK_MODEL_DIR=str(MODEL)))
    return time.perf_counter() - t0


def opens(path: Path) -> dict[str, int]:
    """Successful opens in an strace log: all, of CIF files, of the pack, of HDF5 files."""
    lines = [ln for ln in path.read_text().splitlines() if "open" in ln and not re.search(r"= -1 ", ln)]
    return {"all": len(lines), "cif": sum('.cif"' in ln for ln in lines),
            "inputs.h5": sum('inputs.h5"' in ln for ln in lines), "h5": sum('.h5"' in ln for ln in lines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cifs", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--shard", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is not installed")
    args.work.mkdir(parents=True, exist_ok=True)
    stores = {"loose": args.work / "loose", "packed": args.work / "packed"}
    for name, store in stores.items():
        extra = ["--pack"] if name == "packed" else []
        t = gapseek("index", str(args.cifs), "--out", str(store), "--shard-size", str(args.shard_size),
                    "--overwrite", *extra)
        print(f"index {name}: {t:.1f} s", flush=True)
    with h5py.File(stores["loose"] / "manifest.h5", "r") as f:
        starts = f["shard_starts"][()] if "shard_starts" in f else None
        n = int(f.attrs["n_entries"])
        lo = int(starts[args.shard]) if starts is not None else args.shard * args.shard_size
        hi = (int(starts[args.shard + 1]) if starts is not None and args.shard + 1 < len(starts)
              else min(n, lo + args.shard_size) if starts is None else n)
        loose_bytes = int(f["size"][lo:hi].clip(0).sum())
    with h5py.File(stores["packed"] / "inputs.h5", "r") as f:
        a, b = int(f["offsets"][lo]), int(f["offsets"][hi])
        ds, chunk = f["data"], f["data"].chunks[0]
        packed_bytes = sum(ds.id.get_chunk_info_by_coord((c,)).size for c in range(a // chunk * chunk, b, chunk))
        pack_size = (stores["packed"] / "inputs.h5").stat().st_size
    print(f"shard {args.shard}: rows {lo}-{hi} ({hi - lo} files)")
    calls = {}
    for name, store in stores.items():
        shutil.rmtree(store / "shards", ignore_errors=True)
        gapseek("featurize", str(store), "--shard", str(args.shard), "--no-progress",
                strace=args.work / f"strace-{name}.txt")
        calls[name] = opens(args.work / f"strace-{name}.txt")
    walls: dict[str, list[float]] = {"loose": [], "packed": []}
    for _ in range(args.repeats):
        for name, store in stores.items():
            shutil.rmtree(store / "shards", ignore_errors=True)
            walls[name].append(gapseek("featurize", str(store), "--shard", str(args.shard), "--no-progress"))
    print(f"{'':8} {'opens':>7} {'of CIFs':>8} {'of .h5':>7} {'input MiB':>10} {'wall s (median)':>16}")
    for name in stores:
        c = calls[name]
        mib = (loose_bytes if name == "loose" else packed_bytes) / 2**20
        print(f"{name:8} {c['all']:>7} {c['cif']:>8} {c['h5']:>7} {mib:>10.1f} {statistics.median(walls[name]):>16.1f}")
    ratio = statistics.median(walls["packed"]) / statistics.median(walls["loose"])
    print(f"packed/loose: opens x{calls['packed']['all'] / calls['loose']['all']:.3f}, input bytes "
          f"x{packed_bytes / max(loose_bytes, 1):.2f}, wall x{ratio:.2f} "
          f"(walls s: loose {walls['loose']}, packed {walls['packed']}); inputs.h5 {pack_size / 2**20:.0f} MiB for "
          f"{n} files")


if __name__ == "__main__":
    main()
