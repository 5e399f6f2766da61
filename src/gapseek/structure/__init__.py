"""Stage 1 — structure: inputs (CIF files, folders, path lists: :mod:`~gapseek.structure.inputs`) read into
ordered crystals (:mod:`~gapseek.structure.cif`, with :mod:`~gapseek.structure.symmetry` and
:mod:`~gapseek.structure.elements`)."""

from gapseek.structure.cif import Crystal, ReadSettings, crystal_from_bytes, read_crystal, read_input
from gapseek.structure.inputs import InputItem, collect_inputs, crystal_id

__all__ = ["Crystal", "InputItem", "ReadSettings", "collect_inputs", "crystal_from_bytes", "crystal_id",
           "read_crystal", "read_input"]
