"""Stage 3b — the cluster: a store's manifest cut into shards (:mod:`~gapseek.cluster.plan`, pure), each shard
featurized resumably into its part file (:mod:`~gapseek.cluster.shard`), their states (:mod:`~gapseek.cluster.parts`)
and the verified merge (:mod:`~gapseek.cluster.merge`), launched by Slurm arrays (``slurm/``), submitit
(:mod:`~gapseek.cluster.submit`) or MPI ranks (:mod:`~gapseek.cluster.mpi`). The library returns results; the CLI
prints them."""
