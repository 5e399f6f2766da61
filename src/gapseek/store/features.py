"""Stage 4 — the feature store: :class:`Store`, the one reader of store files (``STORE/features.h5``, and the part
and block files of a sharded store, which share its layout: :mod:`gapseek.store.schema`).

A :class:`Store` is opened once (``with Store.open(STORE) as st:``) and read through typed accessors: ids,
formulas, paths, the prediction, atom counts, descriptor vectors by name (whole, for some rows, or block by
block), failures, a saved PCA by vector, the provenance attributes, a digest of the content. Reading never
writes: saving a PCA is an explicit step (:meth:`Store.save_pca`), under the store's lock.

Concurrent writers: :meth:`Store.save_pca` holds ``STORE/.features.h5.lock`` (``flock``) while it writes, and
``gapseek pca`` holds it (:func:`pca_lock`) from the fit to the save, so two of them on one store run one after
the other instead of failing on HDF5's own file lock; an open that meets a file held open for writing retries
until the writer is done (a :class:`StoreError` after ``GAPSEEK_LOCK_TIMEOUT`` seconds).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from gapseek import config
from gapseek.errors import ConfigError, StoreError
from gapseek.fsutil import file_lock
from gapseek.store.check import content_problem
from gapseek.store.schema import (
    CONTENT_ATTR,
    FEATURES_FILE,
    NUMERIC_DATASETS,
    SCHEMA_VERSION,
    VECTORS,
    PCAResult,
    decode_strings,
    vector_datasets,
)

__all__ = ["FeatureTable", "Store", "counts_by_category", "export_csv", "features_path", "open_h5", "open_store",
           "pca_lock"]

log = logging.getLogger(__name__)

_DIGEST_BLOCK = 65_536  # rows hashed at a time


def features_path(store: str | Path) -> Path:
    """``STORE/features.h5`` (or ``store`` itself when it names the file); a :class:`StoreError` if absent."""
    p = Path(store)
    f5 = p / FEATURES_FILE if p.is_dir() else p
    if not f5.is_file():
        raise StoreError(f"no feature store at {f5} (run `gapseek featurize ... --out {store}`, or "
                         f"`gapseek merge {store}` for a sharded store, first)")
    return f5


def open_h5(path: str | Path, mode: str = "r", timeout: float | None = None) -> h5py.File:
    """``h5py.File(path, mode)``, retried while another process holds the file open for writing (HDF5's own file
    lock answers BlockingIOError at once): up to ``timeout`` seconds (default: ``GAPSEEK_LOCK_TIMEOUT``), then a
    one-line :class:`StoreError`."""
    deadline = time.monotonic() + (config.lock_timeout() if timeout is None else timeout)
    said = False
    while True:
        try:
            return h5py.File(path, mode)
        except OSError as exc:  # BlockingIOError, or an OSError saying so with older h5py
            if not (isinstance(exc, BlockingIOError) or "unable to lock file" in str(exc)):
                raise
            if time.monotonic() >= deadline:
                raise StoreError(f"{path} is held open by another process (HDF5 file lock) and stayed so; run "
                                 "this again when that process has finished") from None
            if not said:
                log.warning("%s is held open by another process (HDF5 file lock); waiting for it", path)
                said = True
            time.sleep(0.1)


def pca_lock(store: str | Path, wait: bool = True) -> contextlib.AbstractContextManager:
    """The lock of a store's PCA writers: ``STORE/.features.h5.lock`` (``flock``; re-entrant in a process)."""
    f5 = features_path(store)
    return file_lock(f5.with_name(f".{f5.name}.lock"), f"the store {f5}", wait=wait, error=StoreError)


class Store:
    """One store file, open for reading (a context manager; :meth:`close` ends it). See the module."""

    def __init__(self, path: str | Path, check_schema: bool = True) -> None:
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._open()
        if check_schema and self._f.attrs.get("schema_version") != SCHEMA_VERSION:
            found = self._f.attrs.get("schema_version")
            self.close()
            raise StoreError(f"{self.path} has schema {found}, this gapseek reads {SCHEMA_VERSION}")

    @classmethod
    def open(cls, store: str | Path) -> Store:
        """The feature store of ``store`` (a store directory, or a store file); a :class:`StoreError` when there is
        none or it cannot be read."""
        return cls(features_path(store))

    def _open(self) -> None:
        try:
            self._h5 = open_h5(self.path, "r")
        except OSError as exc:  # the cause is kept: callers checking part files name it
            raise StoreError(f"{self.path} is not a readable gapseek store: {exc}") from exc

    @property
    def _f(self) -> h5py.File:
        if self._h5 is None:
            raise StoreError(f"{self.path} is closed")
        return self._h5

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, name: str, rows=slice(None)):
        try:
            return self._f[name][rows]
        except KeyError:
            raise StoreError(f"{self.path} is not a readable gapseek store: it lacks {name}") from None

    # ----------------------------------------------------------------------------------- rows and columns
    def __len__(self) -> int:
        return int(self._f["ids"].shape[0])

    @property
    def n_failures(self) -> int:
        return int(self._f["failures/ids"].shape[0])

    @cached_property
    def attrs(self) -> dict:
        """The file's attributes (provenance: model sha256s, settings, gapseek version, counts) as Python values."""
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self._f.attrs.items()}

    @cached_property
    def provenance(self) -> dict:
        """Where the crystals came from and what made the descriptors: ``sources`` (database, release, date,
        query, count each; :mod:`gapseek.ingest.source`), ``filter``, ``model_sha256``, ``gapseek_version``,
        ``created``. A store written before gapseek recorded sources has ``sources`` empty."""
        a = self.attrs
        try:
            inputs = json.loads(a["provenance"]) if "provenance" in a else {}
        except ValueError:
            inputs = {}
        return {"sources": inputs.get("sources", []), "filter": inputs.get("filter"),
                "indexed": inputs.get("indexed"), "model_sha256": a.get("model_sha256"),
                "gapseek_version": a.get("gapseek_version"), "created": a.get("merged") or a.get("created")}

    @cached_property
    def ids(self) -> list[str]:
        return decode_strings(self._read("ids"))

    @cached_property
    def paths(self) -> list[str]:
        return decode_strings(self._read("paths"))

    @cached_property
    def formula(self) -> list[str]:
        return decode_strings(self._read("formula"))

    @cached_property
    def prediction(self) -> np.ndarray:
        """``n`` predicted band gaps (float32, eV)."""
        return self._read("prediction")

    def column(self, name: str, rows=slice(None)) -> np.ndarray:
        """A numeric dataset as stored: ``prediction`` (``n``, float32), ``pooled`` / ``hidden`` (``n x d``,
        float32), ``n_atoms``, ``n_padded`` or ``n_tied`` (``n``, int32); all rows or ``rows``."""
        if name not in NUMERIC_DATASETS:
            raise ConfigError(f"no numeric dataset {name!r}; valid: {', '.join(NUMERIC_DATASETS)}")
        return self._read(name, rows)

    @cached_property
    def failures(self) -> list[tuple[str, str, str]]:
        """``(id, path, reason)`` of every input that gave no features."""
        return list(zip(*(decode_strings(self._read(f"failures/{k}")) for k in ("ids", "paths", "reasons"))))

    def failure_ids(self) -> list[str]:
        return decode_strings(self._read("failures/ids"))

    # ----------------------------------------------------------------------------------- descriptor vectors
    def vector_dim(self, vector: str) -> int:
        return sum(int(self._f[name].shape[1]) for name in vector_datasets(vector))

    def iter_vectors(self, vector: str, rows: np.ndarray | None = None, block: int = 65_536) -> Iterator[np.ndarray]:
        """Blocks (``b x d``, float64) of the descriptor ``vector`` (``pooled``, ``hidden`` or ``both``) for all
        rows, or for ``rows`` (sorted, unique), in order. Reads contiguous slices (chunk-aligned; about twice as
        fast as h5py's point selection for a whole store) and holds one block at a time in float64. Every block
        holding one of ``rows`` is read whole, so a few rows scattered over a large store cost about as much as all
        of them."""
        names = vector_datasets(vector)
        n = len(self)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= n):
                raise ConfigError(f"rows must be sorted, unique and within the store's {n} rows")
        yielded = False
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            if rows is None:
                take = slice(None)
            else:
                a, b = np.searchsorted(rows, [lo, hi])
                if a == b:
                    continue
                take = rows[a:b] - lo
            yielded = True
            yield np.concatenate([self._f[name][lo:hi][take] for name in names], axis=1).astype(np.float64)
        if not yielded:
            yield np.zeros((0, self.vector_dim(vector)))

    def vectors(self, vector: str, rows: np.ndarray | None = None) -> np.ndarray:
        """``n x d`` float64 descriptors of ``vector`` (all rows, or ``rows``: sorted, unique)."""
        return np.concatenate(list(self.iter_vectors(vector, rows)), axis=0)

    # ----------------------------------------------------------------------------------- saved PCAs
    def pca(self, vector: str) -> PCAResult | None:
        """The saved PCA of ``vector``, or None."""
        f = self._f
        if "pca" not in f or vector not in f["pca"]:
            return None
        h = f["pca"][vector]
        created, origin = h.attrs.get("created"), h.attrs.get("origin")
        return PCAResult(vector, h["components"][()], h["mean"][()], h["explained_variance"][()],
                         h["explained_variance_ratio"][()], int(h.attrs["n_rows"]), str(h.attrs["method"]),
                         None if created is None else str(created), None if origin is None else str(origin))

    def pca_vectors(self) -> list[str]:
        """The vectors with a saved PCA."""
        return [v for v in VECTORS if "pca" in self._f and v in self._f["pca"]]

    def save_pca(self, result: PCAResult, origin: str = "gapseek pca") -> Path:
        """Save ``result`` as ``pca/<vector>`` (replacing the one there), stamped with the time and ``origin``,
        under the store's lock (:func:`pca_lock`); this handle is closed meanwhile and reopened after (HDF5 cannot
        hold one file open for reading and writing at once). An OSError (a read-only store) leaves the store as it
        was and open for reading."""
        self.close()
        try:
            with pca_lock(self.path), open_h5(self.path, "r+") as f:
                g = f.require_group("pca")
                if result.vector in g:
                    del g[result.vector]
                h = g.create_group(result.vector)
                h["components"] = result.components
                h["mean"] = result.mean
                h["explained_variance"] = result.explained_variance
                h["explained_variance_ratio"] = result.explained_variance_ratio
                h.attrs.update({"n_components": result.components.shape[0], "n_rows": result.n_rows,
                                "method": result.method, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "origin": origin})
        finally:
            self._open()
            self.__dict__.pop("attrs", None)
        return self.path

    # ----------------------------------------------------------------------------------- identity, checks
    def content_digest(self) -> tuple[str, int]:
        """``(sha256 hex, rows)`` of the content: the ids and feature arrays (``prediction``, ``pooled``,
        ``hidden``), read in blocks. Two stores with the same ids but other features differ; the same store copied
        or moved does not (a saved PCA is not part of it)."""
        f = self._f
        h = hashlib.sha256()
        n = len(self)
        h.update(f"gapseek store digest 1; rows {n}\n".encode())
        for lo in range(0, n, _DIGEST_BLOCK):
            ids = [v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
                   for v in f["ids"][lo:lo + _DIGEST_BLOCK]]
            h.update(b"\0".join(ids) + b"\0")
        for name in ("prediction", "pooled", "hidden"):
            h.update(f"\n{name} {f[name].shape}\n".encode())
            for lo in range(0, n, _DIGEST_BLOCK):
                h.update(np.ascontiguousarray(f[name][lo:lo + _DIGEST_BLOCK], dtype="<f4").tobytes())
        return h.hexdigest(), n

    def content_id(self) -> str | None:
        """The identity of the same content as :meth:`content_digest`, from the checksums the writer stored with
        each dataset (no data is read): sha256 over the ``content_sha256`` and shape of ``ids``, ``prediction``,
        ``pooled`` and ``hidden``. None for a file written before content checksums existed."""
        h = hashlib.sha256(b"gapseek store content 1\n")
        for name in ("ids", "prediction", "pooled", "hidden"):
            ds = self._f[name]
            want = ds.attrs.get(CONTENT_ATTR)
            if want is None:
                return None
            h.update(f"{name} {ds.shape} {want.decode() if isinstance(want, bytes) else want}\n".encode())
        return h.hexdigest()

    def problem(self, block: int = 65536) -> str | None:
        """None when every chunk of every dataset reads and matches its checksums; else the first problem."""
        return content_problem(self._f, block)


@dataclass
class FeatureTable:
    """A whole store file read into memory (:func:`open_store`; small stores, tests and the demo)."""

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


def open_store(store: str | Path) -> FeatureTable:
    """The whole store read into memory, its file closed again."""
    with Store.open(store) as st:
        try:
            return FeatureTable(st.path, st.ids, st.paths, st.formula, st.prediction, st.column("pooled"),
                                st.column("hidden"), st.column("n_atoms"), st.column("n_padded"),
                                st.column("n_tied"), st.failures, st.attrs)
        except (OSError, KeyError) as exc:
            raise StoreError(f"{st.path} is not a readable gapseek store: {exc}") from None


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
    """``{category: count}`` of failure records, most frequent first."""
    out: dict[str, int] = {}
    for _, _, reason in failures:
        cat = reason.split(":", 1)[0]
        out[cat] = out.get(cat, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
