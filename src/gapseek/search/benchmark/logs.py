"""A benchmark directory: ``benchmark.json`` (format and the settings every row depends on) and its append-only
logs, one row per finished campaign (``runs.csv``), per trial (``trials.csv``) and per seed (``forecasts.csv``,
``ceilings.csv``), each row flushed and fsynced; a second writer of the same directory is refused."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from gapseek import __version__
from gapseek.errors import ConfigError, InputError
from gapseek.fsutil import file_lock, write_json

__all__ = ["BENCHMARK_FORMAT", "CEILING_FIELDS", "COMPARED", "FORECAST_FIELDS", "OUTPUTS", "RUN_FIELDS",
           "TRIAL_FIELDS", "append_rows", "drop_unfinished_trials", "labels_digest", "lock", "pool_digest",
           "read_ceilings", "read_forecasts", "read_log", "read_meta", "refuse_other_settings", "write_meta"]

log = logging.getLogger(__name__)

BENCHMARK_FORMAT = 1
RUN_FIELDS = ["engine", "seed", "first_hit", "found", "hits", "prior_hits", "seconds", "random_expected"]
TRIAL_FIELDS = ["engine", "seed", "trial", "id", "band_gap", "abs_error", "hit"]
# per seed, the forecast made from that seed's prior before any campaign (gapseek.search.forecast)
FORECAST_FIELDS = ["seed", "engine_first_hit", "engine_first_hit_lo", "engine_first_hit_hi", "q10", "q50", "q90",
                   "engine_hits", "random_first_hit", "pool_hits"]
# per seed, the ceiling: the first hit of ranking by a predictor whose error is the one the prior measured
CEILING_FIELDS = ["seed", "sigma", "ceiling_first_hit"]
# settings a resume must share with the recorded ones (the pool digest is checked once the pool is built)
COMPARED = ("store", "labels", "target", "tolerance", "budget", "batch", "prior", "label_range", "features",
            "vector", "components", "prediction_input")
OUTPUTS = ("benchmark.json", "runs.csv", "trials.csv", "forecasts.csv", "ceilings.csv", "summary.json",
           "curves.png")


def labels_digest(labels: dict[str, float]) -> str:
    h = hashlib.sha256()
    for cid in sorted(labels):
        h.update(f"{cid}\t{float(labels[cid])!r}\n".encode())
    return "sha256:" + h.hexdigest()


def pool_digest(ids: list[str], truth: np.ndarray) -> str:
    h = hashlib.sha256()
    for cid, gap in zip(ids, truth):
        h.update(f"{cid}\t{float(gap)!r}\n".encode())
    return "sha256:" + h.hexdigest()


def read_meta(out: Path) -> dict | None:
    path = out / "benchmark.json"
    if not path.is_file():
        if (out / "runs.csv").is_file():
            raise ConfigError(f"{out} holds a runs.csv without benchmark.json (written by an older gapseek, "
                              "which did not record its settings): it cannot be resumed safely; pass --overwrite "
                              "to start anew, or use another --out")
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); pass --overwrite to start anew") from None
    fmt = meta.get("gapseek_benchmark")
    if fmt != BENCHMARK_FORMAT:
        raise InputError(f"{out} was written by another gapseek version (benchmark format {fmt}, gapseek "
                         f"{meta.get('gapseek_version')}); this gapseek reads format {BENCHMARK_FORMAT}; pass "
                         "--overwrite to start anew")
    return meta


def write_meta(out: Path, record: dict, labels_path: str | Path | None) -> None:
    meta = {"gapseek_benchmark": BENCHMARK_FORMAT, "gapseek_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "labels_file": str(Path(labels_path).resolve()) if labels_path else None, "settings": record}
    write_json(out / "benchmark.json", meta)


def refuse_other_settings(out: Path, recorded: dict, now: dict, only: tuple[str, ...] = COMPARED) -> None:
    now = json.loads(json.dumps(now))  # tuples as lists, as recorded
    differ = [k for k in only if recorded.get(k) != now.get(k)]
    if not differ:
        return

    def show(k: str, v) -> str:
        if k == "pool" and isinstance(v, dict):
            return f"{v.get('size')} crystals, {v.get('hits')} hits, {str(v.get('sha256'))[:19]}"
        return str(v)[:19] if k == "labels" else str(v)

    what = "; ".join(f"{k}: recorded {show(k, recorded.get(k))}, now {show(k, now.get(k))}" for k in differ)
    raise ConfigError(f"{out} holds a benchmark with other settings ({', '.join(differ)} differ — {what}); its "
                      "rows cannot be mixed with these: pass --overwrite to start anew, or use another --out")


def read_log(path: Path, fields: list[str]) -> list[dict]:
    """The rows of an append-only log; a last row cut short by a crash (no newline) is removed from the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a row cut short by an interrupted write", path)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        data = data[:cut]
    lines = data.decode().splitlines()
    if not lines:
        return []
    header = next(csv.reader(lines[:1]))
    if header != fields:
        raise InputError(f"{path} has columns {','.join(header)}, not {','.join(fields)} (another gapseek "
                         "version?); pass --overwrite to start anew")
    rows = []
    for k, row in enumerate(csv.reader(lines[1:]), start=2):
        if not row:
            continue
        if len(row) != len(fields):
            raise InputError(f"{path}, line {k}: {len(row)} fields, expected {len(fields)}")
        rows.append(dict(zip(fields, row)))
    return rows


def append_rows(path: Path, fields: list[str], rows: list[list]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if new:
            w.writerow(fields)
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def drop_unfinished_trials(path: Path, done: set[tuple[str, int]]) -> None:
    """Remove (atomically) the trials of campaigns that have no ``runs.csv`` row: a crash mid-campaign."""
    rows = read_log(path, TRIAL_FIELDS)
    keep = [r for r in rows if (r["engine"], int(r["seed"])) in done]
    if len(keep) == len(rows):
        return
    log.info("%s: dropping %d trial(s) of unfinished campaigns", path, len(rows) - len(keep))
    tmp = path.with_name(".trials.csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRIAL_FIELDS)
        w.writerows([r[f] for f in TRIAL_FIELDS] for r in keep)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def lock(out: Path):
    """One writer per benchmark directory: a second ``run_benchmark`` on it fails at once."""
    return file_lock(out / ".benchmark.lock", f"the benchmark in {out}", wait=False, error=ConfigError)


def read_ceilings(out: Path) -> dict[int, dict]:
    return {int(r["seed"]): r for r in read_log(out / "ceilings.csv", CEILING_FIELDS)}


def read_forecasts(out: Path) -> dict[int, dict]:
    return {int(r["seed"]): r for r in read_log(out / "forecasts.csv", FORECAST_FIELDS)}
