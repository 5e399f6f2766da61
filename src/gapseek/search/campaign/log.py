"""A campaign's logs as typed records: ``trials.csv`` (:class:`Trial`: every measurement, the prior first),
``suggestions.csv`` (:class:`Suggestion`: every proposal made to a lab, and every release) and ``failed.csv``
(:class:`Failure`: crystals a lab could not make or measure).

Each write replaces the whole file at once (temporary file, fsync, rename: :func:`gapseek.fsutil.atomic_write`),
the rows already there kept byte for byte, so a full disk or a crash leaves the old file, never part of a new one.
Reading checks the trials: a last row cut short is dropped (a whole one without its line end kept) and the file
repaired by the campaign; any other malformed line is a :class:`~gapseek.errors.CampaignError` naming it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from gapseek.errors import CampaignError
from gapseek.fsutil import atomic_write

__all__ = ["FAILED_FIELDS", "SUGGESTION_FIELDS", "TRIAL_FIELDS", "Failure", "Suggestion", "Trial", "TrialLog",
           "append_rows", "csv_text", "pending_ids", "read_failures", "read_suggestions", "read_trials",
           "suggestions_need_upgrade", "upgrade_suggestions"]

TRIAL_FIELDS = ["trial", "id", "formula", "band_gap", "abs_error", "hit", "engine", "source"]
SUGGESTION_FIELDS = ["time", "id", "formula", "why", "event"]
FAILED_FIELDS = ["id", "formula", "reason", "time"]
SOURCES = ("prior", "oracle", "lab", "lab-unsuggested")  # trials.csv's ``source``


@dataclass(frozen=True)
class Trial:
    """One measurement. ``trial``: 0 for the prior, then 1, 2, ... ``source``: ``prior``, ``oracle`` (a simulated
    trial), ``lab`` (a crystal the campaign suggested) or ``lab-unsuggested`` (told, never suggested)."""

    trial: int
    id: str
    formula: str
    band_gap: float
    abs_error: float
    hit: bool
    engine: str
    source: str

    @property
    def is_prior(self) -> bool:
        return self.source == "prior"

    def row(self) -> list[str]:
        return [str(self.trial), self.id, self.formula, repr(float(self.band_gap)), f"{self.abs_error:.6g}",
                str(int(self.hit)), self.engine, self.source]


@dataclass(frozen=True)
class Suggestion:
    """A proposal made to a lab (``event`` ``suggested``: in flight until told) or its release (``released``: will
    not be measured)."""

    time: str
    id: str
    formula: str
    why: str
    event: str = "suggested"

    def row(self) -> list[str]:
        return [self.time, self.id, self.formula, self.why, self.event]


@dataclass(frozen=True)
class Failure:
    """A crystal the lab could not make or measure: never proposed again, not a trial."""

    id: str
    formula: str
    reason: str
    time: str

    def row(self) -> list[str]:
        return [self.id, self.formula, self.reason, self.time]


def csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)  # \r\n line ends, as every log gapseek wrote
    return buf.getvalue()


def torn_tail(text: str) -> tuple[str, str]:
    """``(whole lines, last line without its newline)``: gapseek ends every row it writes with a newline."""
    if not text or text.endswith("\n"):
        return text, ""
    cut = text.rfind("\n") + 1
    return text[:cut], text[cut:]


def _parse_trials(path: Path, text: str, first_line: int = 1) -> list[tuple[int, Trial]]:
    """``(line number, trial)`` of the lines of ``text`` (no header; its first line is ``first_line``); a line
    that is not a whole trial is a CampaignError naming it."""
    out = []
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    for row in reader:
        k = first_line + start - 1
        start = reader.line_num + 1
        if not row:
            continue
        problem, trial = None, None
        if len(row) != len(TRIAL_FIELDS):
            problem = f"{len(row)} fields, expected {len(TRIAL_FIELDS)} ({','.join(TRIAL_FIELDS)})"
            if len(row) > len(TRIAL_FIELDS):
                problem += ("; a row cut short by an interrupted write (an older gapseek appended rows in place) with "
                            "the next row glued onto it?")
        else:
            t, cid, formula, gap, err, hit, engine, source = row
            try:
                trial = Trial(int(t), cid, formula, float(gap), float(err), bool(int(hit)), engine, source)
            except ValueError:
                problem = "trial, band_gap, abs_error or hit is not a number"
            if not cid.strip():
                problem = "no id"
        if problem:
            shown = ",".join(row)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise CampaignError(f"{path}, line {k} ({shown!r}): {problem}. The log is corrupt there: fix or delete "
                                "that line by hand (a measurement deleted must be told again), or start the "
                                "campaign anew with --overwrite")
        out.append((k, trial))
    return out


@dataclass(frozen=True)
class TrialLog:
    """``trials.csv`` as read: ``text``, what the file should hold (a torn last row dropped, a lost line end
    written back), its trials with their line numbers, and ``note``, what a repair would change (None when the
    file is whole)."""

    text: str
    lined: list[tuple[int, Trial]]
    note: str | None

    @property
    def trials(self) -> list[Trial]:
        return [t for _, t in self.lined]


def read_trials(path: Path) -> TrialLog:
    """Read and check ``trials.csv`` (see the module); a missing or unreadable file is a CampaignError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CampaignError(f"{path} is missing (deleted?): the campaign's measurements are not there; restore "
                            "it from a copy, or start the campaign anew with --overwrite") from None
    except UnicodeDecodeError as exc:
        raise CampaignError(f"{path} is not text ({exc}); restore it, or start anew with --overwrite") from None
    header = csv_text([TRIAL_FIELDS])
    if not text:  # an older gapseek, cut before its header
        return TrialLog(header, [], f"{path} was empty: its header is written back")
    whole, torn = torn_tail(text)
    if not whole:  # one line, no newline: a header cut short, or the header without its newline
        if torn.rstrip("\r") == ",".join(TRIAL_FIELDS):
            return TrialLog(header, [], f"{path}: the header's line end is written back")
        raise CampaignError(f"{path} starts with {torn[:60]!r}, not the header {','.join(TRIAL_FIELDS)}; "
                            "restore it, or start the campaign anew with --overwrite")
    first, _, body = whole.partition("\n")
    if first.rstrip("\r") != ",".join(TRIAL_FIELDS):
        raise CampaignError(f"{path} has columns {first.rstrip()!r}, not {','.join(TRIAL_FIELDS)} (not a "
                            "gapseek log, or another version's); restore it, or start anew with --overwrite")
    rows = _parse_trials(path, body, first_line=2)
    if not torn:
        return TrialLog(whole, rows, None)
    line = whole.count("\n") + 1
    try:
        last = _parse_trials(path, torn, first_line=line)
    except CampaignError:
        last = []
    if last:  # a whole row without its newline (a hand edit): kept
        return TrialLog(whole + torn.rstrip("\r") + "\r\n", rows + last,
                        f"{path}, line {line}: its line end is written back")
    return TrialLog(whole, rows, (f"{path}, line {line}: dropped {torn!r}, a row cut short by an interrupted write "
                                  "(an older gapseek wrote rows in place); if it was a measurement, tell it again"))


def append_rows(path: Path, text: str, header: list[str], rows: list) -> None:
    """Write ``text`` (the file's current whole rows; its header too, unless empty) and ``rows`` (records with a
    ``row()``) to ``path`` at once. Raises OSError (nothing written) on failure."""
    atomic_write(path, ((text or csv_text([header])) + csv_text([r.row() for r in rows])).encode())


def _dict_rows(path: Path) -> tuple[list[dict], str]:
    """The rows of a headed CSV log as dicts, and a last row cut short by an interrupted write ('' if none), which
    is left out."""
    if not path.is_file():
        return [], ""
    text, torn = torn_tail(path.read_text(encoding="utf-8"))
    return list(csv.DictReader(io.StringIO(text, newline=""))), torn


def read_suggestions(path: Path) -> list[Suggestion]:
    """Every suggestion and release of ``suggestions.csv``, in order (a log written before releases existed reads
    as all ``suggested``)."""
    rows, _ = _dict_rows(path)
    return [Suggestion(r.get("time") or "", r["id"], r.get("formula") or "", r.get("why") or "",
                       r.get("event") or "suggested") for r in rows if r.get("id")]


def read_failures(path: Path) -> list[Failure]:
    """The crystals of ``failed.csv``, in the order told."""
    rows, _ = _dict_rows(path)
    return [Failure(r["id"], r.get("formula") or "", r.get("reason") or "", r.get("time") or "")
            for r in rows if r.get("id")]


def whole_text(path: Path) -> tuple[str, str]:
    """A log's whole rows as text ('' when absent or empty) and its torn last row ('' if none)."""
    return torn_tail(path.read_text(encoding="utf-8") if path.is_file() else "")


def suggestions_need_upgrade(path: Path) -> bool:
    """Whether ``suggestions.csv`` was written before it had an ``event`` column (reads the header only)."""
    if not path.is_file() or not path.stat().st_size:
        return False
    with open(path, newline="") as fh:
        return next(csv.reader(fh), SUGGESTION_FIELDS) != SUGGESTION_FIELDS


def upgrade_suggestions(path: Path) -> None:
    """Give a ``suggestions.csv`` of gapseek 0.1 its ``event`` column (every row ``suggested``), atomically."""
    text, _ = whole_text(path)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    atomic_write(path, csv_text([SUGGESTION_FIELDS] + [r[:4] + ["suggested"] for r in rows[1:] if r]).encode())


def pending_ids(suggestions: list[Suggestion], done: set[str]) -> list[str]:
    """The ids suggested and in flight: neither released since nor in ``done`` (told, or failed), oldest
    suggestion first (a crystal suggested again while in flight keeps its first place)."""
    state: dict[str, bool] = {}
    for s in suggestions:
        in_flight = s.event != "released"
        if in_flight and state.get(s.id):
            continue
        state.pop(s.id, None)
        state[s.id] = in_flight
    return [c for c, live in state.items() if live and c not in done]
