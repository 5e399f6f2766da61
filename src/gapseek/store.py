"""Stage 4 — the HDF5 feature store: ``STORE/features.h5``.

Datasets (``n`` featurized crystals): ``ids``, ``paths``, ``formula`` (utf-8), ``prediction`` (n, float32, eV),
``pooled`` (n x 64 float32), ``hidden`` (n x 32 float32), ``n_atoms``, ``n_padded``, ``n_tied`` (int32);
group ``failures`` with ``ids``, ``paths``, ``reasons``. Attributes: model sha256s, graph settings, reader
settings, gapseek version, counts. Written to a temporary file and renamed on success, so a crashed run
never leaves a store that looks complete.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gapseek.errors import StoreError

__all__ = ["FEATURES_FILE", "FeatureRows", "FeatureStore", "StoreWriter", "decode_strings", "export_csv",
           "encode_strings", "features_path", "open_store"]

FEATURES_FILE = "features.h5"
SCHEMA_VERSION = 1
_STR = h5py.string_dtype(encoding="utf-8")
CHUNK_ROWS = 4096


@dataclass
class FeatureRows:
    """A block of results in input order: features for some items, failures for the others."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    formula: list[str] = field(default_factory=list)
    prediction: list[np.ndarray] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)
    hidden: list[np.ndarray] = field(default_factory=list)
    n_atoms: list[int] = field(default_factory=list)
    n_padded: list[int] = field(default_factory=list)
    n_tied: list[int] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        return len(self.ids)


class StoreWriter:
    """Append-only writer of ``features.h5`` (a context manager; commits on clean exit)."""

    def __init__(self, store: str | Path, pooled_dim: int = 64, hidden_dim: int = 32, attrs: dict | None = None,
                 overwrite: bool = False, filename: str = FEATURES_FILE) -> None:
        self.dir = Path(store)
        self.final = self.dir / filename
        if self.final.exists() and not overwrite:
            raise StoreError(f"{self.final} exists; pass --overwrite to replace it")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.dir / f".{filename}.{os.getpid()}.tmp"
        self.h5 = h5py.File(self.tmp, "w")
        kw = dict(compression="gzip", compression_opts=4, shuffle=True)
        f = self.h5
        self._ds = {
            "ids": f.create_dataset("ids", (0,), maxshape=(None,), dtype=_STR, chunks=(CHUNK_ROWS,), **kw),
            "paths": f.create_dataset("paths", (0,), maxshape=(None,), dtype=_STR, chunks=(CHUNK_ROWS,), **kw),
            "formula": f.create_dataset("formula", (0,), maxshape=(None,), dtype=_STR, chunks=(CHUNK_ROWS,), **kw),
            "prediction": f.create_dataset(
                "prediction", (0,), maxshape=(None,), dtype="f4", chunks=(CHUNK_ROWS,), **kw
            ),
            "pooled": f.create_dataset("pooled", (0, pooled_dim), maxshape=(None, pooled_dim), dtype="f4",
                                       chunks=(CHUNK_ROWS, pooled_dim), **kw),
            "hidden": f.create_dataset("hidden", (0, hidden_dim), maxshape=(None, hidden_dim), dtype="f4",
                                       chunks=(CHUNK_ROWS, hidden_dim), **kw),
            "n_atoms": f.create_dataset("n_atoms", (0,), maxshape=(None,), dtype="i4", chunks=(CHUNK_ROWS,), **kw),
            "n_padded": f.create_dataset("n_padded", (0,), maxshape=(None,), dtype="i4", chunks=(CHUNK_ROWS,), **kw),
            "n_tied": f.create_dataset("n_tied", (0,), maxshape=(None,), dtype="i4", chunks=(CHUNK_ROWS,), **kw),
        }
        g = f.create_group("failures")
        self._fail = {
            k: g.create_dataset(k, (0,), maxshape=(None,), dtype=_STR, chunks=(1024,), **kw)
            for k in ("ids", "paths", "reasons")
        }
        f.attrs["schema_version"] = SCHEMA_VERSION
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        self.n_ok = 0
        self.n_failed = 0

    @staticmethod
    def _append(ds: h5py.Dataset, values) -> None:
        n = len(values)
        if n == 0:
            return
        if isinstance(values, list) and isinstance(values[0], str):
            values = encode_strings(values)
        start = ds.shape[0]
        ds.resize(start + n, axis=0)
        ds[start:] = values

    def write(self, rows: FeatureRows) -> None:
        if rows.n_ok:
            d = self._ds
            self._append(d["ids"], rows.ids)
            self._append(d["paths"], rows.paths)
            self._append(d["formula"], rows.formula)
            self._append(d["prediction"], np.asarray(rows.prediction, dtype=np.float32))
            self._append(d["pooled"], np.asarray(rows.pooled, dtype=np.float32))
            self._append(d["hidden"], np.asarray(rows.hidden, dtype=np.float32))
            self._append(d["n_atoms"], np.asarray(rows.n_atoms, dtype=np.int32))
            self._append(d["n_padded"], np.asarray(rows.n_padded, dtype=np.int32))
            self._append(d["n_tied"], np.asarray(rows.n_tied, dtype=np.int32))
            self.n_ok += rows.n_ok
        if rows.failures:
            ids, paths, reasons = zip(*rows.failures)
            self._append(self._fail["ids"], list(ids))
            self._append(self._fail["paths"], list(paths))
            self._append(self._fail["reasons"], list(reasons))
            self.n_failed += len(rows.failures)

    def append_file(self, src: str | Path, block: int = 65536) -> None:
        """Append every row of another store file (features and failures), streaming ``block`` rows at a time."""
        with h5py.File(src, "r") as f:
            n = f["ids"].shape[0]
            for start in range(0, n, block):
                for name, ds in self._ds.items():
                    self._append(ds, f[name][start:start + block])
            self.n_ok += n
            fail = f["failures"]
            m = fail["ids"].shape[0]
            for start in range(0, m, block):
                for name, ds in self._fail.items():
                    self._append(ds, fail[name][start:start + block])
            self.n_failed += m

    def commit(self, extra_attrs: dict | None = None) -> Path:
        self.h5.attrs["n_features"] = self.n_ok
        self.h5.attrs["n_failures"] = self.n_failed
        for k, v in (extra_attrs or {}).items():
            self.h5.attrs[k] = v
        self.h5.close()
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        try:
            self.h5.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.h5.id.valid:
                self.commit()
        else:
            self.abort()


@dataclass
class FeatureStore:
    """A read-only view of ``features.h5`` loaded into memory (use h5py directly for huge stores)."""

    path: Path
    ids: list[str]
    paths: list[str]
    formula: list[str]
    prediction: np.ndarray
    pooled: np.ndarray
    hidden: np.ndarray
    n_atoms: np.ndarray
    n_padded: np.ndarray
    n_tied: np.ndarray
    failures: list[tuple[str, str, str]]
    attrs: dict

    def __len__(self) -> int:
        return len(self.ids)


def encode_strings(values) -> list[bytes]:
    """``str`` → utf-8 bytes for an HDF5 string dataset. File names that are not valid UTF-8 (Python holds
    their bytes as lone surrogates) keep their exact bytes, so every path read back opens the same file."""
    return [v.encode("utf-8", "surrogateescape") for v in values]


def decode_strings(values) -> list[str]:
    """Strings read from an HDF5 string dataset (bytes or str, as h5py returns them) as ``str``; the inverse
    of :func:`encode_strings`."""
    return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in values]


def features_path(store: str | Path) -> Path:
    """``STORE/features.h5`` (or ``store`` itself when it names the file); a :class:`StoreError` if absent."""
    p = Path(store)
    f5 = p / FEATURES_FILE if p.is_dir() else p
    if not f5.is_file():
        raise StoreError(f"no feature store at {f5} (run `gapseek featurize ... --out {store}`, or "
                         f"`gapseek merge {store}` for a sharded store, first)")
    return f5


def open_store(store: str | Path) -> FeatureStore:
    f5 = features_path(store)
    try:
        with h5py.File(f5, "r") as f:
            if f.attrs.get("schema_version") != SCHEMA_VERSION:
                raise StoreError(
                    f"{f5} has schema {f.attrs.get('schema_version')}, this gapseek reads {SCHEMA_VERSION}"
                )
            fail = f["failures"]
            return FeatureStore(
                path=f5,
                ids=decode_strings(f["ids"][()]),
                paths=decode_strings(f["paths"][()]),
                formula=decode_strings(f["formula"][()]),
                prediction=f["prediction"][()],
                pooled=f["pooled"][()],
                hidden=f["hidden"][()],
                n_atoms=f["n_atoms"][()],
                n_padded=f["n_padded"][()],
                n_tied=f["n_tied"][()],
                failures=list(zip(*(decode_strings(fail[k][()]) for k in ("ids", "paths", "reasons")))),
                attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
            )
    except (OSError, KeyError) as exc:
        raise StoreError(f"{f5} is not a readable gapseek store: {exc}") from None


def export_csv(store: str | Path, out: str | Path, failures_out: str | Path | None = None) -> int:
    """Write ``id, formula, prediction, pooled0.., hidden0..`` (and optionally the failures) as CSV."""
    fs = open_store(store)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "formula", "prediction"]
                   + [f"pooled{i}" for i in range(fs.pooled.shape[1])]
                   + [f"hidden{i}" for i in range(fs.hidden.shape[1])])
        for k in range(len(fs)):
            w.writerow([fs.ids[k], fs.formula[k], repr(float(fs.prediction[k]))]
                       + [repr(float(x)) for x in fs.pooled[k]] + [repr(float(x)) for x in fs.hidden[k]])
    if failures_out is not None:
        with open(failures_out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "path", "reason"])
            w.writerows(fs.failures)
    return len(fs)


def counts_by_category(failures: Sequence[tuple[str, str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, _, reason in failures:
        cat = reason.split(":", 1)[0]
        out[cat] = out.get(cat, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
