"""Stage 6 — the search: acquisition functions, engines, campaigns on disk, and benchmarks."""
