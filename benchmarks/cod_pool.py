"""Build a rehearsal pool in COD's layout (``cif/1/00/00/1000000.cif``) from the real files in ../shared.

    python benchmarks/cod_pool.py OUT --n 100000 [--faults] [--seed 0]

Nothing of it is committed: it is generated on demand (100,000 files: ~1.5 GB, about a minute). Every file is a
real CIF from ../shared, perturbed (its cell lengths scaled by a random factor within +-0.5 %, its data block
renamed, a comment naming its source) so that all are distinct, and renamed to a COD id. The mix, by share of
files (COD's own statistics are not in ../shared; these follow its README: ~1-2 % fail to parse, a large share
of disordered entries, organic and metal-organic entries with large cells in their own id ranges):

- 55 % COD entries that read as ordered crystals (data/cod-robustness/with_cod_id), small and large cells,
- 20 % COD entries that are disordered or partially occupied (recorded as the failure ``disordered``),
- 23.5 % Materials Project crystals (data/mp-gap-36k: small inorganic cells),
- 1.5 % broken files and CIFs without a structure (cod-robustness's failing entries and no_structure/).

Ids follow COD's ranges, each with its own content, as in COD: 1xxxxxx and 9xxxxxx mostly small inorganic cells,
4xxxxxx and 7xxxxxx mostly large molecular cells, 2xxxxxx a mix. Sorted by id, heavy files cluster: shards of
equal file counts get very unequal work, as on the real COD.

``--faults`` adds the faults of a real run (each a file of its own, named in ``OUT/faults.tsv``): a file whose
neighbour search never ends (a cell of 179.9999 degrees), one on which the neighbour library dies of SIGFPE (a
cell a million angstroms long), a memory bomb (851 atoms 0.15 A apart: > 2 GB in the search), a corrupt file
(random bytes) and a truncated one. gapseek rejects the first three up front (``invalid-cell``) unless its cell
check is switched off (benchmarks/cod_rehearsal.py does so, to exercise the worker supervision).
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
COD = SHARED / "data" / "cod-robustness"
MP = SHARED / "data" / "mp-gap-36k" / "cifs"

MIX = (("cod-ordered", 0.55), ("cod-disordered", 0.20), ("mp", 0.235), ("broken", 0.015))
# id range -> weights of (small ordered, large ordered) among COD ordered entries, and the range's share of files
RANGES = ((1000000, 0.30, 0.9), (2000000, 0.20, 0.5), (4000000, 0.20, 0.1), (7000000, 0.20, 0.15),
          (9000000, 0.10, 0.95))
LARGE = 150  # estimated atoms in the cell from which a COD entry counts as large

_CELL = re.compile(rb"^(\s*_cell_length_[abc]\s+)([0-9.]+)", re.MULTILINE)
_DATA = re.compile(rb"^data_\S*", re.MULTILINE)


def cod_path(out: Path, cod_id: int) -> Path:
    s = str(cod_id)
    return out / "cif" / s[0] / s[1:3] / s[3:5] / f"{s}.cif"


def perturb(data: bytes, cod_id: int, source: str, rng: random.Random) -> bytes:
    factor = 1 + rng.uniform(-0.005, 0.005)

    def scale(m: re.Match) -> bytes:
        try:
            return m.group(1) + f"{float(m.group(2)) * factor:.5f}".encode()
        except ValueError:
            return m.group(0)

    data = _CELL.sub(scale, data)
    data = _DATA.sub(f"data_{cod_id}".encode(), data, count=1)
    return f"# gapseek rehearsal copy of {source}, cell x {factor:.6f}\n".encode() + data


def sources() -> dict[str, list[Path]]:
    from gapseek.structure.estimate import estimate_atoms

    if not COD.is_dir() or not MP.is_dir():
        sys.exit(f"{SHARED}/data is absent: this script builds the pool from ../shared")
    out: dict[str, list[Path]] = {"small": [], "large": [], "cod-disordered": [], "broken": [], "mp": []}
    with open(COD / "manifest.csv") as fh:
        for row in csv.DictReader(fh):
            path = COD / row["file"]
            if row["pymatgen"] != "ok":
                out["broken"].append(path)
            elif row["is_ordered_first"] == "False":
                out["cod-disordered"].append(path)
            else:
                out["large" if estimate_atoms(path.read_bytes()) >= LARGE else "small"].append(path)
    out["mp"] = sorted(MP.glob("*.cif"))
    return out


def build(out: Path, n: int, seed: int, faults: bool) -> dict[str, int]:
    rng = random.Random(seed)
    src = sources()
    cache: dict[Path, bytes] = {}
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    made = 0
    for base, share, small_weight in RANGES:
        m = round(n * share) if base != RANGES[-1][0] else n - made
        for k in range(m):
            kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
            if kind == "cod-ordered":
                kind = "small" if rng.random() < small_weight else "large"
            if kind == "mp" and base in (4000000, 7000000) and rng.random() < 0.8:
                kind = "large"  # few inorganic crystals in the molecular ranges
            path = rng.choice(src[kind])
            data = cache.get(path)
            if data is None:
                data = cache[path] = path.read_bytes()
            cid = base + k
            dest = cod_path(out, cid)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(perturb(data, cid, f"{path.parent.name}/{path.name}", rng))
            counts[kind] = counts.get(kind, 0) + 1
        made += m
    if faults:
        write_faults(out)
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    return counts


def _p1(cell, sites) -> str:
    a, b, c, al, be, ga = cell
    lines = [f"data_fault\n_cell_length_a {a}\n_cell_length_b {b}\n_cell_length_c {c}\n_cell_angle_alpha {al}\n"
             f"_cell_angle_beta {be}\n_cell_angle_gamma {ga}\n_symmetry_space_group_name_H-M 'P 1'\n"
             "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
             "_atom_site_fract_z\n_atom_site_occupancy\n"]
    lines += [f"{lab} {el} {x} {y} {z} 1\n" for lab, el, x, y, z in sites]
    return "".join(lines)


def write_faults(out: Path) -> None:
    nacl = [("Na1", "Na", 0, 0, 0), ("Cl1", "Cl", 0.5, 0.5, 0.5)]
    dense = [(i / 10, j / 10, round(k * 0.0093, 4)) for i in range(10) for j in range(10) for k in range(9)][:851]
    dense.append((0.05, 0.05, 0.5))
    mgo = (ROOT / "src" / "gapseek" / "data" / "examples" / "MgO.cif").read_bytes()
    faults = {
        # id: (what, bytes); ids inside the ranges, so each lands in some shard among good files
        1000777: ("hang: endless neighbour search", _p1((10, 10, 10, 179.9999, 90, 90), nacl).encode()),
        2000555: ("crash: SIGFPE in the neighbour library", _p1((1000000, 5, 5, 90, 90, 90), nacl).encode()),
        4000333: ("memory bomb: > 2 GB in the neighbour search",
                  _p1((1.5, 1.5, 15, 90, 90, 90), [(f"Na{k}", "Na", *p) for k, p in enumerate(dense)]).encode()),
        7000111: ("corrupt: random bytes", random.Random(1).randbytes(20000)),
        9000042: ("truncated: a CIF cut in its atom loop", mgo[: len(mgo) * 2 // 3]),
    }
    with open(out / "faults.tsv", "w") as fh:
        fh.write("id\tfault\n")
        for cid, (what, data) in faults.items():
            dest = cod_path(out, cid)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            fh.write(f"{cid}\t{what}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faults", action="store_true", help="add the fault files (listed in OUT/faults.tsv)")
    args = ap.parse_args()
    if (args.out / "cif").exists():
        sys.exit(f"{args.out}/cif exists; remove it first")
    counts = build(args.out, args.n, args.seed, args.faults)
    print(f"cod_pool: {args.n} files in {args.out}/cif ({counts.pop('seconds')} s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
