"""Benchmarks: repeated simulated campaigns over seeds, engines and targets, against exact baselines
(:mod:`~gapseek.search.benchmark.run`, :mod:`~gapseek.search.benchmark.targets`,
:mod:`~gapseek.search.benchmark.baselines`), their directory (:mod:`~gapseek.search.benchmark.logs`), summary
(:mod:`~gapseek.search.benchmark.summary`) and plots (:mod:`~gapseek.search.benchmark.plots`)."""
