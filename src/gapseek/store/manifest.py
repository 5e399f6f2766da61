"""Stage 0 — the manifest: every input of a store, with a stable id and a content hash, in a fixed order.

``gapseek index ROOT... --out STORE`` walks CIF trees (COD's ``cif/1/00/00/1000000.cif``, plain folders, or
text files listing paths) into ``STORE/manifest.h5``: datasets ``ids``, ``paths`` (utf-8), ``sha256``
(hex), ``size`` (bytes), ``atoms_est`` (atoms in the cell, estimated from the text: the work of each file),
sorted by id; the shard plan in its attributes (and ``shard_starts`` for a plan balanced by work); ``packed``
(attribute) when ``--pack`` wrote the inputs into ``STORE/inputs.h5`` (:mod:`gapseek.store.pack`). Each file is
read once. Sharding, merging and
"which inputs were never processed" all refer to this one list.

What the text says about each file (:mod:`gapseek.structure.cifmeta`) is read from the same bytes: with a
composition filter (:class:`~gapseek.structure.select.ElementFilter`) the files it leaves out are not entries
but rows of ``STORE/filtered.tsv`` (id, path, reason); COD entries marked ``_cod_duplicate_entry`` are listed in
``STORE/cod-duplicates.tsv``. The ``provenance`` attribute (JSON) says where the entries came from: each input
folder's ``gapseek-source.json`` (written by ``gapseek ingest``), COD entries with the newest revision and date
their headers carry, the rest as local files; and the filter.

Ids are file stems (for COD, the COD id). Files that share an id are all kept: the first (by path) keeps the
id, the others get ``ID~2``, ``ID~3``... and every collision is listed in ``STORE/duplicates.tsv`` with whether
the contents are identical.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from gapseek import __version__
from gapseek.cluster.plan import ShardPlan, plan_shards, work_estimate
from gapseek.errors import InputError, StoreError
from gapseek.ingest.source import provenance_record, recorded_sources
from gapseek.store.pack import PackWriter, hashes_digest, pack_path
from gapseek.store.schema import STR, decode_strings, encode_strings
from gapseek.structure.cifmeta import CifMeta, cif_meta
from gapseek.structure.estimate import estimate_atoms
from gapseek.structure.inputs import crystal_id, expand_input, open_input
from gapseek.structure.select import ElementFilter

__all__ = ["MANIFEST_FILE", "Built", "IndexResult", "Manifest", "build_manifest", "entries_digest", "index_store",
           "input_tops", "is_indexed", "read_manifest", "read_plan", "walk_inputs", "write_manifest"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.h5"
DUPLICATES_FILE = "duplicates.tsv"
FILTERED_FILE = "filtered.tsv"
COD_DUPLICATES_FILE = "cod-duplicates.tsv"
MANIFEST_SCHEMA = 2  # 2: atoms_est, balanced plans (shard_starts), packed inputs
READABLE_SCHEMAS = (1, 2)
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
    atoms_est: np.ndarray | None = None  # None in a manifest written before estimates were kept
    pack_sha256s: str | None = None  # inputs packed in STORE/inputs.h5: the digest of the hashes the pack carries
    provenance: str | None = None  # JSON: where the inputs came from (:mod:`gapseek.ingest.source`); None: older

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def packed(self) -> bool:
        return self.pack_sha256s is not None

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


@dataclass(frozen=True)
class _Read:
    sha256: str
    size: int
    atoms: int
    data: bytes | None  # kept only when packing
    meta: CifMeta | None = None  # None: not read (unreadable, too large)


def _read_file(path: str, keep: bool, max_bytes: int) -> _Read:
    """Hash, size and estimated atoms of a regular file (its bytes too with ``keep``; a file over ``max_bytes``
    is hashed in blocks and neither estimated nor kept); ``_UNREADABLE`` for anything else (a missing or
    unreadable file, a FIFO, a device: opened without blocking, so none can hang the index); featurize records
    why."""
    try:
        fd, st = open_input(path)
    except OSError:
        return _Read(_UNREADABLE, -1, 0, None)
    try:
        if not stat.S_ISREG(st.st_mode):
            return _Read(_UNREADABLE, -1, 0, None)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            if st.st_size > max_bytes:  # too large to pack or to featurize: hashed in blocks, never held
                h, n = hashlib.sha256(), 0
                while block := fh.read(1 << 20):
                    h.update(block)
                    n += len(block)
                return _Read(h.hexdigest(), n, 0, None)
            data = fh.read()
    except OSError:
        return _Read(_UNREADABLE, -1, 0, None)
    finally:
        os.close(fd)
    return _Read(hashlib.sha256(data).hexdigest(), len(data), estimate_atoms(data),
                 data if keep and len(data) <= max_bytes else None, cif_meta(data))


def _ordered(paths: list[str]) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    """Ids and paths in manifest order (by id), and the renamed ids ``(id, new_id, path)``: files that share an
    id are all kept; the first (by path) keeps it, the others become ``ID~2``, ``ID~3``..."""
    entries = sorted(((crystal_id(p), p) for p in paths), key=lambda e: (e[0], e[1]))
    ids, out, renamed = [], [], []
    seen: dict[str, int] = {}
    for cid, p in entries:
        if cid in seen:
            seen[cid] += 1
            new_id = f"{cid}~{seen[cid]}"
            renamed.append((cid, new_id, p))
            cid = new_id
        else:
            seen[cid] = 1
        ids.append(cid)
        out.append(p)
    if renamed:  # renamed ids can break the sort order ("a~2" vs "a0"): keep the order stable by sorting again
        order = sorted(range(len(ids)), key=ids.__getitem__)
        ids, out = [ids[k] for k in order], [out[k] for k in order]
    return ids, out, renamed


class Built(NamedTuple):
    """What :func:`build_manifest` found: the manifest; id collisions ``(id, new_id, path, sha256,
    same_content_as_first)``; files left out ``(id, path, reason)``; COD entries marked as duplicates of another
    ``(id, duplicate_of, kept)``; files with several structures ``(id, blocks)``."""

    manifest: Manifest
    duplicates: list
    filtered: list
    cod_duplicates: list
    several: list


def build_manifest(
    roots: Sequence[str | Path],
    shard_size: int = 4096,
    num_shards: int | None = None,
    chunk_size: int = 256,
    threads: int = 8,
    progress: Callable[[int], None] | None = None,
    balance: bool = True,
    pack: PackWriter | None = None,
    max_pack_bytes: int = 64 << 20,
    select: ElementFilter | None = None,
    skip_cod_duplicates: bool = False,
) -> Built:
    """Walk, read (once), hash and sort the inputs; keep those ``select`` passes (and, with
    ``skip_cod_duplicates``, not marked ``_cod_duplicate_entry``); plan shards, balanced by estimated work unless
    not ``balance``; with ``pack``, append each kept file's bytes to it in manifest order (files over
    ``max_pack_bytes`` and unreadable ones are left out of the pack: featurize reads them from their path and
    records why they fail). The manifest carries the inputs' provenance (:func:`_provenance`)."""
    found = sorted({os.path.abspath(p) for p in walk_inputs(roots)})
    if not found:
        raise InputError(f"no *.cif files under {', '.join(map(str, roots))}")
    all_ids, all_paths, renamed = _ordered(found)
    hashes: list[str] = []
    sizes = np.empty(len(all_paths), dtype=np.int64)
    atoms = np.empty(len(all_paths), dtype=np.int64)
    kept = np.ones(len(all_paths), dtype=bool)
    # what provenance needs of each file, compact (500,000 CifMeta objects would hold ~250 MB): a COD entry?
    # its header's revision and date (YYYYMMDD; 0 unknown), marked as a duplicate?
    cod = np.zeros(len(all_paths), dtype=bool)
    cod_dup = np.zeros(len(all_paths), dtype=bool)
    revision = np.zeros(len(all_paths), dtype=np.int64)
    date = np.zeros(len(all_paths), dtype=np.int64)
    filtered, cod_dups, several = [], [], []
    keep = pack is not None
    read = functools.partial(_read_file, keep=keep, max_bytes=max_pack_bytes)
    # processes, not threads: the estimate is Python (GIL-bound). From a fork server, never a fork of this
    # process, which may hold the pack's HDF5 file open
    pool: Executor = (ProcessPoolExecutor(threads, mp_context=multiprocessing.get_context("forkserver"))
                      if threads > 1 and len(all_paths) > 2048 else ThreadPoolExecutor(1))
    with pool:
        for k in range(0, len(all_paths), 8192):  # bounded memory: one batch of files in flight
            batch = all_paths[k:k + 8192]
            for j, r in enumerate(pool.map(read, batch, chunksize=64)):
                row = k + j
                meta = r.meta
                why = None
                if meta is not None and select is not None:
                    why = select.reason(meta.elements)
                elif meta is None and select is not None and r.sha256 != _UNREADABLE:
                    why = "too large to read its formula"
                if meta is not None and meta.duplicate_of:
                    cod_dups.append((all_ids[row], meta.duplicate_of, why is None and not skip_cod_duplicates))
                    if why is None and skip_cod_duplicates:
                        why = f"COD duplicate of {meta.duplicate_of}"
                if why is not None:
                    kept[row] = False
                    filtered.append((all_ids[row], batch[j], why))
                    continue
                if meta is not None and len(meta.structure_blocks) > 1:
                    several.append((all_ids[row], meta.structure_blocks))
                hashes.append(r.sha256)
                if meta is not None and meta.cod_code:
                    cod[row], cod_dup[row] = True, meta.duplicate_of is not None
                    revision[row] = meta.revision or 0
                    date[row] = int(meta.date.replace("-", "")) if meta.date else 0
                sizes[row], atoms[row] = r.size, r.atoms
                if pack is not None:
                    pack.add(r.data)
            if progress:
                progress(len(batch))
    ids = [i for i, m in zip(all_ids, kept) if m]
    paths = [p for p, m in zip(all_paths, kept) if m]
    if not ids:
        raise InputError(f"the filter ({select.describe() if select else 'COD duplicates'}) leaves none of the "
                         f"{len(all_ids):,} files under {', '.join(map(str, roots))}")
    sizes, atoms = sizes[kept], atoms[kept]
    cod, cod_dup, revision, date = cod[kept], cod_dup[kept], revision[kept], date[kept]
    by_id = dict(zip(ids, hashes))  # a renamed entry's original id is the first file's
    duplicates = [(cid, new, p, by_id[new], by_id[new] == by_id.get(cid)) for cid, new, p in renamed if new in by_id]
    costs = work_estimate(atoms) if balance else None
    plan = plan_shards(len(ids), shard_size=shard_size, num_shards=num_shards, chunk_size=chunk_size, costs=costs)
    digest = hashes_digest(hashes) if pack is not None else None
    prov = _provenance(roots, paths, (cod, cod_dup, revision, date), select, len(filtered), skip_cod_duplicates)
    man = Manifest(ids, paths, hashes, sizes, plan, atoms_est=atoms, pack_sha256s=digest,
                   provenance=json.dumps(prov, sort_keys=True))
    return Built(man, duplicates, filtered, cod_dups, several)


def _provenance(roots: Sequence[str | Path], paths: list[str], cod_info: tuple[np.ndarray, ...],
                select: ElementFilter | None, n_filtered: int, skip_cod_duplicates: bool) -> dict:
    """Where the indexed files came from: the record (``gapseek-source.json``) of each root folder (or its parent)
    that has one, for the files under it; COD entries (files with ``_cod_database_code``) with the newest
    revision and date their headers carry; the rest as local files."""
    sources, claimed = recorded_sources(roots, paths)
    cod, cod_dup, revision, date = cod_info
    mine = cod & ~np.array(claimed, dtype=bool)
    n_cod = int(mine.sum())
    if n_cod:
        rev, day = int(revision[mine].max()), int(date[mine].max())
        sources.append({"database": "COD", "release": f"revision {rev} (newest file)" if rev else None,
                        "date": f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}" if day else None,
                        "date_kind": "newest file dated", "n": n_cod, "marked_duplicates": int(cod_dup[mine].sum()),
                        "licence": "CC0 (Crystallography Open Database)"})
    return provenance_record(sources, claimed.count(False) - n_cod, filter=select.describe() if select else None,
                             n_filtered=n_filtered, skip_cod_duplicates=skip_cod_duplicates)


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
        if manifest.atoms_est is not None:
            f.create_dataset("atoms_est", data=manifest.atoms_est, chunks=chunks, **kw)
        if manifest.plan.starts is not None:
            f.create_dataset("shard_starts", data=np.asarray(manifest.plan.starts, dtype=np.int64))
        f.attrs["packed"] = manifest.packed
        if manifest.packed:
            f.attrs["pack_sha256s"] = manifest.pack_sha256s
        f.attrs["manifest_schema"] = MANIFEST_SCHEMA
        f.attrs["gapseek_version"] = __version__
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        f.attrs["n_entries"] = n
        f.attrs["n_duplicate_ids"] = len(duplicates)
        if manifest.provenance is not None:
            f.attrs["provenance"] = manifest.provenance
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


def _write_table(path: Path, header: str, rows: Sequence[tuple]) -> Path | None:
    """A TSV of ``rows`` at ``path`` (written whole), or the file removed when there are none."""
    if not rows:
        path.unlink(missing_ok=True)
        return None
    lines = [header] + ["\t".join(",".join(x) if isinstance(x, tuple) else str(x) for x in r) for r in rows]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class IndexResult:
    """What :func:`index_store` wrote: the manifest (and its path), the id collisions, the pack (None when the
    inputs stay loose) and the seconds it took."""

    manifest: Manifest
    path: Path
    duplicates: list
    pack: Path | None
    seconds: float
    filtered: list = ()  # (id, path, reason) of the files the filter left out (STORE/filtered.tsv)
    cod_duplicates: list = ()  # (id, duplicate_of, kept) (STORE/cod-duplicates.tsv)
    several: list = ()  # (id, block names) of files with several structures (featurize records them as failures)

    @property
    def provenance(self) -> dict:
        return json.loads(self.manifest.provenance or "{}")


def index_store(roots: Sequence[str | Path], out: str | Path, shard_size: int = 4096, num_shards: int | None = None,
                chunk_size: int = 256, threads: int = 8, balance: bool = True, pack: bool = False,
                overwrite: bool = False, progress: Callable[[int], None] | None = None,
                select: ElementFilter | None = None, skip_cod_duplicates: bool = False) -> IndexResult:
    """``gapseek index``: :func:`build_manifest` (each file read once), the pack when ``pack`` (written first: a
    manifest never names a pack that is not there), then the manifest. An existing manifest is refused before
    anything is read unless ``overwrite``; a pack left from an earlier index is removed when this one is not
    packed."""
    t0 = time.perf_counter()
    store = Path(out)
    if (store / MANIFEST_FILE).exists() and not overwrite:
        raise StoreError(f"{store / MANIFEST_FILE} exists; pass --overwrite to re-index (finished shards that "
                         "still match their inputs are kept)")
    store.mkdir(parents=True, exist_ok=True)
    packed = None
    if pack:
        with PackWriter(store) as writer:
            built = build_manifest(roots, shard_size, num_shards, chunk_size, threads, progress, balance, writer,
                                   select=select, skip_cod_duplicates=skip_cod_duplicates)
            packed = writer.commit(len(built.manifest), built.manifest.pack_sha256s)
    else:
        built = build_manifest(roots, shard_size, num_shards, chunk_size, threads, progress, balance,
                               select=select, skip_cod_duplicates=skip_cod_duplicates)
    man, dups = built.manifest, built.duplicates
    path = write_manifest(store, man, dups, overwrite=True)
    _write_table(store / FILTERED_FILE, "id\tpath\treason", built.filtered)
    _write_table(store / COD_DUPLICATES_FILE, "id\tduplicate_of\tkept", built.cod_duplicates)
    if not pack and pack_path(store).exists():
        log.info("removing %s: it holds the inputs of an earlier index", pack_path(store))
        pack_path(store).unlink()
    return IndexResult(man, path, dups, packed, time.perf_counter() - t0, built.filtered, built.cod_duplicates,
                       built.several)


@contextmanager
def _open_manifest(store: str | Path):
    """``STORE/manifest.h5`` opened for reading, its schema checked; every problem is a :class:`StoreError`."""
    f5 = Path(store) / MANIFEST_FILE
    if not f5.is_file():
        raise StoreError(f"{store} has no {MANIFEST_FILE}; run `gapseek index ROOT... --out {store}` first")
    try:
        # no HDF5 file lock: a manifest is replaced whole (rename), never written in place, and many cluster
        # file systems refuse the lock to hundreds of readers
        with h5py.File(f5, "r", locking=False) as f:
            if f.attrs.get("manifest_schema") not in READABLE_SCHEMAS:
                raise StoreError(f"{f5} has manifest schema {f.attrs.get('manifest_schema')}, "
                                 f"this gapseek reads {', '.join(map(str, READABLE_SCHEMAS))}; re-run "
                                 "`gapseek index ... --overwrite` with this version")
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
            plan=_plan(f),
            offset=start,
            atoms_est=f["atoms_est"][sl] if "atoms_est" in f else None,
            pack_sha256s=str(f.attrs["pack_sha256s"]) if f.attrs.get("packed", False) else None,
            provenance=str(f.attrs["provenance"]) if "provenance" in f.attrs else None,
        )


def _plan(f: h5py.File) -> ShardPlan:
    return ShardPlan.from_attrs(f.attrs, f["shard_starts"][()] if "shard_starts" in f else None)


def read_plan(store: str | Path) -> ShardPlan:
    """The shard plan of ``store`` (its manifest's attributes, and the starts of a balanced plan)."""
    with _open_manifest(store) as f:
        return _plan(f)


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
