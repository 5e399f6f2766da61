"""Stage 1 — CIF → :class:`Crystal`.

Two readers produce the same :class:`Crystal`:

* ``gemmi`` (the default): gemmi's CIF tokenizer plus our own symmetry expansion that follows the
  conventions of pymatgen's ``CifParser`` (what the original CGCNN code used through
  ``Structure.from_file``): 1/3 and 2/3 coordinates snapped within ``frac_tolerance``, symmetry images
  merged within ``site_tolerance`` (fractional, periodic), sites grouped by composition and finally ordered
  by electronegativity. About 50x faster than pymatgen on small cells.
* ``pymatgen``: ``CifParser`` itself, for exact parity with the original or for files gemmi's strict
  tokenizer rejects. ``auto`` uses gemmi and falls back to pymatgen on a CIF syntax error.

Every problem is raised as :class:`~gapseek.errors.CrystalError` with a short category
(``unreadable``, ``not-a-file``, ``too-large``, ``not-cif``, ``syntax``, ``symmetry``, ``no-structure``,
``several-structures`` (one id per file: a file of several crystals is not cut short to its first),
``invalid-cell``, ``disordered``, ``unknown-element``, ``too-many-atoms``) and a human-readable detail.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gapseek.errors import ConfigError, CrystalError
from gapseek.structure.elements import SiteKey, element_table, symbol, tuple_key
from gapseek.structure.inputs import open_input
from gapseek.structure.symmetry import match_earlier, snap_thirds, symmetry_ops, unique_images, wrap
from gapseek.structure.values import column, num, num_column, short

__all__ = ["Crystal", "ReadSettings", "crystal_from_bytes", "lattice_from_parameters", "read_crystal", "read_input"]

Reader = Literal["auto", "gemmi", "pymatgen"]
DisorderPolicy = Literal["fail", "majority"]


@dataclass(frozen=True)
class ReadSettings:
    """How CIF files become crystals.

    Attributes:
        reader: ``auto`` (gemmi, pymatgen on a CIF syntax error), ``gemmi`` or ``pymatgen``.
        disorder: ``fail`` records partially occupied / mixed sites as failure ``disordered``;
            ``majority`` keeps the majority occupant of every site (vacancies ignored).
        max_atoms: cells with more sites than this (after symmetry expansion) are failures.
        max_bytes: files larger than this are the failure ``too-large`` (reading costs ~3x a file's size in
            memory; COD's largest CIFs are a few MB).
        site_tolerance: fractional distance under which two symmetry images are the same site.
        frac_tolerance: relative tolerance for snapping coordinates to 1/3 and 2/3 (as pymatgen does).
    """

    reader: Reader = "auto"
    disorder: DisorderPolicy = "fail"
    max_atoms: int = 1000
    max_bytes: int = 100_000_000
    site_tolerance: float = 1e-4
    frac_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if self.reader not in ("auto", "gemmi", "pymatgen"):
            raise ConfigError(f"reader must be one of auto, gemmi, pymatgen; got {self.reader!r}")
        if self.disorder not in ("fail", "majority"):
            raise ConfigError(f"disorder must be one of fail, majority; got {self.disorder!r}")
        if self.max_atoms < 1:
            raise ConfigError(f"max_atoms must be >= 1; got {self.max_atoms}")
        if self.max_bytes < 1:
            raise ConfigError(f"max_bytes must be >= 1; got {self.max_bytes}")


@dataclass
class Crystal:
    """An ordered periodic crystal.

    Attributes:
        lattice: ``3 x 3`` row vectors (Å), pymatgen's convention for the orientation.
        frac: ``n x 3`` fractional coordinates in [0, 1).
        numbers: ``n`` atomic numbers.
        block: the CIF data block the crystal was read from.
    """

    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray
    block: str = ""

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def cart(self) -> np.ndarray:
        return self.frac @ self.lattice

    @property
    def formula(self) -> str:
        """Reduced formula, elements by electronegativity, e.g. ``GaAs``, ``SrTiO3``."""
        table = element_table()
        counts: dict[int, int] = {}
        for z in self.numbers.tolist():
            counts[z] = counts.get(z, 0) + 1
        div = math.gcd(*counts.values())
        order = sorted(counts, key=lambda z: table.sort_key[z])
        return "".join(f"{table.symbols[z]}{counts[z] // div if counts[z] > div else ''}" for z in order)


def check_input_size(size: int, max_bytes: int) -> None:
    """A :class:`CrystalError` ``too-large`` when an input of ``size`` bytes is over ``max_bytes``."""
    if size > max_bytes:
        raise CrystalError("too-large", f"{size} bytes > the limit of {max_bytes} bytes (--max-file-size)")


def read_input(path: str | Path, max_bytes: int = ReadSettings.max_bytes) -> bytes:
    """The bytes of one input file; a :class:`CrystalError` for anything that is not a readable regular file of
    at most ``max_bytes`` bytes. Opened without blocking, so a FIFO or a device named ``*.cif`` never hangs a
    run."""
    try:
        fd, st = open_input(path)
    except OSError as exc:
        raise CrystalError("unreadable", f"{type(exc).__name__}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                    or stat.S_ISBLK(st.st_mode) else "not a regular file")
            raise CrystalError("not-a-file", f"{kind}, not a regular file")
        check_input_size(st.st_size, max_bytes)
        parts = []
        left = max_bytes + 1  # the file may grow between fstat and read
        while left > 0:
            part = os.read(fd, min(left, st.st_size + 1 if not parts else 1 << 20))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
    except OSError as exc:
        raise CrystalError("unreadable", f"{type(exc).__name__}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise CrystalError("too-large", f"more than the limit of {max_bytes} bytes (--max-file-size)")
    return data


def read_crystal(path: str | Path, settings: ReadSettings = ReadSettings()) -> Crystal:
    """Read the first structure of a CIF file. Raises :class:`CrystalError` on any problem."""
    return crystal_from_bytes(read_input(path, settings.max_bytes), settings)


def crystal_from_bytes(data: bytes, settings: ReadSettings = ReadSettings()) -> Crystal:
    """The first structure of a CIF file's contents. Raises :class:`CrystalError` on any problem."""
    if not data.strip():
        raise CrystalError("no-structure", "the file is empty")
    if b"\x00" in data[:4096]:
        raise CrystalError("not-cif", "binary file (NUL bytes), not a CIF")
    if settings.reader == "pymatgen":
        crystal = _read_pymatgen(data, settings)
    else:
        try:
            crystal = _read_gemmi(data, settings)
        except _SyntaxProblem as exc:
            if settings.reader == "gemmi":
                raise CrystalError("syntax", str(exc)) from None
            try:
                crystal = _read_pymatgen(data, settings)
            except CrystalError as exc2:
                raise CrystalError(exc2.category, f"{exc2.detail} (gemmi: {exc})") from None
    if crystal.n_atoms > settings.max_atoms:
        raise CrystalError(
            "too-many-atoms", f"{crystal.n_atoms} sites in the cell > max_atoms={settings.max_atoms}"
        )
    return crystal


# --------------------------------------------------------------------------------------------- gemmi


class _SyntaxProblem(Exception):
    pass


def lattice_from_parameters(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Row-vector lattice with pymatgen's orientation (c along z), so distances agree to the last bit."""
    ar, br, gr = np.radians([alpha, beta, gamma])
    cos_a, cos_b, cos_g = np.cos([ar, br, gr])
    sin_a, sin_b = np.sin([ar, br])
    val = (cos_a * cos_b - cos_g) / (sin_a * sin_b)
    val = max(min(val, 1.0), -1.0)
    gamma_star = np.arccos(val)
    return np.array(
        [
            [a * sin_b, 0.0, a * cos_b],
            [-b * sin_a * np.cos(gamma_star), b * sin_a * np.sin(gamma_star), b * cos_a],
            [0.0, 0.0, float(c)],
        ]
    )


def several_structures(blocks: list[str]) -> CrystalError:
    """The failure of a file holding several structures: gapseek reads one crystal per input (an id per file), and
    taking the first block would silently drop the others."""
    names = ", ".join(blocks[:4]) + (f", ... ({len(blocks)} in all)" if len(blocks) > 4 else "")
    return CrystalError("several-structures", f"{len(blocks)} data blocks with atom sites ({names}); gapseek reads "
                        "one structure per file: split it into one file per block")


def _read_gemmi(data: bytes, settings: ReadSettings) -> Crystal:
    import gemmi

    try:
        doc = gemmi.cif.read_string(data.decode("utf-8", errors="replace"))
    except (RuntimeError, ValueError) as exc:
        raise _SyntaxProblem(short(str(exc))) from None
    several = [b.name for b in doc if b.find_values("_atom_site_fract_x") or b.find_values("_atom_site_Cartn_x")]
    if len(several) > 1:
        raise several_structures(several)
    first_error: CrystalError | None = None
    for block in doc:
        if block.find_value("_cell_length_a") is None and not block.find_values("_atom_site_fract_x"):
            continue
        try:
            return _crystal_from_block(block, settings)
        except CrystalError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    raise CrystalError("no-structure", f"no data block with a cell and atom sites ({len(doc)} blocks)")


_EYE3 = np.eye(3)


def _crystal_from_block(block, settings: ReadSettings) -> Crystal:
    name = block.name
    params = [num(block.find_value(f"_cell_{t}")) for t in ("length_a", "length_b", "length_c")]
    params += [num(block.find_value(f"_cell_angle_{t}")) for t in ("alpha", "beta", "gamma")]
    if any(math.isnan(p) for p in params[:3]):
        raise CrystalError("no-structure", f"block {name!r} has no complete cell (a, b, c)")
    params[3:] = [90.0 if math.isnan(p) else p for p in params[3:]]
    if min(params[:3]) <= 0 or not all(0 < p < 180 for p in params[3:]):
        raise CrystalError("invalid-cell", f"block {name!r}: cell {params}")
    lattice = lattice_from_parameters(*params)
    volume = float(abs(np.linalg.det(lattice)))
    if not np.isfinite(volume) or volume < 1e-3:
        raise CrystalError("invalid-cell", f"block {name!r}: cell volume {volume:.3g} Å^3")

    xs = column(block, "_atom_site_fract_x")
    if xs is None:
        raise CrystalError("no-structure", f"block {name!r} has a cell but no _atom_site_fract_x loop")
    ys = column(block, "_atom_site_fract_y")
    zs = column(block, "_atom_site_fract_z")
    if ys is None or zs is None or not len(xs) == len(ys) == len(zs):
        raise CrystalError("no-structure", f"block {name!r}: incomplete _atom_site_fract_x/y/z loop")
    types = column(block, "_atom_site_type_symbol")
    labels = column(block, "_atom_site_label")
    occs = column(block, "_atom_site_occupancy")
    symbols_src = types if types is not None else labels
    if symbols_src is None or len(symbols_src) != len(xs):
        raise CrystalError("no-structure", f"block {name!r}: atom sites without type symbol or label")

    ops = symmetry_ops(block)
    table = element_table()
    identity_only = len(ops) == 1 and np.array_equal(ops[0][0], _EYE3) and not ops[0][1].any()

    # rows -> arrays, in loop order ('OH', 'OH2' pseudo-atoms parse to "" and are skipped, as pymatgen does)
    raw = [v.strip().strip("'\"") for v in symbols_src]
    symbols = [symbol(v) for v in raw]
    coords_all = np.stack([num_column(xs), num_column(ys), num_column(zs)], axis=1)
    occ_all = num_column(occs) if occs is not None else np.ones(len(xs))
    rows = [i for i, sym in enumerate(symbols) if sym != ""]
    no_coord = np.isnan(coords_all).any(axis=1).tolist()
    for i in rows:  # the first bad row, in loop order, names the problem
        if no_coord[i]:
            raise CrystalError("no-structure", f"block {name!r}: atom site {raw[i]!r} has no coordinates")
        if symbols[i] is None or symbols[i] not in table.numbers:
            raise CrystalError("unknown-element", f"atom site {raw[i]!r} is not a chemical element")
    if not rows:
        raise CrystalError("no-structure", f"block {name!r} has no atoms")
    coords = coords_all[rows]
    zs_row = [table.numbers[symbols[i]] for i in rows]
    occ_sel = occ_all[rows]
    occ_row = np.where(np.isnan(occ_sel), 1.0, occ_sel).tolist()
    coord_arr = snap_thirds(coords, settings.frac_tolerance)

    # input sites that are images of an earlier one share it (pymatgen: get_matching_coord)
    owner = match_earlier(coord_arr, ops, identity_only, settings.site_tolerance)
    site_rows: list[int] = []
    site_species: dict[int, dict[int, float]] = {}
    for i, o in enumerate(owner):
        if o < 0:
            site_rows.append(i)
            site_species[i] = {zs_row[i]: occ_row[i]}
        else:
            sp = site_species[o]
            sp[zs_row[i]] = sp.get(zs_row[i], 0.0) + occ_row[i]

    site_z: list[int] = []
    for i in site_rows:
        species = site_species[i]
        total = sum(species.values())
        if not (len(species) == 1 and abs(total - 1.0) <= 1e-8) and settings.disorder == "fail":
            desc = " + ".join(f"{table.symbols[z]}:{o:g}" for z, o in species.items())
            where = np.round(coord_arr[i], 4).tolist()
            raise CrystalError(
                "disordered",
                f"site at {where} holds {desc} (use --disorder majority to keep the majority occupant)",
            )
        site_z.append(next(iter(species)) if len(species) == 1 else max(species.items(), key=lambda kv: kv[1])[0])

    # pymatgen's order: groups by composition (descending electronegativity, then symbol), each group
    # expanded by symmetry; then a stable sort of the sites by electronegativity (NaN compares as in Python)
    groups: dict[int, list[int]] = {}
    for k, z in enumerate(site_z):
        groups.setdefault(z, []).append(site_rows[k])
    frac_parts, z_parts = [], []
    n_total = 0
    for z in sorted(groups, key=lambda z: table.sort_key[z], reverse=True):
        group = coord_arr[groups[z]]
        expanded = wrap(group) if identity_only else unique_images(group, ops, settings.site_tolerance)
        n_total += len(expanded)
        if n_total > settings.max_atoms:
            raise CrystalError("too-many-atoms", f"more than max_atoms={settings.max_atoms} sites in the cell")
        frac_parts.append(expanded)
        z_parts.append(np.full(len(expanded), z, dtype=np.int64))
    frac = np.concatenate(frac_parts)
    numbers = np.concatenate(z_parts)
    zlist = numbers.tolist()
    no_nan = all(table.electroneg[z] == table.electroneg[z] for z in set(zlist))
    make_key = tuple_key if no_nan else SiteKey  # without NaN, plain tuples sort the same (and faster)
    keys = [make_key(table.electroneg[z], table.symbols[z]) for z in zlist]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return Crystal(lattice=lattice, frac=frac[order], numbers=numbers[order], block=name)


# --------------------------------------------------------------------------------------- elements


# ------------------------------------------------------------------------------------- pymatgen


def _read_pymatgen(data: bytes, settings: ReadSettings) -> Crystal:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pymatgen.io.cif import CifParser

        try:
            parser = CifParser.from_str(data.decode("utf-8", errors="replace"))
            structures = parser.parse_structures(primitive=False, on_error="ignore")
        except Exception as exc:  # pymatgen raises many types for broken files
            msg = short(f"{type(exc).__name__}: {exc}")
            category = "no-structure" if "no structures" in msg else "syntax"
            raise CrystalError(category, msg) from None
    if not structures:
        raise CrystalError("no-structure", "pymatgen found no structure in the file")
    if len(structures) > 1:
        raise several_structures([f"structure {k + 1}" for k in range(len(structures))])
    struct = structures[0]
    numbers = []
    for site in struct:
        comp = site.species
        ordered = len(comp) == 1 and abs(comp.num_atoms - 1.0) <= 1e-8
        if not ordered and settings.disorder == "fail":
            raise CrystalError("disordered", f"site {site.species_string} is partially occupied or mixed")
        el = max(comp.items(), key=lambda kv: kv[1])[0]
        z = getattr(el, "Z", 0)
        if not z:
            raise CrystalError("unknown-element", f"species {el} is not a chemical element")
        numbers.append(int(z))
    frac = np.array([site.frac_coords for site in struct], dtype=float)
    return Crystal(
        lattice=np.array(struct.lattice.matrix, dtype=float),
        frac=frac,
        numbers=np.array(numbers, dtype=np.int64),
    )
