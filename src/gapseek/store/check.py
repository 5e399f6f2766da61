"""Checks of a store file's content (``features.h5``, a part or a block file): its layout and counts, every chunk
readable and passing its fletcher32 checksum, every dataset matching the sha256 written with it. Files written
before content checksums existed have none and are checked by reading every chunk (a damaged compressed chunk
does not decompress)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py

from gapseek.errors import CorruptStoreError
from gapseek.store.schema import CONTENT_ATTR, FAILURE_DATASETS, FEATURE_DATASETS, content_bytes

__all__ = ["content_problem", "file_problem", "verify_file"]


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_block(ds: h5py.Dataset, start: int, block: int):
    """Rows ``start:start+block`` of ``ds``; a chunk that fails its checksum or cannot be decompressed is a
    :class:`CorruptStoreError` naming the dataset and rows."""
    try:
        return ds[start:start + block]
    except (OSError, RuntimeError, ValueError) as exc:
        stop = min(start + block, ds.shape[0])
        why = ("a chunk fails its checksum or cannot be decompressed" if "filter" in str(exc).lower()
               else one_line(exc, 160))
        raise CorruptStoreError(f"corrupt: dataset {ds.name.lstrip('/')} rows {start}..{stop - 1}: {why}") from None


def digest_problem(ds: h5py.Dataset, digest) -> str | None:
    want = ds.attrs.get(CONTENT_ATTR)
    if want is None:  # written before content checksums: reading every chunk was the check
        return None
    if isinstance(want, bytes):
        want = want.decode()
    if digest.hexdigest() != want:
        return f"corrupt: the content of dataset {ds.name.lstrip('/')} does not match its checksum"
    return None


def layout_problem(f: h5py.File) -> str | None:
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
        return f"unreadable ({one_line(exc, 160)})"
    return None


def content_problem(f: h5py.File, block: int = 65536) -> str | None:
    """Read every chunk of every dataset of an open store file and check it: None when it is intact, else a
    short description of the first problem. Files written before content checksums existed are checked by
    reading (a damaged compressed chunk fails to decompress); files written since also by their chunks'
    fletcher32 checksums and each dataset's sha256."""
    problem = layout_problem(f)
    if problem:
        return problem
    try:
        for group, names in ((f, FEATURE_DATASETS), (f["failures"], FAILURE_DATASETS)):
            for k in names:
                ds = group[k]
                h = hashlib.sha256()
                for start in range(0, ds.shape[0], block):
                    h.update(content_bytes(read_block(ds, start, block)))
                problem = digest_problem(ds, h)
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
        return f"unreadable ({one_line(exc, 160)})"


def verify_file(path: str | Path, block: int = 65536) -> None:
    """Check a store, part or block file by its content; a :class:`CorruptStoreError` naming it if it fails."""
    problem = file_problem(path, block)
    if problem:
        raise CorruptStoreError(f"{path}: {problem}")
