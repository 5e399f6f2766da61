"""Packed inputs: every CIF of an indexed store in one compressed file, ``STORE/inputs.h5``, in manifest order.

A parallel file system (Lustre, GPFS) serves a few large reads far better than 500,000 opens of 15 KiB files:
``gapseek index --pack`` reads each CIF once (to hash it, estimate its work and pack it); a shard task then
opens this one file and reads its rows' bytes in one contiguous request (a few tens of MB), instead of opening
every CIF of its shard. One file for the store rather than one per shard: one file more, not one per shard, on a
quota of files, striped over the file system's servers; each task still reads only its own byte range. Reading
that range into memory in one request is what staging to node-local disk would buy, without the copy.

Layout: ``data`` (uint8, gzip-compressed chunks of 1 MiB), ``offsets`` (int64, n + 1: entry k is
``data[offsets[k]:offsets[k+1]]``), ``packed`` (bool: False for a file that was not packed — unreadable at
index time, or over the size limit — which featurize reads from its path as before), and the attributes
``n_entries``, ``manifest_sha256s`` (sha256 over the manifest's content hashes, to tie the pack to its manifest)
and ``compression``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from gapseek.errors import StoreError

__all__ = ["PACK_FILE", "PackReader", "PackWriter", "hashes_digest", "pack_path"]

PACK_FILE = "inputs.h5"
PACK_SCHEMA = 1
_CHUNK = 1 << 20


def pack_path(store: str | Path) -> Path:
    return Path(store) / PACK_FILE


def hashes_digest(hashes) -> str:
    h = hashlib.sha256()
    for s in hashes:
        h.update(s.encode("ascii"))
    return h.hexdigest()


class PackWriter:
    """Appends entries in manifest order to a temporary pack; :meth:`commit` checks the count and renames it into
    place (a crash leaves no pack, never a short one)."""

    def __init__(self, store: str | Path, compression_level: int = 1) -> None:
        self.final = pack_path(store)
        self.tmp = self.final.with_name(f".{PACK_FILE}.{os.getpid()}.tmp")
        self._f = h5py.File(self.tmp, "w")
        self._data = self._f.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_CHUNK,),
                                            compression="gzip", compression_opts=compression_level)
        self._offsets = [0]
        self._packed: list[bool] = []
        self._buf: list[bytes] = []
        self._buffered = 0
        self.level = compression_level

    def add(self, data: bytes | None) -> None:
        """The next entry's bytes, or None for a file that is not packed (read from its path at featurize)."""
        self._packed.append(data is not None)
        if data:
            self._buf.append(data)
            self._buffered += len(data)
        self._offsets.append(self._offsets[-1] + (len(data) if data else 0))
        if self._buffered >= 16 * _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        blob = np.frombuffer(b"".join(self._buf), dtype=np.uint8)
        n0 = self._data.shape[0]
        self._data.resize((n0 + blob.size,))
        self._data[n0:] = blob
        self._buf, self._buffered = [], 0

    def commit(self, n_entries: int, digest: str) -> Path:
        """Finish the pack for the manifest of ``n_entries`` whose content hashes have the :func:`hashes_digest`
        ``digest``, and move it into place."""
        self._flush()
        if len(self._packed) != n_entries:
            raise StoreError(f"pack holds {len(self._packed)} entries, the manifest {n_entries}")
        f = self._f
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype=np.int64))
        f.create_dataset("packed", data=np.asarray(self._packed, dtype=bool))
        f.attrs.update({"pack_schema": PACK_SCHEMA, "n_entries": n_entries, "manifest_sha256s": digest,
                        "compression": f"gzip-{self.level}"})
        f.close()
        os.replace(self.tmp, self.final)
        return self.final

    def discard(self) -> None:
        if self._f:
            self._f.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.discard()


class PackReader:
    """``STORE/inputs.h5`` opened once for reading (without HDF5 file locking: nothing writes a finished pack, and
    many cluster file systems refuse the lock to hundreds of readers); :meth:`read` returns the bytes of manifest
    rows, one contiguous request each. A pack of another manifest (``digest``: its content hashes, recorded in
    both) is a :class:`StoreError`; each entry is checked against the manifest's sha256 by the featurizer, as a
    loose file is."""

    def __init__(self, store: str | Path, digest: str) -> None:
        self.path = pack_path(store)
        try:
            self._f = h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            raise StoreError(f"{self.path} is not a readable pack ({exc}); re-run `gapseek index ... --pack "
                             "--overwrite`") from None
        if self._f.attrs.get("pack_schema") != PACK_SCHEMA or self._f.attrs.get("manifest_sha256s") != digest:
            self._f.close()
            raise StoreError(f"{self.path} was not packed for this manifest; re-run `gapseek index ... --pack "
                             "--overwrite`")

    def read(self, start: int, stop: int) -> list[bytes | None]:
        """The bytes of rows ``start:stop`` (None for a row that is not packed)."""
        f = self._f
        try:
            offsets = f["offsets"][start:stop + 1]
            packed = f["packed"][start:stop]
            blob = f["data"][int(offsets[0]):int(offsets[-1])].tobytes() if stop > start else b""
        except (OSError, KeyError, ValueError) as exc:
            raise StoreError(f"{self.path}: rows {start}:{stop} cannot be read: {exc}") from None
        base = int(offsets[0]) if len(offsets) else 0
        return [blob[int(a) - base:int(b) - base] if p else None
                for a, b, p in zip(offsets[:-1], offsets[1:], packed)]

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *_) -> None:
        self.close()
