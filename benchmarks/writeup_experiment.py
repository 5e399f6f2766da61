"""The write-up's experiment from its first step, as a user runs it: every command is gapseek's command line.

1. ``gapseek ingest mp OUT --band-gap 2.3:2.8`` (the write-up's query: every crystal with 2.3 <= gap <= 2.8 eV)
   against tests/mp_server.py, a local stand-in of the Materials Project API serving the real crystals of
   ../shared/data/mp-gap-36k through the official client (on a machine with the internet: the same command with
   $MP_API_KEY set and no endpoint);
2. ``gapseek index`` + ``gapseek featurize --merge`` with the published CGCNN model;
3. ``gapseek benchmark`` with the write-up's settings: 100 crystals as the prior, the rest as candidates, target
   T = 2.534 eV, tolerance D = 0.01 eV, 30 trials; the write-up's method (``gpyopt``), gapseek's default engine
   (``shell``) and random picking, each over the same ``--seeds`` priors.

Prints, per engine: campaigns with a hit within 5 trials (the write-up's claim: "a hit within 5 trials"), within
30, the median and mean first hit, and random picking's exact expectation for the same priors.

    python benchmarks/writeup_experiment.py [--seeds 50] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
POOL = SHARED / "data" / "mp-gap-36k"
MODEL = SHARED / "models" / "cgcnn"
GAPSEEK = [sys.executable, "-m", "gapseek.cli"]


def run(cmd: list[str], env: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res.stdout, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--engines", default="random,gpyopt,shell")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one)")
    args = ap.parse_args()
    for need in (POOL, MODEL):
        if not need.exists():
            print(f"skipped: {need} is absent (../shared beside the repository)")
            return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="gapseek-writeup-"))
    key = secrets.token_hex(16)  # 32 characters, like a real key; only in this process's environment
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mp_server.py"), "--pool", str(POOL),
                               "--key", key], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        env = {**os.environ, "MP_API_KEY": key, "MP_API_ENDPOINT": url, "GAPSEEK_MODEL_DIR": str(MODEL)}
        data, store, bench = work / "mp-window", work / "store", work / "bench"
        out, t_ingest = run([*GAPSEEK, "ingest", "mp", str(data), "--band-gap", "2.3:2.8", "--no-progress"], env)
        print(out.strip(), f"\n[ingest {t_ingest:.0f} s]")
    finally:
        server.terminate()
        server.wait()
    out, t_index = run([*GAPSEEK, "index", str(data), "--out", str(store)], env)
    print(out.strip())
    out, t_feat = run([*GAPSEEK, "featurize", str(store), "--merge", "--workers", str(args.workers),
                       "--no-progress"], env)
    print(out.strip(), f"\n[index {t_index:.0f} s, featurize {t_feat:.0f} s]")
    out, t_bench = run([*GAPSEEK, "benchmark", str(store), "--labels", str(data / "labels.csv"), "--prior", "100",
                        "--target", "2.534", "--tolerance", "0.01", "--budget", "30", "--engines", args.engines,
                        "--seeds", str(args.seeds), "--out", str(bench), "--no-progress"], env)
    print(f"[benchmark {t_bench:.0f} s]")
    with open(bench / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    with open(data / "labels.csv") as fh:
        gaps = [float(r[1]) for r in csv.reader(fh) if r and r[0] != "id"]
    n_hits = sum(abs(g - 2.534) <= 0.01 for g in gaps)
    print(f"\nthe write-up's experiment: {len(gaps):,} crystals with 2.3 <= gap <= 2.8 eV ({n_hits} within 0.01 eV "
          f"of 2.534 eV, {n_hits / len(gaps):.1%}); prior 100, 30 trials, {args.seeds} seeds (the same priors "
          "for every engine)")
    print(f"{'engine':<10} {'hit in <= 5':>12} {'hit in <= 30':>13} {'first hit median':>17} {'mean*':>7} "
          f"{'random exact, mean':>19}")
    for engine in args.engines.split(","):
        rows = [r for r in runs if r["engine"] == engine]
        firsts = [int(r["first_hit"]) if r["found"] in ("1", "True", "true") else 31 for r in rows]
        rnd = [float(r["random_expected"]) for r in rows if r["random_expected"]]
        print(f"{engine:<10} {sum(f <= 5 for f in firsts) / len(rows):>12.0%} "
              f"{sum(f <= 30 for f in firsts) / len(rows):>13.0%} {statistics.median(firsts):>17g} "
              f"{statistics.mean(firsts):>7.1f} {statistics.mean(rnd) if rnd else float('nan'):>19.1f}")
    print("* a campaign without a hit counts as 31. The write-up's claim: a hit within 5 trials.")
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
