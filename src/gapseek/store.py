"""Stage 4 — the HDF5 feature store: ``STORE/features.h5``.

Datasets (``n`` featurized crystals): ``ids``, ``paths``, ``formula`` (utf-8), ``prediction`` (n, float32, eV),
``pooled`` (n x 64 float32), ``hidden`` (n x 32 float32), ``n_atoms``, ``n_padded``, ``n_tied`` (int32);
group ``failures`` with ``ids``, ``paths``, ``reasons``. Attributes: model sha256s, graph settings, reader
settings, gapseek version, counts. Written to a temporary file (``.features.h5.HOST.PID.tmp``) and renamed on
success, so a crashed run never leaves a store that looks complete; a later writer of the same file removes the
temporary files of writers of its host that are gone (kill -9).

Checksums: numeric datasets carry HDF5's fletcher32 filter (a checksum per chunk), and every dataset, strings
included, the sha256 of its content in the attribute ``content_sha256``; :func:`verify_file` and
:func:`content_problem` read every chunk and check both. Files written before these existed have neither and are
checked by reading every chunk (a damaged compressed chunk does not decompress).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import h5py
import numpy as np

from gapseek.errors import CorruptStoreError, StoreError, StoreWriteError

__all__ = ["FEATURES_FILE", "FeatureRows", "FeatureStore", "StoreWriter", "content_problem", "decode_strings",
           "encode_strings", "export_csv", "features_path", "file_problem", "open_store", "remove_stale_temps",
           "temp_path", "verify_file"]

log = logging.getLogger(__name__)

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


FEATURE_DATASETS = ("ids", "paths", "formula", "prediction", "pooled", "hidden", "n_atoms", "n_padded", "n_tied")
FAILURE_DATASETS = ("ids", "paths", "reasons")
CONTENT_ATTR = "content_sha256"  # per dataset: sha256 of its content, see _content_bytes


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", os.uname().nodename) or "localhost"


def temp_path(directory: str | Path, filename: str) -> Path:
    """``DIR/.FILENAME.HOST.PID.tmp``: where a writer of ``DIR/FILENAME`` writes before the rename. Host and pid in
    the name tell a later run whether the writer is gone (see :func:`remove_stale_temps`)."""
    return Path(directory) / f".{filename}.{_host()}.{os.getpid()}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # alive but another user's / not a pid we can judge: keep its file
        return True
    return True


def remove_stale_temps(directory: str | Path, filename: str) -> list[Path]:
    """Remove the temporary files of ``DIR/FILENAME`` that a writer killed on this host left behind (kill -9, the
    OOM killer, a node's power cut): ``.FILENAME.HOST.PID.tmp`` of this host, and the ``.FILENAME.PID.tmp`` of
    gapseek 0.x, whose process is gone. Those of a live process, or of another host (whose processes cannot be
    seen from here), are kept."""
    directory = Path(directory)
    prefix, removed = f".{filename}.", []
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for p in candidates:
        parts = p.name[len(prefix):-len(".tmp")].split(".")
        host, pid = (_host(), parts[0]) if len(parts) == 1 else tuple(parts) if len(parts) == 2 else ("", "")
        if host != _host() or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            p.unlink()
        except OSError:
            continue
        removed.append(p)
        log.info("removed %s, left by an interrupted writer (pid %s is gone)", p, pid)
    return removed


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _errno(exc: BaseException) -> int | None:
    """The errno of an OSError, or the one HDF5 quotes in its message (``errno = 28``) when h5py raised another
    exception type (a failed flush at close is a RuntimeError)."""
    if isinstance(getattr(exc, "errno", None), int):
        return exc.errno
    m = re.search(r"errno = (\d+)", str(exc))
    return int(m.group(1)) if m else None


def _content_bytes(values) -> bytes:
    """The bytes a dataset's checksum covers, the same however its rows are split in blocks: numbers as
    little-endian arrays; strings (utf-8 bytes, never NUL inside in HDF5) each followed by a NUL."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    if len(values) == 0:
        return b""
    return b"\0".join(v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
                      for v in values) + b"\0"


def _discard(h5: h5py.File, name: str | Path) -> None:
    """Close a store file that is being thrown away (``name``: its path, for messages), without it writing anything
    to disk. HDF5 flushes every cached chunk and its metadata on close, and when the disk is full that flush
    fails: h5py then raises on close and at exit, and touching the half-closed file afterwards can crash the
    interpreter (seen: a segmentation fault after ``No space left on device``). So the library's file descriptor
    is first pointed at an anonymous in-memory file (``memfd``): the final flush goes there and cannot fail,
    and the half-written temporary file is released. After a failed close the file object is left alone."""
    try:
        if not h5.id.valid:
            return
        fd = int(h5.id.get_vfd_handle())
        try:
            sink = os.memfd_create("gapseek-discarded")
        except (AttributeError, OSError):  # not Linux: an anonymous temporary file
            with tempfile.TemporaryFile() as tmp:
                sink = os.dup(tmp.fileno())
        try:
            os.dup2(sink, fd)
        finally:
            os.close(sink)
    except Exception as exc:  # closing below is all that is left to try
        log.debug("could not detach %s before discarding it: %s", name, exc)
    try:
        h5.close()
    except Exception as exc:  # a failed flush leaves HDF5 unable to close it
        log.debug("closing the discarded %s: %s", name, exc)


class StoreWriter:
    """Append-only writer of ``features.h5`` (a context manager; commits on clean exit).

    It writes ``DIR/.FILENAME.HOST.PID.tmp`` and renames it to ``DIR/FILENAME`` on commit, so the file either
    appears complete or not at all; an earlier ``FILENAME`` stays as it was until then. Every numeric dataset
    has HDF5's fletcher32 checksum on each chunk, and every dataset (strings too, which HDF5 cannot checksum)
    the sha256 of its content in its attribute ``content_sha256``: see :func:`verify_file`. A failure to write
    (a full disk, a quota) is a :class:`StoreWriteError` with one line to say so; the temporary file is removed.
    """

    def __init__(self, store: str | Path, pooled_dim: int = 64, hidden_dim: int = 32, attrs: dict | None = None,
                 overwrite: bool = False, filename: str = FEATURES_FILE) -> None:
        self.dir = Path(store)
        self.final = self.dir / filename
        if self.final.exists() and not overwrite:
            raise StoreError(f"{self.final} exists; pass --overwrite to replace it")
        self.tmp = temp_path(self.dir, filename)
        self.h5: h5py.File | None = None
        self._ds: dict[str, h5py.Dataset] = {}
        self._fail: dict[str, h5py.Dataset] = {}
        self._hash: dict[str, hashlib._Hash] = {}
        self.n_ok = 0
        self.n_failed = 0
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.dir, filename)
            self.h5 = f = h5py.File(self.tmp, "w")
            kw = dict(compression="gzip", compression_opts=4, shuffle=True)
            num = dict(kw, fletcher32=True)  # HDF5 checksums chunks of fixed-size types only

            def make(group, name, dtype, width=None, chunk=CHUNK_ROWS):
                shape, chunks = ((0,), (chunk,)) if width is None else ((0, width), (chunk, width))
                maxshape = (None,) + shape[1:]
                opts = kw if dtype is _STR else num
                ds = group.create_dataset(name, shape, maxshape=maxshape, dtype=dtype, chunks=chunks, **opts)
                self._hash[ds.name] = hashlib.sha256()
                return ds

            self._ds = {
                "ids": make(f, "ids", _STR),
                "paths": make(f, "paths", _STR),
                "formula": make(f, "formula", _STR),
                "prediction": make(f, "prediction", "f4"),
                "pooled": make(f, "pooled", "f4", pooled_dim),
                "hidden": make(f, "hidden", "f4", hidden_dim),
                "n_atoms": make(f, "n_atoms", "i4"),
                "n_padded": make(f, "n_padded", "i4"),
                "n_tied": make(f, "n_tied", "i4"),
            }
            g = f.create_group("failures")
            self._fail = {k: make(g, k, _STR, chunk=1024) for k in FAILURE_DATASETS}
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
        except (OSError, RuntimeError) as exc:
            self._failed(exc)

    # ------------------------------------------------------------------------------------------ failures
    def _failed(self, exc: BaseException) -> NoReturn:
        """Abort (temporary file removed) and raise a one-line :class:`StoreWriteError` saying why."""
        existed = self.final.exists()
        self.abort()
        code = _errno(exc)
        cause = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}.get(
            code, _one_line(exc))
        kept = f"the existing {self.final.name} there is unchanged" if existed else "no store file was written"
        advice = ("; free space there (or write elsewhere) and run again"
                  if code in (errno.ENOSPC, errno.EDQUOT) else "")
        raise StoreWriteError(f"cannot write {self.final}: {cause} (its temporary file was removed; {kept})"
                              f"{advice}") from None

    def _put(self, ds: h5py.Dataset, values) -> None:
        n = len(values)
        if n == 0:
            return
        if isinstance(values, list):
            values = encode_strings(values) if isinstance(values[0], str) else values
        if not isinstance(values, list) and not (isinstance(values, np.ndarray) and values.dtype == object):
            values = np.asarray(values, dtype=ds.dtype)
        self._hash[ds.name].update(_content_bytes(values))
        try:
            start = ds.shape[0]
            ds.resize(start + n, axis=0)
            ds[start:] = values
        except (OSError, RuntimeError) as exc:
            self._failed(exc)

    def _check_open(self) -> h5py.File:
        if self.h5 is None:
            raise StoreError(f"the writer of {self.final} is closed already")
        return self.h5

    def write(self, rows: FeatureRows) -> None:
        self._check_open()
        if rows.n_ok:
            d = self._ds
            self._put(d["ids"], rows.ids)
            self._put(d["paths"], rows.paths)
            self._put(d["formula"], rows.formula)
            self._put(d["prediction"], np.asarray(rows.prediction, dtype=np.float32))
            self._put(d["pooled"], np.asarray(rows.pooled, dtype=np.float32))
            self._put(d["hidden"], np.asarray(rows.hidden, dtype=np.float32))
            self._put(d["n_atoms"], np.asarray(rows.n_atoms, dtype=np.int32))
            self._put(d["n_padded"], np.asarray(rows.n_padded, dtype=np.int32))
            self._put(d["n_tied"], np.asarray(rows.n_tied, dtype=np.int32))
            self.n_ok += rows.n_ok
        if rows.failures:
            ids, paths, reasons = zip(*rows.failures)
            self._put(self._fail["ids"], list(ids))
            self._put(self._fail["paths"], list(paths))
            self._put(self._fail["reasons"], list(reasons))
            self.n_failed += len(rows.failures)

    def append_file(self, src: str | Path, block: int = 65536, verify: bool = True) -> None:
        """Append every row of another store file (features and failures), streaming ``block`` rows at a time.

        With ``verify`` the source is checked as it is read (its chunks' checksums, and the content checksums
        of a file that has them): a :class:`CorruptStoreError` naming ``src`` if it fails; the rows appended
        from it so far are then in this writer, which should be aborted."""
        self._check_open()
        try:
            f = h5py.File(src, "r")
        except OSError as exc:
            raise CorruptStoreError(f"{src} is unreadable ({_one_line(exc)})") from None
        with f:
            problem = _layout_problem(f)
            if problem:
                raise CorruptStoreError(f"{src}: {problem}")
            for group, names, mine in ((f, FEATURE_DATASETS, self._ds), (f["failures"], FAILURE_DATASETS, self._fail)):
                n = group["ids"].shape[0]
                hashes = {k: hashlib.sha256() for k in names}
                for start in range(0, n, block):
                    for k in names:
                        values = _read_block(group[k], start, block)
                        if verify:
                            hashes[k].update(_content_bytes(values))
                        self._put(mine[k], values)
                if verify:
                    for k in names:
                        problem = _digest_problem(group[k], hashes[k])
                        if problem:
                            raise CorruptStoreError(f"{src}: {problem}")
                if group is f:
                    self.n_ok += n
                else:
                    self.n_failed += n

    def commit(self, extra_attrs: dict | None = None) -> Path:
        """Write the counts and checksums, flush and fsync, close, and rename into place. Returns the path."""
        h5 = self._check_open()
        try:
            for ds in (*self._ds.values(), *self._fail.values()):
                ds.attrs[CONTENT_ATTR] = self._hash[ds.name].hexdigest()
            h5.attrs["n_features"] = self.n_ok
            h5.attrs["n_failures"] = self.n_failed
            for k, v in (extra_attrs or {}).items():
                h5.attrs[k] = v
            h5.flush()
            os.fsync(int(h5.id.get_vfd_handle()))  # a full disk or quota on a network file system shows here
        except (OSError, RuntimeError) as exc:
            self._failed(exc)
        self._ds, self._fail = {}, {}
        try:
            h5.close()
            self.h5 = None
            os.replace(self.tmp, self.final)
        except (OSError, RuntimeError) as exc:
            self.h5 = h5
            self._failed(exc)
        try:  # make the rename durable too (best effort: not every file system can sync a directory)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        return self.final

    def abort(self) -> None:
        """Throw the temporary file away (idempotent); the earlier ``FILENAME``, if any, is untouched."""
        h5, self.h5 = self.h5, None
        if h5 is not None:
            _discard(h5, self.tmp)  # before the datasets go: closing them would flush their chunks to the disk
        self._ds, self._fail = {}, {}
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s: %s", self.tmp, exc)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.h5 is not None:
                self.commit()
        else:
            self.abort()


def _read_block(ds: h5py.Dataset, start: int, block: int):
    """Rows ``start:start+block`` of ``ds``; a chunk that fails its checksum or cannot be decompressed is a
    :class:`CorruptStoreError` naming the dataset and rows."""
    try:
        return ds[start:start + block]
    except (OSError, RuntimeError, ValueError) as exc:
        stop = min(start + block, ds.shape[0])
        why = ("a chunk fails its checksum or cannot be decompressed" if "filter" in str(exc).lower()
               else _one_line(exc, 160))
        raise CorruptStoreError(f"corrupt: dataset {ds.name.lstrip('/')} rows {start}..{stop - 1}: {why}") from None


def _digest_problem(ds: h5py.Dataset, digest) -> str | None:
    want = ds.attrs.get(CONTENT_ATTR)
    if want is None:  # written before content checksums: reading every chunk was the check
        return None
    if isinstance(want, bytes):
        want = want.decode()
    if digest.hexdigest() != want:
        return f"corrupt: the content of dataset {ds.name.lstrip('/')} does not match its checksum"
    return None


def _layout_problem(f: h5py.File) -> str | None:
    """What is missing or inconsistent in an open store file (datasets, their lengths, the counts), or None."""
    try:
        fail = f["failures"]
        n = f["ids"].shape[0]
        m = fail["ids"].shape[0]
        for k in FEATURE_DATASETS:
            if f[k].shape[0] != n:
                return f"inconsistent: dataset {k} has {f[k].shape[0]} rows, ids has {n}"
        for k in FAILURE_DATASETS:
            if fail[k].shape[0] != m:
                return f"inconsistent: dataset failures/{k} has {fail[k].shape[0]} rows, failures/ids has {m}"
        a = f.attrs
        if "n_features" not in a or "n_failures" not in a:
            return "not a finished store file (no n_features/n_failures attributes)"
        if int(a["n_features"]) != n or int(a["n_failures"]) != m:
            return (f"inconsistent: {n} features and {m} failures stored, the file says {int(a['n_features'])} "
                    f"and {int(a['n_failures'])}")
    except KeyError as exc:
        return f"not a gapseek store file (lacks {exc})"
    except (OSError, RuntimeError) as exc:
        return f"unreadable ({_one_line(exc, 160)})"
    return None


def content_problem(f: h5py.File, block: int = 65536) -> str | None:
    """Read every chunk of every dataset of an open store file and check it: None when it is intact, else a
    short description of the first problem. Files written before content checksums existed are checked by
    reading (a damaged compressed chunk fails to decompress); files written since also by their chunks'
    fletcher32 checksums and each dataset's sha256."""
    problem = _layout_problem(f)
    if problem:
        return problem
    try:
        for group, names in ((f, FEATURE_DATASETS), (f["failures"], FAILURE_DATASETS)):
            for k in names:
                ds = group[k]
                h = hashlib.sha256()
                for start in range(0, ds.shape[0], block):
                    h.update(_content_bytes(_read_block(ds, start, block)))
                problem = _digest_problem(ds, h)
                if problem:
                    return problem
    except CorruptStoreError as exc:
        return str(exc)
    return None


def file_problem(path: str | Path, block: int = 65536) -> str | None:
    """What is wrong with a store, part or block file's content (:func:`content_problem`), or that it cannot be
    opened; None when it is whole."""
    try:
        with h5py.File(path, "r") as f:
            return content_problem(f, block)
    except OSError as exc:
        return f"unreadable ({_one_line(exc, 160)})"


def verify_file(path: str | Path, block: int = 65536) -> None:
    """Check a store, part or block file by its content; a :class:`CorruptStoreError` naming it if it fails."""
    problem = file_problem(path, block)
    if problem:
        raise CorruptStoreError(f"{path}: {problem}")


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
