"""Turn command-line INPUTs (CIF files, directories, list files) into an ordered list of (id, path)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gapseek.errors import InputError

__all__ = ["InputItem", "collect_inputs", "crystal_id", "expand_input", "open_input", "read_path_list", "walk_cifs"]

log = logging.getLogger(__name__)

CIF_SUFFIXES = (".cif", ".mcif")


@dataclass(frozen=True)
class InputItem:
    """One input: its id, its path and, for an indexed store, the sha256 the manifest recorded (checked when
    the file is read: a file changed since ``index`` is the failure ``stale-input``); ``data``: its bytes when
    they come from packed inputs (then the path is not opened)."""

    id: str
    path: str
    sha256: str | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)


def crystal_id(path: str | Path) -> str:
    """The id of a CIF: its file name without the extension (COD: the 7-digit COD id). Bytes of a name that
    are not valid UTF-8 appear as ``\\xff`` escapes, so every id is plain text."""
    name = os.path.basename(str(path)).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    for suffix in CIF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def open_input(path: str | Path) -> tuple[int, os.stat_result]:
    """``(fd, stat)`` of an input opened for reading without blocking, so that a FIFO or a device named ``*.cif``
    never hangs a run (check ``stat.S_ISREG`` before reading); the caller closes ``fd``. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        return fd, os.fstat(fd)
    except OSError:
        os.close(fd)
        raise


def walk_cifs(directory: str | Path) -> list[Path]:
    """Every ``*.cif`` under ``directory`` (os.scandir, symlinked folders not followed), sorted."""
    found: list[str] = []
    stack = [str(directory)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as exc:
            log.warning("cannot list %s: %s", d, exc)
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.name.lower().endswith(CIF_SUFFIXES):
                found.append(e.path)
    return [Path(p) for p in sorted(found)]


def expand_input(raw: str | Path) -> list[Path]:
    """One INPUT: a ``.cif`` file, a directory (recursive, sorted), or a text file listing paths (relative to the
    list's folder; ``#`` comments). A missing INPUT is an :class:`InputError`."""
    p = Path(raw)
    if p.is_dir():
        paths = walk_cifs(p)
        if not paths:
            log.warning("%s holds no *.cif files", p)
        return paths
    if p.is_file() and p.name.lower().endswith(CIF_SUFFIXES):
        return [p]
    if p.is_file():
        return read_path_list(p)
    raise InputError(f"INPUT {raw} does not exist")


def read_path_list(list_file: Path) -> list[Path]:
    out: list[Path] = []
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read input list {list_file}: {exc}") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        out.append(p if p.is_absolute() else list_file.parent / p)
    return out


def collect_inputs(inputs: list[str | Path]) -> list[InputItem]:
    """Expand INPUTs in the order given: a ``.cif`` file, a directory (recursive, sorted), or a text file
    listing one path per line (relative to the list's folder; ``#`` comments). A missing INPUT is an error, and
    so are INPUTs that name no CIF at all; a missing path inside a list is kept and becomes a failure record
    later."""
    if not inputs:
        raise InputError("no INPUT given: name CIF files, directories or a file listing paths")
    items: list[InputItem] = []
    for raw in inputs:
        items.extend(InputItem(crystal_id(q), str(q)) for q in expand_input(raw))
    if not items:
        raise InputError(f"no CIF file in {', '.join(map(str, inputs))} (directories are searched recursively for "
                         f"{' and '.join('*' + s for s in CIF_SUFFIXES)} files; list files name one path per line)")
    dup = [k for k, n in Counter(i.id for i in items).items() if n > 1]
    if dup:
        log.warning("%d ids occur more than once (e.g. %s); each occurrence is kept with its path", len(dup), dup[:5])
    return items
