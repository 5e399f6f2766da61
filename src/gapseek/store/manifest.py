"""Stage 0 — the manifest: every input of a store, with a stable id and a content hash, in a fixed order.

``gapseek index ROOT... --out STORE`` walks CIF trees (COD's ``cif/1/00/00/1000000.cif``, plain folders, or
text files listing paths) into ``STORE/manifest.h5``: datasets ``ids``, ``paths`` (utf-8), ``sha256``
(hex), ``size`` (bytes), sorted by id, and the shard plan in its attributes. Sharding, merging and
"which inputs were never processed" all refer to this one list.

Ids are file stems (for COD, the COD id). Files that share an id are all kept: the first (by path) keeps the
id, the others get ``ID~2``, ``ID~3``... and every collision is listed in ``STORE/duplicates.tsv`` with whether
the contents are identical.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from gapseek import __version__
from gapseek.cluster.plan import ShardPlan, plan_shards
from gapseek.errors import InputError, StoreError
from gapseek.store.schema import STR, decode_strings, encode_strings
from gapseek.structure.inputs import crystal_id, expand_input, open_input

__all__ = ["MANIFEST_FILE", "Manifest", "build_manifest", "entries_digest", "input_tops", "is_indexed", "read_manifest",
           "read_plan", "walk_inputs", "write_manifest"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.h5"
DUPLICATES_FILE = "duplicates.tsv"
MANIFEST_SCHEMA = 1
_UNREADABLE = "-" * 64  # the hash of a file that could not be read at index time (it fails at featurize)


@dataclass(frozen=True)
class Manifest:
    """``n`` inputs sorted by id, and the shard plan over them."""

    ids: list[str]
    paths: list[str]
    sha256: list[str]
    size: np.ndarray
    plan: ShardPlan
    offset: int = 0  # row of the full manifest where these entries start (a shard task reads only its rows)

    def __len__(self) -> int:
        return len(self.ids)

    def shard_digest(self, index: int) -> str:
        """sha256 over the ids and content hashes of shard ``index``: what a finished shard must match."""
        start, stop = self.plan.bounds(index)
        start, stop = start - self.offset, stop - self.offset
        if start < 0 or stop > len(self.ids):
            raise StoreError(f"shard {index} is outside the manifest rows that were read")
        return entries_digest(self.ids[start:stop], self.sha256[start:stop])


def entries_digest(ids: Sequence[str], hashes: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, s in zip(ids, hashes):
        h.update(i.encode("utf-8"))
        h.update(b"\0")
        h.update(s.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


def walk_inputs(roots: Iterable[str | Path]) -> Iterable[Path]:
    """CIF paths under ``roots`` (directories recursively, CIF files, text files listing paths)."""
    for raw in roots:
        yield from expand_input(raw)


def _hash_file(path: str) -> tuple[str, int]:
    """``(sha256, size)`` of a regular file; ``(_UNREADABLE, -1)`` for anything else (a missing or unreadable
    file, a FIFO, a device: opened without blocking, so none can hang the index); featurize records why."""
    h = hashlib.sha256()
    n = 0
    try:
        fd, st = open_input(path)
    except OSError:
        return _UNREADABLE, -1
    try:
        if not stat.S_ISREG(st.st_mode):
            return _UNREADABLE, -1
        with os.fdopen(fd, "rb", closefd=False) as fh:
            while block := fh.read(1 << 20):
                h.update(block)
                n += len(block)
    except OSError:
        return _UNREADABLE, -1
    finally:
        os.close(fd)
    return h.hexdigest(), n


def build_manifest(
    roots: Sequence[str | Path],
    shard_size: int = 4096,
    num_shards: int | None = None,
    chunk_size: int = 256,
    threads: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, list[tuple[str, str, str, str, bool]]]:
    """Walk, hash and sort the inputs; plan shards. Returns the manifest and the id collisions
    ``(id, new_id, path, sha256, same_content_as_first)``."""
    paths = sorted({os.path.abspath(p) for p in walk_inputs(roots)})
    if not paths:
        raise InputError(f"no *.cif files under {', '.join(map(str, roots))}")
    hashed: list[tuple[str, int]] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for k in range(0, len(paths), 4096):  # bounded number of pending futures
            batch = paths[k:k + 4096]
            hashed.extend(pool.map(_hash_file, batch))
            if progress:
                progress(len(batch))
    entries = sorted(((crystal_id(p), p, h, n) for p, (h, n) in zip(paths, hashed)), key=lambda e: (e[0], e[1]))
    ids, out_paths, hashes, sizes = [], [], [], []
    duplicates: list[tuple[str, str, str, str, bool]] = []
    seen: dict[str, tuple[int, str]] = {}  # id -> (count, first hash)
    for cid, p, h, n in entries:
        if cid in seen:
            count, first_hash = seen[cid]
            count += 1
            seen[cid] = (count, first_hash)
            new_id = f"{cid}~{count}"
            duplicates.append((cid, new_id, p, h, h == first_hash))
            cid = new_id
        else:
            seen[cid] = (1, h)
        ids.append(cid)
        out_paths.append(p)
        hashes.append(h)
        sizes.append(n)
    if duplicates:
        # renamed ids can break the sort order ("a~2" vs "a0"): keep the order stable by sorting again
        order = sorted(range(len(ids)), key=ids.__getitem__)
        ids = [ids[k] for k in order]
        out_paths = [out_paths[k] for k in order]
        hashes = [hashes[k] for k in order]
        sizes = [sizes[k] for k in order]
    plan = plan_shards(len(ids), shard_size=shard_size, num_shards=num_shards, chunk_size=chunk_size)
    return Manifest(ids, out_paths, hashes, np.asarray(sizes, dtype=np.int64), plan), duplicates


def write_manifest(store: str | Path, manifest: Manifest, duplicates=(), overwrite: bool = False) -> Path:
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    final = store / MANIFEST_FILE
    if final.exists() and not overwrite:
        raise StoreError(f"{final} exists; pass --overwrite to re-index (finished shards that still match "
                         "their inputs are kept)")
    tmp = store / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    kw = dict(compression="gzip", compression_opts=4, shuffle=True)
    n = len(manifest)
    chunks = (min(max(n, 1), 65536),)
    with h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=encode_strings(manifest.ids), dtype=STR, chunks=chunks, **kw)
        f.create_dataset("paths", data=encode_strings(manifest.paths), dtype=STR, chunks=chunks, **kw)
        f.create_dataset("sha256", data=np.array(manifest.sha256, dtype="S64"), chunks=chunks, **kw)
        f.create_dataset("size", data=manifest.size, chunks=chunks, **kw)
        f.attrs["manifest_schema"] = MANIFEST_SCHEMA
        f.attrs["gapseek_version"] = __version__
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        f.attrs["n_entries"] = n
        f.attrs["n_duplicate_ids"] = len(duplicates)
        for k, v in manifest.plan.as_attrs().items():
            f.attrs[k] = v
    os.replace(tmp, final)
    dup_file = store / DUPLICATES_FILE
    if duplicates:
        with open(dup_file, "w") as fh:
            fh.write("id\tnew_id\tpath\tsha256\tsame_content_as_first\n")
            for row in duplicates:
                fh.write("\t".join(str(x) for x in row) + "\n")
    else:
        dup_file.unlink(missing_ok=True)
    return final


@contextmanager
def _open_manifest(store: str | Path):
    """``STORE/manifest.h5`` opened for reading, its schema checked; every problem is a :class:`StoreError`."""
    f5 = Path(store) / MANIFEST_FILE
    if not f5.is_file():
        raise StoreError(f"{store} has no {MANIFEST_FILE}; run `gapseek index ROOT... --out {store}` first")
    try:
        with h5py.File(f5, "r") as f:
            if f.attrs.get("manifest_schema") != MANIFEST_SCHEMA:
                raise StoreError(f"{f5} has manifest schema {f.attrs.get('manifest_schema')}, "
                                 f"this gapseek reads {MANIFEST_SCHEMA}; re-run `gapseek index`")
            yield f
    except (OSError, KeyError) as exc:
        raise StoreError(f"{f5} is not a readable manifest: {exc}") from None


def read_manifest(store: str | Path, start: int = 0, stop: int | None = None) -> Manifest:
    """The manifest of ``store`` (rows ``start:stop`` only, to keep memory bounded in a shard task)."""
    with _open_manifest(store) as f:
        sl = slice(start, stop)
        return Manifest(
            ids=decode_strings(f["ids"][sl]),
            paths=decode_strings(f["paths"][sl]),
            sha256=decode_strings(f["sha256"][sl]),
            size=f["size"][sl],
            plan=ShardPlan.from_attrs(f.attrs),
            offset=start,
        )


def read_plan(store: str | Path) -> ShardPlan:
    """The shard plan of ``store`` (its manifest's attributes only)."""
    with _open_manifest(store) as f:
        return ShardPlan.from_attrs(f.attrs)


def is_indexed(store: str | Path) -> bool:
    """Whether ``store`` is a store directory made by ``gapseek index`` (it holds a manifest)."""
    return (Path(store) / MANIFEST_FILE).is_file()


def input_tops(store: str | Path) -> list[str]:
    """The top-level directories the inputs of an indexed store live under (``/scratch`` for
    ``/scratch/u/cifs/1.cif``), sorted: what a container must bind to read them."""
    with _open_manifest(store) as f:
        tops = set()
        for lo in range(0, f["paths"].shape[0], 65536):
            for p in decode_strings(f["paths"][lo:lo + 65536]):
                tops.add("/" + p.lstrip("/").split("/")[0])
        return sorted(tops)
