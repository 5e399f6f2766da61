"""Symmetry of a CIF data block: its operations (listed, or from the space group's name or number; repeats
dropped, more than any space group has refused) and the expansion of the asymmetric unit, following the
conventions of pymatgen's ``CifParser``: 1/3 and 2/3 coordinates snapped, images merged within a tolerance."""

from __future__ import annotations

import math

import numpy as np

from gapseek.errors import CrystalError
from gapseek.structure.values import column, num, short

__all__ = ["MAX_SYMMETRY_OPS", "distinct_ops", "match_earlier", "snap_thirds", "symmetry_ops", "unique_images", "wrap"]


_SYMOP_TAGS = (
    "_symmetry_equiv_pos_as_xyz",
    "_space_group_symop_operation_xyz",
    "_space_group_symop.operation_xyz",
    "_symmetry_equiv.pos_as_xyz",
)


_SG_NAME_TAGS = (
    "_symmetry_space_group_name_H-M",
    "_space_group_name_H-M_alt",
    "_space_group.name_H-M_alt",
    "_symmetry_space_group_name_Hall",
    "_space_group_name_Hall",
)


_SG_NUMBER_TAGS = ("_symmetry_Int_Tables_number", "_space_group_IT_number", "_space_group.IT_number")


def match_earlier(coords: np.ndarray, ops, identity_only: bool, atol: float) -> list[int]:
    """For each row, -1 if it starts a new site, else the index of the earlier site it is an image of."""
    n = len(coords)
    if identity_only:
        d = coords[:, None, :] - coords[None, :, :]
        d -= np.round(d)
        close = np.all(np.abs(d) < atol, axis=2)
        np.fill_diagonal(close, False)
        if not close.any():
            return [-1] * n
    owner: list[int] = []
    kept: list[int] = []
    rots = np.stack([r for r, _ in ops])
    trans = np.stack([t for _, t in ops])
    for i in range(n):
        hit = -1
        if kept:
            images = np.einsum("kij,j->ki", rots, coords[i]) + trans  # k x 3
            d = images[:, None, :] - coords[kept][None, :, :]
            d -= np.round(d)
            close = np.all(np.abs(d) < atol, axis=2)  # k x m
            if close.any():
                op_idx = int(np.argmax(close.any(axis=1)))
                hit = kept[int(np.argmax(close[op_idx]))]
        owner.append(hit)
        if hit < 0:
            kept.append(i)
    return owner


def snap_thirds(coords: np.ndarray, tol: float) -> np.ndarray:
    out = coords.copy()
    for ideal in (1 / 3, 2 / 3):
        out[np.abs(coords / ideal - 1.0) <= tol] = ideal
    return out


def symmetry_ops(block) -> list[tuple[np.ndarray, np.ndarray]]:
    import gemmi

    for tag in _SYMOP_TAGS:
        col = column(block, tag)
        if not col:
            continue
        ops = []
        for text in col:
            op = text.strip().strip("'\"")
            try:
                ops.append(gemmi.Op(op))
            except (RuntimeError, ValueError):  # never drop one: the others alone would build another crystal
                raise CrystalError("symmetry", f"block {block.name!r}: symmetry operation {short(op, 60)!r} "
                                   f"({tag}) cannot be parsed") from None
        return distinct_ops([op_matrices(op) for op in ops], block.name)
    for tag in _SG_NAME_TAGS:
        val = block.find_value(tag)
        if val is None or val.strip("'\" ") in ("", "?", "."):
            continue
        name = val.strip().strip("'\"")
        sg = gemmi.find_spacegroup_by_name(name) if "Hall" not in tag else None
        if sg is None:
            try:
                sg = gemmi.SpaceGroup(gemmi.symops_from_hall(name).find_spacegroup().hm) if "Hall" in tag else None
            except (RuntimeError, ValueError, AttributeError):
                sg = None
        if sg is not None:
            return [op_matrices(op) for op in sg.operations()]
    for tag in _SG_NUMBER_TAGS:
        n = num(block.find_value(tag))
        if not math.isnan(n) and 1 <= n <= 230:
            return [op_matrices(op) for op in gemmi.find_spacegroup_by_number(int(n)).operations()]
    return [(np.eye(3), np.zeros(3))]


MAX_SYMMETRY_OPS = 192  # the order of the largest space group in its conventional (centred) cell


def distinct_ops(ops: list[tuple[np.ndarray, np.ndarray]], block: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``ops`` with repeats dropped (translations compared modulo 1), first occurrence kept, in order; more than
    a space group can have is the failure ``symmetry``."""
    seen: set[bytes] = set()
    out = []
    for rot, tran in ops:
        key = (np.round(np.concatenate([rot.ravel(), np.mod(np.round(tran, 6), 1.0)]), 6) + 0.0).tobytes()
        if key not in seen:
            seen.add(key)
            out.append((rot, tran))
    if len(out) > MAX_SYMMETRY_OPS:
        raise CrystalError("symmetry", f"block {block!r} lists {len(out)} distinct symmetry operations; no space "
                           f"group has more than {MAX_SYMMETRY_OPS}")
    return out


def op_matrices(op) -> tuple[np.ndarray, np.ndarray]:
    den = float(op.DEN)
    return np.array(op.rot, dtype=float) / den, np.array(op.tran, dtype=float) / den


def wrap(v: np.ndarray) -> np.ndarray:
    return v - np.floor(v)


def unique_images(group: np.ndarray, ops, atol: float) -> np.ndarray:
    """All symmetry images of the ``m x 3`` group, wrapped into [0, 1), first occurrence kept."""
    rots = np.stack([r for r, _ in ops])  # k x 3 x 3
    trans = np.stack([t for _, t in ops])  # k x 3
    kept = np.empty((0, 3))
    for coord in group:
        images = wrap(np.einsum("kij,j->ki", rots, coord) + trans)
        d = images[:, None, :] - images[None, :, :]
        d -= np.round(d)
        close = np.all(np.abs(d) < atol, axis=2)
        first = ~np.any(np.tril(close, k=-1), axis=1)
        images = images[first]
        if len(kept):
            d = images[:, None, :] - kept[None, :, :]
            d -= np.round(d)
            images = images[~np.any(np.all(np.abs(d) < atol, axis=2), axis=1)]
        kept = np.concatenate([kept, images])
    return kept
