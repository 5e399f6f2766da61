"""A copy of a feature store whose CGCNN prediction is biased on purpose: ``prediction' = shift + scale * prediction``.

Benchmarks on it show whether an engine adapts to a predictor that is off by a bias and a scale (the ``shell``
engine calibrates the prediction on each campaign's own labels; ``predicted`` and a shell fixed in raw prediction
space do not). Everything else (ids, descriptors, PCA) is copied unchanged; the ``prediction`` dataset's content
checksum is recomputed, so the copy is a valid store with other content (campaigns and benchmarks tell it apart).

    python benchmarks/biased_predictor.py STORE OUT --shift 0.41 --scale 0.89
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np

from gapseek.store import CONTENT_ATTR, _content_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--shift", type=float, default=0.41)
    ap.add_argument("--scale", type=float, default=0.89)
    a = ap.parse_args()
    src = Path(a.store) / "features.h5" if Path(a.store).is_dir() else Path(a.store)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / "features.h5"
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        ds = f["prediction"]
        old = ds[()]
        new = (a.shift + a.scale * old.astype(np.float64)).astype(ds.dtype)
        ds[...] = new
        if CONTENT_ATTR in ds.attrs:
            ds.attrs[CONTENT_ATTR] = hashlib.sha256(_content_bytes(new)).hexdigest()
        f.attrs["biased_prediction"] = f"{a.shift} + {a.scale} * prediction (benchmarks/biased_predictor.py)"
    print(f"{dst}: prediction -> {a.shift:+g} + {a.scale:g} x prediction ({len(new)} rows; mean "
          f"{old.mean():.3f} -> {new.mean():.3f} eV)")


if __name__ == "__main__":
    main()
