"""MPI when the command runs under ``mpirun``/``mpiexec``/``srun``, serial otherwise.

mpi4py is imported only when the launcher's environment says there is more than one rank
(or ``MLPDESIGN_MPI=1`` forces it), so a plain serial run never initialises MPI and works
without mpi4py installed (``pip install 'mlpdesign[mpi]'`` brings it, with the ``mpich``
wheel from PyPI, or use a cluster's own MPI build of mpi4py).

Library API::

    world() -> Comm | None     # MPI.COMM_WORLD when running on more than one rank
    rank_size() -> (rank, size)   # (0, 1) when serial
    agree(comm, fn, *args)     # run fn on every rank; if any rank raised MlpdesignError,
                               # every rank raises the same one-line error
"""

from __future__ import annotations

import os

from mlpdesign.errors import MlpdesignError
from mlpdesign.launcher import launched_rank  # noqa: F401 - part of this API

#: launcher variables holding the number of ranks (MPICH/Hydra and PMI-2 under srun,
#: Open MPI, PMIx, Slurm's srun step)
_SIZE_VARS = (
    "PMI_SIZE",
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "SLURM_STEP_NUM_TASKS",
)

_WORLD: object = None
_CHECKED = False


def launched_size() -> int:
    """The number of ranks the launcher announced in the environment (1 if none)."""
    for var in _SIZE_VARS:
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return 1


def world():
    """``MPI.COMM_WORLD`` when running on more than one rank, else ``None``.

    ``MLPDESIGN_MPI=0`` forces serial mode, ``MLPDESIGN_MPI=1`` forces MPI (even with one
    rank, for testing the distributed code path in one process).
    """
    global _WORLD, _CHECKED
    if _CHECKED:
        return _WORLD
    force = os.environ.get("MLPDESIGN_MPI", "").strip()
    want = force == "1" or (force != "0" and launched_size() > 1)
    if want:
        try:
            from mpi4py import MPI
        except ImportError:
            raise MlpdesignError(
                "running under an MPI launcher but mpi4py is not installed: "
                "pip install 'mlpdesign[mpi]' (or your cluster's mpi4py)"
            ) from None
        comm = MPI.COMM_WORLD
        _WORLD = comm if (comm.Get_size() > 1 or force == "1") else None
        if _WORLD is not None and comm.Get_size() > 1:
            _abort_on_crash(comm)
            _share_cpus(comm)
    _CHECKED = True
    return _WORLD


def _abort_on_crash(comm) -> None:
    """An unexpected exception (a bug, not a one-line MlpdesignError, which every rank
    raises alike) on one rank would leave the others waiting in a collective forever:
    print the traceback, then abort the whole job."""
    import sys

    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


def _share_cpus(comm) -> None:
    """Ranks on one node share its CPUs: unless ``--threads`` or ``MLPDESIGN_THREADS`` says
    otherwise, each uses its share of the CPUs it may run on for kernel distances (srun
    gives each task its own CPUs; mpiexec without binding gives every rank all of them)."""
    from mlpdesign.kernels import core as kernels

    if os.environ.get("MLPDESIGN_THREADS", "").strip() or not hasattr(kernels, "set_threads"):
        return
    if getattr(kernels, "_EXECUTOR", [None, 0, None])[2] is not None:  # --threads given
        return
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_here = local.Get_size()
    finally:
        local.Free()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    if cpus >= (os.cpu_count() or cpus) and ranks_here > 1:  # not bound: share the node
        kernels.set_threads(max(1, cpus // ranks_here))


def rank_size() -> tuple[int, int]:
    """``(rank, size)`` of this process; ``(0, 1)`` when serial."""
    comm = world()
    return (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())


def agree(comm, fn, /, *args, **kwargs):
    """Run ``fn`` on every rank and make errors collective.

    If any rank raises :class:`MlpdesignError`, every rank raises it (the lowest rank's
    message), so all ranks exit with the same one-line error instead of a hang.
    """
    err = None
    out = None
    try:
        out = fn(*args, **kwargs)
    except MlpdesignError as e:
        err = (type(e).__name__, str(e), e.exit_code)
    if comm is None:
        if err is not None:
            raise _rebuild(err)
        return out
    errs = comm.allgather(err)
    first = next((e for e in errs if e is not None), None)
    if first is not None:
        raise _rebuild(first)
    return out


def _rebuild(err: tuple[str, str, int]) -> MlpdesignError:
    e = MlpdesignError(err[1])
    e.exit_code = err[2]
    return e
