"""A local stand-in for the Materials Project API, on 127.0.0.1, for ``gapseek ingest mp`` without the internet.

It answers the calls the official client (``mp-api``) makes, in the shapes it expects: ``GET /heartbeat``
(``db_version``, ``access_controlled_batch_ids``, ``version``) and ``GET /materials/summary/`` with the summary
criteria (``band_gap_min``/``_max``, ``nsites_min``/``_max``, ``formation_energy_per_atom_min``/``_max``,
``nelements_min``/``_max``, ``elements``, ``exclude_elements``, ``chemsys``, ``material_ids``), ``_fields``,
``_limit``/``_skip`` pages and ``{"data": [...], "meta": {"total_doc": N, ...}}``. Its materials are real ones:
the crystals of ../shared/data/mp-gap-36k (ids, formulas, PBE gaps, formation energies from meta.csv; structures
parsed from their CIFs on demand). Fields that pool does not hold (``energy_above_hull``, ``is_stable``,
``theoretical``) are null, and a criterion on them matches nothing. The key is checked (``x-api-key``; 401
otherwise).

Faults for the tests: ``throttle`` (the next N data requests answer 429 with ``Retry-After: 0``), ``fail_after``
(once that many structures were served, structure requests answer 500 until it is cleared). It counts what it
served (``served``) and records each request's parameters (``requests``).

Run alone (the write-up example): ``python tests/mp_server.py --pool ../shared/data/mp-gap-36k --key KEY`` prints
its URL, then serves until stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DB_VERSION = "2021.05.13"  # the pool's snapshot is of 2021 (see ../shared/data/mp-gap-36k/README.md)
EMMET_VERSION = "0.87.3"
_NULL_FIELDS = ("energy_above_hull", "is_stable", "theoretical")


@dataclass
class _State:
    pool: Path
    key: str
    db_version: str
    rows: list[dict]
    throttle: int = 0
    fail_after: int | None = None
    served: int = 0
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _structures: dict = field(default_factory=dict)
    _elements: dict = field(default_factory=dict)

    def structure(self, mid: str) -> dict:
        if mid not in self._structures:
            import warnings

            from pymatgen.core import Structure

            with warnings.catch_warnings():  # pymatgen's notes on rounded coordinates: the CIFs are fine
                warnings.simplefilter("ignore")
                self._structures[mid] = Structure.from_file(self.pool / "cifs" / f"{mid}.cif").as_dict()
        return self._structures[mid]

    def elements(self, row: dict) -> frozenset[str]:
        mid = row["material_id"]
        if mid not in self._elements:
            from pymatgen.core import Composition

            self._elements[mid] = frozenset(str(e) for e in Composition(row["formula_pretty"]).elements)
        return self._elements[mid]


def _load(pool: Path) -> list[dict]:
    rows = []
    with open(pool / "meta.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({"material_id": r["material_id"], "formula_pretty": r["reduced_formula"],
                         "band_gap": float(r["band_gap"]), "nsites": int(r["nsites"]),
                         "formation_energy_per_atom": float(r["formation_energy_per_atom"]),
                         **{f: None for f in _NULL_FIELDS}})
    rows.sort(key=lambda r: int(r["material_id"].split("-")[1]))
    return rows


def _match(state: _State, row: dict, q: dict[str, str]) -> bool:
    for name, key in (("band_gap", "band_gap"), ("nsites", "nsites"),
                      ("formation_energy_per_atom", "formation_energy_per_atom"), ("energy_above_hull", None),
                      ("nelements", "nelements")):
        lo, hi = q.get(f"{name}_min"), q.get(f"{name}_max")
        if lo is None and hi is None:
            continue
        value = len(state.elements(row)) if name == "nelements" else row.get(key) if key else None
        if value is None or (lo is not None and value < float(lo)) or (hi is not None and value > float(hi)):
            return False
    for flag in ("is_stable", "theoretical"):
        if flag in q:
            return False  # the pool does not hold these: nothing matches
    if "material_ids" in q and row["material_id"] not in set(q["material_ids"].split(",")):
        return False
    if "elements" in q and not set(q["elements"].split(",")) <= state.elements(row):
        return False
    if "exclude_elements" in q and set(q["exclude_elements"].split(",")) & state.elements(row):
        return False
    if "chemsys" in q and state.elements(row) not in {frozenset(c.split("-")) for c in q["chemsys"].split(",")}:
        return False
    return True


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        st = self.state
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/")
        if path == "/heartbeat":
            return self._send(200, {"db_version": st.db_version, "access_controlled_batch_ids": [],
                                    "version": EMMET_VERSION})
        if path != "/materials/summary":
            return self._send(404, {"detail": "Not Found"})
        with st.lock:
            st.requests.append(dict(q))
            if self.headers.get("x-api-key") != st.key:
                return self._send(401, {"detail": "Invalid API key"})
            if st.throttle > 0:
                st.throttle -= 1
                return self._send(429, {"detail": "Too Many Requests"}, {"Retry-After": "0"})
            fields = [f for f in q.get("_fields", "").split(",") if f]
            wants_structure = "structure" in fields or q.get("_all_fields") in ("true", "True")
            if wants_structure and st.fail_after is not None and st.served >= st.fail_after:
                return self._send(500, {"detail": "Internal Server Error"})
        hits = [r for r in st.rows if _match(st, r, q)]
        skip, limit = int(q.get("_skip", 0)), int(q.get("_limit", 1000))
        page = hits[skip:skip + min(limit, 1000)]
        data = []
        for r in page:
            doc = dict(r)
            if wants_structure:
                doc["structure"] = st.structure(r["material_id"])
            data.append({f: doc.get(f) for f in fields} if fields else doc)
        if wants_structure:
            with st.lock:
                st.served += len(data)
        return self._send(200, {"data": data, "meta": {"api_version": EMMET_VERSION, "total_doc": len(hits),
                                                       "max_limit": 1000, "db_version": st.db_version}})


class MPServer:
    """The running server: ``url`` (for ``endpoint=`` / ``MP_API_ENDPOINT``) and its state's knobs."""

    def __init__(self, pool: Path, key: str, db_version: str = DB_VERSION) -> None:
        self.state = _State(Path(pool), key, db_version, _load(Path(pool)))
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __getattr__(self, name):
        return getattr(self.__dict__["state"], name)

    def set(self, **knobs) -> None:
        with self.state.lock:
            for k, v in knobs.items():
                setattr(self.state, k, v)


@contextmanager
def serve(pool: str | Path, key: str, db_version: str = DB_VERSION):
    server = MPServer(Path(pool), key, db_version)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", required=True, help="a folder laid out like ../shared/data/mp-gap-36k")
    ap.add_argument("--key", required=True, help="the API key the server accepts")
    ap.add_argument("--db-version", default=DB_VERSION)
    args = ap.parse_args()
    with serve(args.pool, args.key, args.db_version) as server:
        print(server.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
