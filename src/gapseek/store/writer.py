"""The one writer of store files (``features.h5``, and the part and block files of a sharded store): rows in,
content checksums on, written under a temporary name and renamed into place when complete; and the streamed,
verified copy of another store file's rows that a merge is made of (:meth:`StoreWriter.append_file`)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import NoReturn

import h5py
import numpy as np

from gapseek.errors import CorruptStoreError, StoreError, StoreWriteError
from gapseek.fsutil import remove_stale_temps, sync_dir, temp_path
from gapseek.store.check import digest_problem, layout_problem, one_line, read_block
from gapseek.store.schema import (
    CHUNK_ROWS,
    CONTENT_ATTR,
    FAILURE_DATASETS,
    FEATURE_DATASETS,
    FEATURES_FILE,
    SCHEMA_VERSION,
    STR,
    FeatureRows,
    ShardInfo,
    content_bytes,
    encode_strings,
)

__all__ = ["StoreWriter"]

log = logging.getLogger(__name__)


def _errno(exc: BaseException) -> int | None:
    """The errno of an OSError, or the one HDF5 quotes in its message (``errno = 28``) when h5py raised another
    exception type (a failed flush at close is a RuntimeError)."""
    if isinstance(getattr(exc, "errno", None), int):
        return exc.errno
    m = re.search(r"errno = (\d+)", str(exc))
    return int(m.group(1)) if m else None


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
                opts = kw if dtype is STR else num
                ds = group.create_dataset(name, shape, maxshape=maxshape, dtype=dtype, chunks=chunks, **opts)
                self._hash[ds.name] = hashlib.sha256()
                return ds

            self._ds = {
                "ids": make(f, "ids", STR),
                "paths": make(f, "paths", STR),
                "formula": make(f, "formula", STR),
                "prediction": make(f, "prediction", "f4"),
                "pooled": make(f, "pooled", "f4", pooled_dim),
                "hidden": make(f, "hidden", "f4", hidden_dim),
                "n_atoms": make(f, "n_atoms", "i4"),
                "n_padded": make(f, "n_padded", "i4"),
                "n_tied": make(f, "n_tied", "i4"),
            }
            g = f.create_group("failures")
            self._fail = {k: make(g, k, STR, chunk=1024) for k in FAILURE_DATASETS}
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
            code, one_line(exc))
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
        self._hash[ds.name].update(content_bytes(values))
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
            raise CorruptStoreError(f"{src} is unreadable ({one_line(exc)})") from None
        with f:
            problem = layout_problem(f)
            if problem:
                raise CorruptStoreError(f"{src}: {problem}")
            for group, names, mine in ((f, FEATURE_DATASETS, self._ds), (f["failures"], FAILURE_DATASETS, self._fail)):
                n = group["ids"].shape[0]
                hashes = {k: hashlib.sha256() for k in names}
                for start in range(0, n, block):
                    for k in names:
                        values = read_block(group[k], start, block)
                        if verify:
                            hashes[k].update(content_bytes(values))
                        self._put(mine[k], values)
                if verify:
                    for k in names:
                        problem = digest_problem(group[k], hashes[k])
                        if problem:
                            raise CorruptStoreError(f"{src}: {problem}")
                if group is f:
                    self.n_ok += n
                else:
                    self.n_failed += n

    def commit(self, extra_attrs: dict | None = None, shard: ShardInfo | None = None) -> Path:
        """Write the counts and checksums (and ``extra_attrs``; ``shard``: the attributes of a part or block file,
        which a merge leaves out), flush and fsync, close, and rename into place. Returns the path."""
        h5 = self._check_open()
        extra = dict(extra_attrs or {})
        if shard is not None:
            extra.update(shard.as_attrs())
        try:
            for ds in (*self._ds.values(), *self._fail.values()):
                ds.attrs[CONTENT_ATTR] = self._hash[ds.name].hexdigest()
            h5.attrs["n_features"] = self.n_ok
            h5.attrs["n_failures"] = self.n_failed
            for k, v in extra.items():
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
        sync_dir(self.dir)  # the rename survives a power cut too
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
