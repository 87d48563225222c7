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


class PoolProgress:
    """Rank 0's progress over the whole pool: every rank's finished chunks, counted from the
    parts' ``.partial/`` folders beside the output (one shared folder), and finished parts.

    Given to rank 0's :func:`describe` as its progress factory; each of its own updates
    recounts all ranks. ``finish()`` fills the bar once every rank is done."""

    def __init__(self, progress, shards: list[tuple[int, int]], parts: list) -> None:
        self.shards, self.parts = shards, parts
        self.total = sum(c for _, c in shards)
        self.shown = self.count()
        self.bar = progress(self.total, self.shown)

    def count(self) -> int:
        """Configs described so far by every rank (finished parts and saved chunks)."""
        done = 0
        for (_, count), part in zip(self.shards, self.parts, strict=True):
            partial = part.with_name(part.name + ".partial")
            if part.is_file() and not partial.exists():
                done += count
                continue
            for chunk in partial.glob("chunk-*-*.npz"):
                a, b = chunk.stem.split("-")[1:3]
                done += int(b) - int(a)
        return min(done, self.total)

    def factory(self, total: int, initial: int):
        return self

    def update(self, k: int = 1) -> None:
        now = self.count()
        if now > self.shown:
            self.bar.update(now - self.shown)
            self.shown = now

    def close(self) -> None:  # rank 0's own part is done; the others may not be
        pass

    def finish(self) -> None:
        self.bar.update(self.total - self.shown)
        self.shown = self.total
        self.bar.close()


def _pool_progress(progress, c: Comm, n_pool: int, out) -> PoolProgress | None:
    """Rank 0's :class:`PoolProgress` (None on the other ranks, or without progress)."""
    from mlpdesign.generate.pool import shard_range

    if progress is None or c.rank != 0:
        return None
    shards = [shard_range(n_pool, r + 1, c.size) for r in range(c.size)]
    return PoolProgress(progress, shards, [_part_path(out, r, c.size) for r in range(c.size)])


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
    bar = _pool_progress(progress, c, n_pool, out)

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
            progress=bar.factory if bar is not None else None,
            log=log if c.rank == 0 else None,
            min_distance=md,
        )
        return str(part)

    parts = [p for p in c.allgather(c.agree(mine)) if p is not None]
    if bar is not None:
        bar.finish()

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
