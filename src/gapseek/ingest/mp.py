"""``gapseek ingest mp``: crystals from the Materials Project summary endpoint, through its official client
(``mp-api``), written as CIFs with their properties and a labels CSV the search reads.

The download is two steps, both resumable:

1. the query (the criteria of :class:`MPQuery`) with the small fields only (:data:`FIELDS`) ->
   ``OUT/properties.csv`` and ``OUT/labels.csv`` (``id,band_gap``), and ``OUT/gapseek-source.json`` recording the
   database version the API reported, the date, the criteria and the client's version;
2. the structures, by material id in batches -> ``OUT/cif/<material_id>.cif``, each written whole (a crash
   leaves no half file). Run the same command again and only the missing CIFs are fetched; a database that moved
   to another version in between is refused (mixing releases), unless ``restart``.

The client retries HTTP 429, 502 and 504 itself (honouring ``Retry-After``); a batch that still fails (5xx, a
dropped connection) is tried again here ``retries`` times before the run stops, keeping everything written.
A query without criteria is refused: the client sends it to the database's bulk download (S3), not to the API.
The API key comes from ``api_key`` or ``$MP_API_KEY``; it is never logged or written.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path

from gapseek import __version__, config
from gapseek.errors import ConfigError, IngestError
from gapseek.fsutil import atomic_write, write_json
from gapseek.ingest.source import SOURCE_FILE, read_source

__all__ = ["FIELDS", "MPIngestResult", "MPQuery", "ingest_mp"]

log = logging.getLogger(__name__)

DATABASE = "Materials Project"
LICENCE = "CC-BY-4.0; cite Jain et al., APL Mater. 1, 011002 (2013)"
FIELDS = ("material_id", "formula_pretty", "band_gap", "energy_above_hull", "formation_energy_per_atom",
          "is_stable", "theoretical", "nsites", "nelements")
PROPERTIES_FILE, LABELS_FILE, CIF_DIR = "properties.csv", "labels.csv", "cif"
_ID = re.compile(r"^[a-z]+-\d+$")


@dataclass(frozen=True)
class MPQuery:
    """Criteria of the summary endpoint (each None or empty: not a criterion). Ranges are ``(min, max)``,
    inclusive; ``elements``: every one present; ``exclude_elements``: none present; ``chemsys``: e.g.
    ``"Li-Fe-O"`` (exactly these elements)."""

    band_gap: tuple[float, float] | None = None
    energy_above_hull: tuple[float, float] | None = None
    formation_energy: tuple[float, float] | None = None
    num_sites: tuple[int, int] | None = None
    num_elements: tuple[int, int] | None = None
    elements: tuple[str, ...] = ()
    exclude_elements: tuple[str, ...] = ()
    chemsys: str | None = None
    is_stable: bool | None = None
    theoretical: bool | None = None

    def __post_init__(self) -> None:
        for f in ("band_gap", "energy_above_hull", "formation_energy", "num_sites", "num_elements"):
            r = getattr(self, f)
            if r is None:
                continue
            if len(r) != 2 or not all(isinstance(x, int | float) and math.isfinite(x) for x in r) or r[0] > r[1]:
                raise ConfigError(f"{f} {r!r}: give a range (min, max) with min <= max")
        if self.band_gap is not None and self.band_gap[1] < 0:
            raise ConfigError(f"band_gap {self.band_gap}: band gaps are >= 0 eV")

    def criteria(self) -> dict:
        """Keyword arguments of the client's ``materials.summary.search``."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or v == ():
                continue
            out[f.name] = list(v) if f.name in ("elements", "exclude_elements") else v
        return out

    def as_record(self) -> dict:
        """The criteria as JSON values (what the provenance records)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.criteria().items()}

    def __bool__(self) -> bool:
        return bool(self.criteria())


@dataclass(frozen=True)
class MPIngestResult:
    """What :func:`ingest_mp` did: ``n`` materials matched, ``written`` CIFs now (``kept`` of them were there
    from an earlier run), ``missing``: ids the API listed but returned no structure for."""

    out: Path
    n: int
    written: int
    kept: int
    missing: tuple[str, ...]
    db_version: str
    seconds: float

    @property
    def labels(self) -> Path:
        return self.out / LABELS_FILE


def _client_version() -> str:
    try:
        return f"mp-api {metadata.version('mp-api')}"
    except metadata.PackageNotFoundError:
        return "mp-api (version unknown)"


def _unreachable(exc: BaseException, text: str) -> bool:
    """A connection that failed (requests' errors, or the client's MPRestError carrying their text)."""
    return ("Connection" in type(exc).__name__ or "Max retries exceeded" in text or "Failed to establish" in text
            or "timed out" in text)


def _is_transient(exc: BaseException) -> bool:
    text = str(exc)
    return any(f"status code {c}" in text for c in (500, 502, 503, 504, 429)) or _unreachable(exc, text)


def _explain(exc: BaseException, endpoint: str) -> str:
    """A one-line reason that names no secret (the client's messages carry URLs, never the key header)."""
    text = " ".join(str(exc).split())
    if re.search(r"status code (401|403)", text):
        return ("the server refused the API key (HTTP 401/403): check $MP_API_KEY (your key is on your "
                "Materials Project dashboard)")
    if "Valid API keys are 32 characters" in text:
        return "the API key is not a Materials Project key (those are 32 characters): check $MP_API_KEY"
    if _unreachable(exc, text):
        return f"cannot reach {endpoint}: {text[:300]}"
    return text[:500]


def _rester(api_key: str, endpoint: str | None):
    try:
        from mp_api.client import MPRester
    except ImportError as exc:  # pragma: no cover - mp-api is a dependency
        raise IngestError(f"the Materials Project client is not installed (pip install mp-api): {exc}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the client warns about emmet versions and missing keys; we check ourselves
        return MPRester(api_key=api_key, endpoint=endpoint, use_document_model=False, mute_progress_bars=True)


def ingest_mp(out: str | Path, query: MPQuery, api_key: str | None = None, endpoint: str | None = None,
              batch: int = 500, page: int = 1000, retries: int = 3, backoff: float = 2.0, restart: bool = False,
              progress: Callable[[int, int], None] | None = None) -> MPIngestResult:
    """Download the materials ``query`` matches into ``out`` (see the module docstring); resumable.
    ``batch``: structures per request; ``page``: materials per page of the query (the API serves at most 1,000).
    ``progress(done, total)`` after each batch of structures."""
    t0 = time.perf_counter()
    if not query:
        raise ConfigError("a query without criteria would download the whole Materials Project through the "
                          "client's bulk (S3) path, not the API: give at least one criterion, e.g. --band-gap 0:100")
    if batch < 1 or not 1 <= page <= 1000 or retries < 0 or backoff < 0:
        raise ConfigError(f"batch {batch}, page {page}, retries {retries}, backoff {backoff}: need batch >= 1, "
                          "1 <= page <= 1000, the others >= 0")
    key = api_key or config.mp_api_key()
    if not key:
        raise ConfigError("no Materials Project API key: set $MP_API_KEY (or pass --api-key)")
    endpoint = endpoint or config.mp_api_endpoint()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CIF_DIR).mkdir(exist_ok=True)
    where = endpoint or "the Materials Project API"
    try:
        mpr = _rester(key, endpoint)
    except Exception as exc:  # the client raises requests' and its own errors: one clear line, no secret
        raise IngestError(f"cannot start the Materials Project client: {_explain(exc, where)}") from None
    db_version = str(mpr.db_version or "unknown")
    record = read_source(out)
    if record is not None and not restart:
        if record.get("database") != DATABASE or record.get("query") != query.as_record():
            raise IngestError(f"{out} holds another download ({record.get('database')}, query "
                              f"{record.get('query')}); use another folder, or --restart to replace it")
        if record.get("release") != db_version:
            raise IngestError(f"{out} was downloaded from database version {record.get('release')}, the server "
                              f"now reports {db_version}: --restart to download it again from {db_version} "
                              "(mixing releases would make the labels inconsistent)")
    if record is None or restart or not (out / PROPERTIES_FILE).is_file():
        docs = _call(lambda: mpr.materials.summary.search(**query.criteria(), fields=list(FIELDS), chunk_size=page),
                     retries, backoff, where, "the query")
        rows = _rows(docs)
        _write_tables(out, rows)
        record = {"database": DATABASE, "release": db_version, "date": time.strftime("%Y-%m-%d"),
                  "date_kind": "queried", "query": query.as_record(), "n": len(rows), "fields": list(FIELDS),
                  "endpoint": _public(endpoint), "client": _client_version(), "gapseek_version": __version__,
                  "licence": LICENCE, "complete": False}
        if restart:
            for stale in (out / CIF_DIR).glob("*.cif"):
                stale.unlink()
        write_json(out / SOURCE_FILE, record)
        log.info("%d materials match %s (database %s)", len(rows), query.as_record(), db_version)
    ids = _ids(out)
    have = {p.stem for p in (out / CIF_DIR).glob("*.cif")}
    todo = [i for i in ids if i not in have]
    kept = len(ids) - len(todo)
    missing: list[str] = []
    done = kept
    if progress:
        progress(done, len(ids))
    for k in range(0, len(todo), batch):
        part = todo[k:k + batch]
        try:
            docs = _call(lambda part=part: mpr.materials.summary.search(
                material_ids=part, fields=["material_id", "structure"], chunk_size=len(part)),
                retries, backoff, where, "structures")
        except IngestError as exc:
            raise IngestError(f"{exc}; stopped after {done:,} of {len(ids):,} CIFs (kept in {out / CIF_DIR}): run "
                              "the same command again to fetch the rest") from None
        got = _write_cifs(out / CIF_DIR, docs)
        missing += [i for i in part if i not in got]
        done += len(got)
        if progress:
            progress(done, len(ids))
    record.update({"complete": True, "n_cifs": done, "missing": missing, "finished": time.strftime("%Y-%m-%d")})
    write_json(out / SOURCE_FILE, record)
    if missing:
        log.warning("%d material(s) listed by the query came without a structure: %s", len(missing),
                    ", ".join(missing[:10]))
    return MPIngestResult(out, len(ids), done, kept, tuple(missing), db_version, time.perf_counter() - t0)


def _public(endpoint: str | None) -> str | None:
    """The endpoint as recorded: scheme, host and path only (never credentials or a query string)."""
    if not endpoint:
        return None
    from urllib.parse import urlsplit

    u = urlsplit(endpoint)
    return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}{u.path}"


def _call(fn, retries: int, backoff: float, where: str, what: str):
    """``fn()``, tried again on transient failures (5xx, 429, dropped connections) ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:  # the client's MPRestError and requests' errors
            if attempt < retries and _is_transient(exc):
                wait = backoff * 2 ** attempt
                log.warning("%s failed (%s); trying again in %.0f s", what, _explain(exc, where)[:200], wait)
                time.sleep(wait)
                continue
            raise IngestError(f"{what}: {_explain(exc, where)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _rows(docs: Sequence[dict]) -> list[dict]:
    rows, seen = [], set()
    for d in docs:
        mid = str(d.get("material_id", ""))
        if not _ID.match(mid):
            raise IngestError(f"the API returned a material without a valid material_id: {mid!r}")
        if mid in seen:
            continue
        seen.add(mid)
        rows.append({f: d.get(f) for f in FIELDS})
    rows.sort(key=lambda r: (r["material_id"].split("-")[0], int(r["material_id"].split("-")[1])))
    return rows


def _write_tables(out: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FIELDS), lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    atomic_write(out / PROPERTIES_FILE, buf.getvalue().encode())
    lines = ["id,band_gap"] + [f"{r['material_id']},{r['band_gap']}" for r in rows if r["band_gap"] is not None]
    atomic_write(out / LABELS_FILE, ("\n".join(lines) + "\n").encode())


def _ids(out: Path) -> list[str]:
    with open(out / PROPERTIES_FILE, newline="", encoding="utf-8") as fh:
        return [r["material_id"] for r in csv.DictReader(fh)]


def _write_cifs(folder: Path, docs: Sequence[dict]) -> set[str]:
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    got = set()
    for d in docs:
        mid, raw = str(d.get("material_id", "")), d.get("structure")
        if not _ID.match(mid) or not raw:
            continue
        try:
            text = str(CifWriter(Structure.from_dict(raw)))
        except Exception as exc:  # a structure the API returned but pymatgen cannot write: left as missing
            log.warning("%s: cannot write its structure as CIF: %s", mid, exc)
            continue
        atomic_write(folder / f"{mid}.cif", text.encode())
        got.add(mid)
    return got
