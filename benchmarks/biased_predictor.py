"""A copy of a feature store whose CGCNN prediction is biased on purpose:
``prediction' = shift + scale * prediction + wiggle * sin(2 pi * prediction / period)``.

Benchmarks on it show whether an engine adapts to a predictor that is off by a bias and a scale (the ``shell``
engine calibrates the prediction on each campaign's own labels; ``predicted`` and a shell fixed in raw prediction
space do not). Everything else (ids, descriptors, PCA) is copied unchanged; the ``prediction`` dataset's content
checksum is recomputed, so the copy is a valid store with other content (campaigns and benchmarks tell it apart).

    python benchmarks/biased_predictor.py STORE OUT --shift 0.41 --scale 0.89
    python benchmarks/biased_predictor.py STORE OUT --shift 0 --scale 1 --wiggle 0.3 --period 2   # not affine

With ``--wiggle`` the bias is not affine: it swings between -wiggle and +wiggle eV as the prediction goes through
one ``period``, so that no single line (the ``shell`` calibration's global slope) undoes it; only a local fit can.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np

from gapseek.store.schema import CONTENT_ATTR, content_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--shift", type=float, default=0.41)
    ap.add_argument("--scale", type=float, default=0.89)
    ap.add_argument("--wiggle", type=float, default=0.0, help="amplitude (eV) of a sinusoidal bias")
    ap.add_argument("--period", type=float, default=2.0, help="its period in eV of prediction")
    a = ap.parse_args()
    src = Path(a.store) / "features.h5" if Path(a.store).is_dir() else Path(a.store)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / "features.h5"
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        ds = f["prediction"]
        old = ds[()]
        x = old.astype(np.float64)
        new = (a.shift + a.scale * x + a.wiggle * np.sin(2 * np.pi * x / a.period)).astype(ds.dtype)
        ds[...] = new
        if CONTENT_ATTR in ds.attrs:
            ds.attrs[CONTENT_ATTR] = hashlib.sha256(content_bytes(new)).hexdigest()
        what = f"{a.shift:+g} + {a.scale:g} x prediction" + (
            f" + {a.wiggle:g} x sin(2 pi x prediction / {a.period:g})" if a.wiggle else "")
        f.attrs["biased_prediction"] = f"{what} (benchmarks/biased_predictor.py)"
    print(f"{dst}: prediction -> {what} ({len(new)} rows; mean "
          f"{old.mean():.3f} -> {new.mean():.3f} eV)")


if __name__ == "__main__":
    main()
