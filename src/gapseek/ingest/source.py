"""Where a folder of crystals came from: ``gapseek-source.json`` beside the CIFs (written by ``gapseek ingest``),
and the one-line description of a store's provenance every report shows.

A provenance record is a plain JSON object. Keys every record may hold: ``database`` (``"Materials Project"``,
``"COD"``, ``"local files"``), ``release`` (the database version the API reported, or COD's newest file
revision), ``date`` (when it was queried, or the newest COD file date), ``query`` (the criteria), ``n``
(crystals), ``licence``. Secrets never enter it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from gapseek import __version__
from gapseek.errors import InputError

__all__ = ["SOURCE_FILE", "describe_provenance", "folder_provenance", "provenance_record", "read_source",
           "recorded_sources"]

SOURCE_FILE = "gapseek-source.json"


def read_source(folder: str | Path) -> dict | None:
    """The provenance record of ``folder`` (its ``gapseek-source.json``), or None when it has none."""
    path = Path(folder) / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable provenance record: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a provenance record (a JSON object)")
    return data


def recorded_sources(roots: Sequence[str | Path], paths: Sequence[str]) -> tuple[list[dict], list[bool]]:
    """The records of the input folders (each root folder, or its parent, with a ``gapseek-source.json``), each
    with ``root`` and ``n`` (how many of ``paths``, absolute, lie under it), and which paths they claim."""
    sources: list[dict] = []
    claimed = [False] * len(paths)
    for root in roots:
        r = Path(root)
        if not r.is_dir():
            continue
        for folder in (r, r.parent):
            rec = read_source(folder)
            if rec is None:
                continue
            prefix = os.path.abspath(folder) + os.sep
            n = 0
            for k, p in enumerate(paths):
                if not claimed[k] and p.startswith(prefix):
                    claimed[k] = True
                    n += 1
            if n:
                rec = {k: v for k, v in rec.items() if k not in ("missing", "fields")}
                sources.append({**rec, "root": str(root), "n": n})
            break
    return sources, claimed


def provenance_record(sources: list[dict], n_local: int, **extra) -> dict:
    """The provenance of a set of inputs: ``sources``, then ``n_local`` files of no known source as local files;
    when and by which gapseek it was taken; ``extra`` (the index's filter)."""
    if n_local:
        sources = [*sources, {"database": "local files", "n": n_local}]
    return {"sources": sources, **extra, "indexed": time.strftime("%Y-%m-%d"), "index_gapseek_version": __version__}


def folder_provenance(roots: Sequence[str | Path], paths: Sequence[str]) -> dict:
    """Provenance of inputs featurized without an index: the folders' records, the rest as local files."""
    sources, claimed = recorded_sources(roots, [os.path.abspath(p) for p in paths])
    return provenance_record(sources, claimed.count(False))


def _one(src: dict) -> str:
    text = str(src.get("database", "unknown source"))
    if src.get("release"):
        text += f" {src['release']}"
    if src.get("date"):
        text += f", {src.get('date_kind', 'queried')} {src['date']}"
    if src.get("query"):
        crit = ", ".join(f"{k} {_fmt(v)}" for k, v in src["query"].items())
        text += f" ({crit})"
    if src.get("n") is not None:
        text += f", {src['n']:,} crystals"
    return text


def _fmt(v) -> str:
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
        return f"{v[0]}..{v[1]}"
    if isinstance(v, list | tuple):
        return ",".join(map(str, v))
    return str(v)


def describe_provenance(prov: dict | None) -> str:
    """One line a report prints: where the crystals came from, and with which model and gapseek version."""
    if not prov:
        return "provenance: not recorded (a store written before gapseek recorded it)"
    sources = prov.get("sources") or []
    text = " + ".join(_one(s) for s in sources) or "sources not recorded"
    if prov.get("filter"):
        text += f"; filtered: {prov['filter']}"
    if prov.get("model_sha256"):
        text += f"; model sha256 {str(prov['model_sha256'])[:12]}"
    if prov.get("gapseek_version"):
        text += f"; gapseek {prov['gapseek_version']}"
    return f"data: {text}"
