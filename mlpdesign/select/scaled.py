"""The streamed/MPI library call of earlier releases: :func:`mlpdesign.select.run` with
blocks, returning the design only."""

from __future__ import annotations

from mlpdesign.kernels.blocks import BLOCK_ROWS
from mlpdesign.select.engine import Design
from mlpdesign.select.stage import run


def select_streamed(
    store_path,
    n: int,
    *,
    memory_limit=None,
    comm=None,
    method: str = "maxmin",
    block_rows: int = BLOCK_ROWS,
    progress=None,
    **options,
) -> Design:
    """Greedy ``method`` (a criterion name) on a store, streamed and/or over MPI ranks.

    ``memory_limit``: bytes or text (``"1G"``) for the kernel data and O(N) state of this
    rank (not the interpreter); ``comm``: an mpi4py communicator (None: serial);
    ``options``: as :func:`mlpdesign.select.run` (``first`` a candidate_id). The design is
    the same on every rank; its ``stats`` hold ``bytes_read``, ``blocks_read``,
    ``cache_hits``, ``blocks_skipped``, ``peak_cache_bytes``, ``blocks``,
    ``cached_blocks`` (this rank), ``ranks``, ``eps``, ``adds``, ``wall_s``.
    """
    factory = (lambda total, desc, initial=0: progress) if progress is not None else None
    _, design = run(
        store_path,
        n,
        None,
        criterion=method,
        memory_limit=memory_limit,
        comm=comm,
        block_rows=block_rows,
        progress_factory=factory,
        **options,
    )
    return design
