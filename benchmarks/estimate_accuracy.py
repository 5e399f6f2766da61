"""How well index's work estimate (atoms in the cell, from the CIF text) predicts the real atom count, against the
file size, on the real COD entries of ../shared.

    python benchmarks/estimate_accuracy.py [--work DIR]

Featurizes ../shared/data/cod-robustness/with_cod_id (546 files; the ordered crystals among them come out with
their real atom counts), then compares, over those crystals, ``estimate_atoms`` of each file and its size with
the count the featurizer found: share exact, Pearson and Spearman correlations.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
from scipy.stats import pearsonr, spearmanr

from gapseek.structure.estimate import estimate_atoms

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    cod = SHARED / "data" / "cod-robustness" / "with_cod_id"
    if not cod.is_dir():
        sys.exit(f"{cod} is absent (the benchmark reads ../shared)")
    work = args.work or Path(tempfile.mkdtemp(prefix="gapseek-estimate-"))
    store = work / "store"
    env = dict(os.environ, GAPSEEK_MODEL_DIR=str(SHARED / "models" / "cgcnn"))
    subprocess.run([str(Path(sys.executable).parent / "gapseek"), "featurize", str(cod), "--out", str(store),
                    "--no-progress", "--overwrite"], check=True, env=env, capture_output=True)
    with h5py.File(store / "features.h5", "r") as f:
        paths = [p.decode() for p in f["paths"][()]]
        true = f["n_atoms"][()]
    est = np.array([estimate_atoms(Path(p).read_bytes()) for p in paths])
    size = np.array([Path(p).stat().st_size for p in paths])
    print(f"{len(true)} featurized COD crystals, {true.min()}-{true.max()} atoms (median {np.median(true):.0f})")
    close = np.mean(abs(est - true) <= 0.1 * true)
    print(f"  estimate: exact for {np.mean(est == true):.0%}, within 10% for {close:.0%}; "
          f"Pearson r {pearsonr(est, true)[0]:.2f}, Spearman {spearmanr(est, true)[0]:.2f}")
    print(f"  file size: Pearson r {pearsonr(size, true)[0]:.2f}, Spearman {spearmanr(size, true)[0]:.2f}")


if __name__ == "__main__":
    main()
