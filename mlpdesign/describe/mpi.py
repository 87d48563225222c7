"""describe over MPI ranks: each rank describes its shard, rank 0 merges the parts."""

from __future__ import annotations

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.blocks import Comm

# ---------------------------------------------------------------------------- describe


def _part_path(out, rank: int, size: int):
    from pathlib import Path

    out = Path(out)
    return out.with_name(f".{out.name}.mpi-{rank + 1}of{size}.h5")


def _reusable_part(path, command: str, shard: str) -> bool:
    """A finished part of an earlier run of the same command (killed before the merge)."""
    from mlpdesign.io.store import open_store

    if not path.is_file():
        return False
    try:
        with open_store(path, check=False) as s:  # merge_stores checks it
            return s.attrs.get("command") == command and s.attrs.get("shard") == shard
    except (MlpdesignError, OSError):
        return False


def describe_mpi(
    pool,
    output,
    *,
    comm,
    gap=None,
    jobs: int = 1,
    chunk_size=None,
    dtype: str = "float64",
    force: bool = False,
    restart: bool = False,
    command: str = "",
    progress=None,
    log=None,
    min_distance: float | None = None,
):
    """:func:`mlpdesign.describe.runner.describe` over the ranks of ``comm``: rank r describes
    shard r+1 of P (contiguous, ``--shard`` rules) into a hidden part file beside ``output``
    (itself resumable), then rank 0 merges the parts into ``output`` with the serial run's
    ``command`` and removes them. The store equals a serial run's in every dataset and
    attribute. A killed run continues where it stopped (each part from its chunks)."""
    from mlpdesign.describe.runner import describe
    from mlpdesign.generate.pool import shard_range
    from mlpdesign.io.atomic import check_output
    from mlpdesign.io.frames import MIN_DISTANCE, open_pool
    from mlpdesign.io.store import merge_stores

    c = Comm(comm)
    out = c.agree(check_output, output, force)
    md = MIN_DISTANCE if min_distance is None else min_distance
    n_pool = c.agree(lambda: open_pool(pool, md, species=False).n_configs if c.rank == 0 else None)
    n_pool = c.bcast(n_pool, root=0)
    shard = (c.rank + 1, c.size)
    count = shard_range(n_pool, *shard)[1]
    part = _part_path(out, c.rank, c.size)
    part_cmd = f"{command} [MPI rank {c.rank + 1} of {c.size}]"

    def mine():
        if count == 0:
            return None
        if not restart and _reusable_part(part, part_cmd, f"{shard[0]}/{shard[1]}"):
            if log is not None and c.rank == 0:
                log(f"resuming: part {part} is complete")
            return str(part)
        describe(
            pool,
            part,
            gap=gap,
            jobs=jobs,
            shard=shard,
            chunk_size=chunk_size,
            dtype=dtype,
            force=True,
            restart=restart,
            command=part_cmd,
            progress=progress if c.rank == 0 else None,
            log=log if c.rank == 0 else None,
            min_distance=md,
        )
        return str(part)

    parts = [p for p in c.allgather(c.agree(mine)) if p is not None]

    def merge():
        if c.rank != 0:
            return None
        merge_stores(parts, out, force=force, command=command)
        for p in parts:
            from pathlib import Path

            Path(p).unlink(missing_ok=True)
        return None

    c.agree(merge)
    return out
