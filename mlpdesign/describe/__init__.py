"""The describe stage: QUIP descriptors of a pool into a store (chunked, resumable, MPI).

One front door, :func:`run`: serial (``jobs`` worker processes, optionally one ``shard``
of the pool) or, given an MPI communicator of more than one rank, each rank describing
its part and rank 0 merging them. Either way the store is the same, byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlpdesign.errors import MlpdesignError


def run(
    pool: str | os.PathLike | list,
    output: str | os.PathLike,
    *,
    comm=None,
    shard: tuple[int, int] | None = None,
    **kwargs,
) -> Path | None:
    """Describe ``pool`` into ``output``; the engine follows ``comm`` (None: serial).

    ``pool``: one input or a list (files any format ASE reads, glob patterns). ``kwargs``
    are those of :func:`mlpdesign.describe.runner.describe` (gap, jobs, chunk_size, dtype,
    force, restart, command, log, progress, min_distance). Under MPI only rank 0
    returns the path; the other ranks return None.
    """
    if comm is None:
        from mlpdesign.describe.runner import describe

        return describe(pool, output, shard=shard, **kwargs)
    from mlpdesign.describe.mpi import describe_mpi

    if shard:
        raise MlpdesignError(
            "--shard and an MPI launch split the pool twice: use one of them "
            "(each rank of mpiexec/srun describes its own part)"
        )
    out = describe_mpi(pool, output, comm=comm, **kwargs)
    return out if comm.Get_rank() == 0 else None
