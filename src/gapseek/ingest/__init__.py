"""Stage 0 — data in: crystals from a database (Materials Project: :mod:`~gapseek.ingest.mp`) into a folder of
CIFs with their labels and a provenance record (:mod:`~gapseek.ingest.source`)."""

from gapseek.ingest.source import SOURCE_FILE, describe_provenance, read_source

__all__ = ["SOURCE_FILE", "describe_provenance", "read_source"]
