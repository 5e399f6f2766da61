"""A cheap estimate of how many atoms a CIF's cell holds, from its text alone (no structure parser).

``gapseek index`` reads every file once to hash it; this estimate is taken from the same bytes and plans shards
by work (featurizing a crystal costs about a fixed overhead plus a cost per atom of the cell). It takes the
atom-site loop (``_atom_site_fract_x/y/z``) and the symmetry operations (the loop ``_symmetry_equiv_pos_as_xyz`` /
``_space_group_symop_operation_xyz``; without it, the operations of the space group its H-M name or IT number
gives, from gemmi's tables), applies every operation to every site and counts the distinct positions in the
cell: atoms on special positions count once. The block is the first one with atom sites (COD files often begin
with a block of publication data), the one gapseek featurizes. Partial occupancies count every site (such files
fail as ``disordered``, fast). Where the coordinates cannot be read it falls back to sites x operations; a file
without an atom-site loop counts 0 atoms (its work is the fixed overhead: it fails fast).
"""

from __future__ import annotations

import functools
import re

import numpy as np

__all__ = ["estimate_atoms"]

_FRACT = (b"_atom_site_fract_x", b"_atom_site_fract_y", b"_atom_site_fract_z")
_SITE_TAGS = (b"_atom_site_fract_x", b"_atom_site_cartn_x")
_SYMOP_TAGS = (b"_symmetry_equiv_pos_as_xyz", b"_space_group_symop_operation_xyz", b"_space_group_symop.operation_xyz",
               b"_symmetry_equiv.pos_as_xyz")
_SG_NAME_TAGS = (b"_symmetry_space_group_name_h-m", b"_space_group_name_h-m_alt", b"_space_group.name_h-m_alt")
_SG_NUMBER_TAGS = (b"_symmetry_int_tables_number", b"_space_group_it_number", b"_space_group.it_number")
_NUMBER = re.compile(rb"^[-+]?(\d+\.?\d*|\.\d+)")


def estimate_atoms(data: bytes) -> int:
    """Atoms in the cell of the first data block of ``data`` (a CIF's bytes) that has atom sites, estimated (the
    block gapseek reads); 0 without sites."""
    site_tags: list[bytes] = []
    site_rows: list[bytes] = []
    symop_rows: list[bytes] | None = None
    symop_col = 0
    sg_name = sg_number = None
    lines = data.splitlines()
    k, n = 0, len(lines)
    while k < n:
        line = lines[k].strip()
        low = line[:5].lower()
        if low == b"data_":  # a new block: stop after the first block with atom sites, else start afresh
            if site_rows:
                break
            symop_rows, sg_name, sg_number = None, None, None
        elif low == b"loop_":
            tags = []
            k += 1
            while k < n and lines[k].lstrip()[:1] == b"_":
                tags.append(lines[k].strip().split()[0].lower())
                k += 1
            rows = []
            while k < n:
                row = lines[k].strip()
                head = row[:5].lower()
                if row[:1] == b"_" or head == b"loop_" or head == b"data_":
                    break
                if row and row[:1] != b"#":
                    rows.append(row)
                k += 1
            if not site_rows and any(t in _SITE_TAGS for t in tags):
                site_tags, site_rows = tags, rows
            elif symop_rows is None and any(t in _SYMOP_TAGS for t in tags):
                symop_rows = rows
                symop_col = next(j for j, t in enumerate(tags) if t in _SYMOP_TAGS)
            continue
        elif line[:1] == b"_":
            tag, _, value = line.partition(b" ")
            tag = tag.lower()
            if tag in _SG_NAME_TAGS and sg_name is None:
                sg_name = value.strip().strip(b"'\"").decode("ascii", "replace")
            elif tag in _SG_NUMBER_TAGS and sg_number is None:
                sg_number = value.strip().decode("ascii", "replace")
        k += 1
    if not site_rows:
        return 0
    if symop_rows:
        ops = _ops_from_strings(tuple(_symop_text(r, symop_col) for r in symop_rows))
    else:
        ops = _ops_of_space_group(sg_name, sg_number)
    coords = _fractional(site_tags, site_rows)
    if ops is None or coords is None:
        return len(site_rows) * (1 if ops is None else len(ops))
    return _count_in_cell(coords, ops)


def _symop_text(row: bytes, col: int) -> str:
    """The operation of one row of the symmetry loop: the quoted text, else the column's token(s)."""
    text = row.decode("ascii", "replace")
    for q in ("'", '"'):
        if text.count(q) >= 2:
            return text.split(q)[1]
    parts = text.split()
    return "".join(parts[col:]) if col < len(parts) else text


@functools.lru_cache(maxsize=4096)
def _ops_from_strings(texts: tuple[str, ...]) -> np.ndarray | None:
    """``n x 3 x 4`` float matrices (rotation | translation) of the operations, or None if one cannot be read."""
    import gemmi

    try:
        return np.array([np.array(gemmi.Op(t.replace(" ", "")).float_seitz())[:3] for t in texts])
    except (RuntimeError, ValueError):
        return None


@functools.lru_cache(maxsize=1024)
def _ops_of_space_group(name: str | None, number: str | None) -> np.ndarray | None:
    """The operations (centring included) of a space group given by H-M name or IT number; identity alone when
    neither is known."""
    import gemmi

    sg = None
    try:
        if name:
            sg = gemmi.find_spacegroup_by_name(name)
        if sg is None and number:
            sg = gemmi.find_spacegroup_by_number(int(number))
    except (ValueError, RuntimeError):
        sg = None
    if sg is None:
        return np.array([np.eye(4)[:3]])
    return np.array([np.array(op.float_seitz())[:3] for op in sg.operations()])


def _fractional(tags: list[bytes], rows: list[bytes]) -> np.ndarray | None:
    """``n x 3`` fractional coordinates of the sites, or None when they cannot be read."""
    try:
        cols = [tags.index(t) for t in _FRACT]
    except ValueError:
        return None
    out = np.empty((len(rows), 3))
    for i, row in enumerate(rows):
        values = row.split()
        if len(values) != len(tags):
            return None
        for j, c in enumerate(cols):
            m = _NUMBER.match(values[c])
            if m is None:
                return None
            out[i, j] = float(m.group(0))
    return out


def _count_in_cell(coords: np.ndarray, ops: np.ndarray) -> int:
    """Distinct images of each site under ``ops`` in the unit cell (positions equal within 1e-3), summed."""
    images = np.einsum("oij,sj->soi", ops[:, :, :3], coords) + ops[None, :, :, 3]  # sites x ops x 3
    grid = np.rint(images * 1000).astype(np.int64) % 1000
    keys = np.sort((grid[..., 0] * 1000 + grid[..., 1]) * 1000 + grid[..., 2], axis=1)
    return int(len(keys) + np.count_nonzero(np.diff(keys, axis=1)))
