"""What the MPI launcher announced in the environment, known without mpi4py or MPI_Init."""

from __future__ import annotations

import os

#: launcher variables holding this process's rank (MPICH/Hydra and PMI-2, Open MPI, PMIx,
#: MVAPICH, Slurm's srun step)
_RANK_VARS = (
    "PMI_RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "MV2_COMM_WORLD_RANK",
    "SLURM_PROCID",
)


def launched_rank() -> int:
    """This process's rank as the launcher announced it (0 if none)."""
    for var in _RANK_VARS:
        v = os.environ.get(var, "")
        if v.isdigit():
            return int(v)
    return 0
