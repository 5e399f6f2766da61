"""``gapseek ingest mp``: parse the criteria, call :func:`gapseek.ingest.mp.ingest_mp`, print what it wrote."""

from __future__ import annotations

import argparse

from gapseek.errors import ConfigError
from gapseek.ingest.mp import MPQuery, ingest_mp

__all__ = ["cmd_ingest_mp", "cmd_ingest_source", "parse_range"]


def parse_range(text: str | None, what: str, open_lo: float, open_hi: float, cast=float) -> tuple | None:
    """``"2.3:2.8"`` -> (2.3, 2.8); an empty side takes ``open_lo``/``open_hi``, the physical bound of the quantity
    (``":0.05"`` -> (0, 0.05) for an energy above hull); one number is an exact value."""
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        a = cast(lo) if lo.strip() else None
        b = (cast(hi) if hi.strip() else None) if sep else a
    except ValueError:
        raise ConfigError(f"--{what} {text!r}: give MIN:MAX (either side may be empty) or one number") from None
    if a is None and b is None:
        raise ConfigError(f"--{what} {text!r}: give at least one bound")
    return (open_lo if a is None else a, open_hi if b is None else b)


def _symbols(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def cmd_ingest_source(args: argparse.Namespace) -> int:
    raise ConfigError("name a source: `gapseek ingest mp OUT --band-gap 2.3:2.8` (the Materials Project; "
                      "`gapseek ingest mp --help`). A COD mirror needs no ingest: `gapseek index cod/cif --out STORE`")


def cmd_ingest_mp(args: argparse.Namespace) -> int:
    query = MPQuery(
        band_gap=parse_range(args.band_gap, "band-gap", 0.0, 100.0),
        energy_above_hull=parse_range(args.energy_above_hull, "energy-above-hull", 0.0, 100.0),
        formation_energy=parse_range(args.formation_energy, "formation-energy", -100.0, 100.0),
        num_sites=parse_range(args.num_sites, "num-sites", 1, 10**6, int),
        num_elements=parse_range(args.num_elements, "num-elements", 1, 118, int),
        elements=_symbols(args.elements), exclude_elements=_symbols(args.exclude_elements),
        chemsys=args.chemsys, is_stable=args.stable, theoretical=args.theoretical)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, initial=done, unit="cif", dynamic_ncols=True)
            else:
                bar.update(done - bar.n)
    try:
        res = ingest_mp(args.out, query, api_key=args.api_key, endpoint=args.endpoint, batch=args.batch,
                        restart=args.restart, progress=None if args.no_progress else progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"gapseek ingest mp: {res.n:,} materials (database {res.db_version}); {res.written:,} CIFs in "
          f"{res.out / 'cif'}" + (f" ({res.kept:,} from an earlier run)" if res.kept else "")
          + f" in {res.seconds:.1f} s")
    print(f"  labels: {res.labels}; provenance: {res.out / 'gapseek-source.json'}")
    if res.missing:
        print(f"  {len(res.missing)} listed without a structure (recorded in gapseek-source.json): "
              + ", ".join(res.missing[:5]) + (" ..." if len(res.missing) > 5 else ""))
    print(f"  next: gapseek index {res.out} --out STORE")
    return 0
