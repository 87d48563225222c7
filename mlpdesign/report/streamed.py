"""Covering radii and the report over a pool streamed from HDF5 and/or split over MPI ranks."""

from __future__ import annotations

import contextlib
import math

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.blocks import (
    BLOCK_ROWS,
    Comm,
    DesignPoints,
    PoolShard,
    blas_one_thread,
    parse_memory,
)
from mlpdesign.kernels.nearest import StreamedState

# ---------------------------------------------------------------------------- covering radius


def _report_options(options: dict) -> dict:
    """StoreKernel options of a report's kernel (see report.metrics.store_oracle)."""
    o = dict(options or {})
    out = dict(
        normalize=bool(o.get("normalize", True)),
        per_atom=bool(o.get("per_atom", False)),
        balance=bool(o.get("balance", False)),
        dtype=str(o.get("dtype", "float32")),
    )
    if o.get("grid_step") is not None:
        out["grid_step"] = o["grid_step"]
    return out


def _covering(shard: PoolShard, eps: float, designs, progress=None) -> list[np.ndarray]:
    c = shard.c
    curves = []
    for d in designs:
        st = StreamedState(shard, eps)
        curve = np.empty(len(d))
        for m, s in enumerate(d):
            st.add(st.fetch(int(s))[1])
            local = float(st.psi.max(initial=-math.inf))
            curve[m] = max(c.allgather(local))
            if progress is not None:
                progress.update(1)
        curves.append(curve)
    return curves


def covering_streamed(
    store_path,
    designs,
    options: dict,
    *,
    memory_limit=None,
    comm=None,
    block_rows: int = BLOCK_ROWS,
    progress=None,
) -> list[np.ndarray]:
    """Covering radius (D²) of every prefix of every design (pool positions), streamed
    and/or over MPI: entry m-1 of curve d is ``max_i min_{j<m} D²(i, designs[d][j])``.

    Each design's points are added to a :class:`StreamedState` without picking (the same
    bounds skip blocks); the prefix radius is the largest Psi over all ranks.
    """
    from mlpdesign.io.store import open_store

    limit = parse_memory(memory_limit)
    designs = [np.asarray(d, dtype=np.int64) for d in designs]
    opts = _report_options(options)
    with open_store(store_path) as store:
        shard = PoolShard(
            store,
            opts,
            memory_limit=limit,
            comm=comm,
            block_rows=block_rows,
            n_design=max((len(d) for d in designs), default=0),
            what="the covering radius",
        )
        with blas_one_thread(), contextlib.closing(shard):
            return _covering(shard, shard.global_eps(), designs, progress)


class _UnionOracle:
    """The report's kernel oracle on the design points only (pool positions ``index``):
    ``block(rows, cols)`` for any rows/cols among them, in the report's kernel mode."""

    def __init__(self, n_pool: int, index: np.ndarray, kd) -> None:
        self.n_pool, self.index, self.kd = n_pool, index, kd

    @property
    def n(self) -> int:
        return self.n_pool

    def diag(self) -> np.ndarray:  # pragma: no cover - the covering pass is done apart
        raise MlpdesignError("internal error: the streamed report has no pool diagonal")

    def block(self, rows, cols) -> np.ndarray:
        a = np.searchsorted(self.index, np.asarray(rows, dtype=np.int64))
        b = np.searchsorted(self.index, np.asarray(cols, dtype=np.int64))
        return np.asarray(self.kd.k_block(a, b), dtype=np.float64)


def _check_args(selection_paths, bins: int, n_random: int, output, force: bool) -> None:
    from mlpdesign.io.atomic import check_output_dir

    if not selection_paths:
        raise MlpdesignError("give at least one selection file")
    if bins < 1:
        raise MlpdesignError(f"--bins must be >= 1, got {bins}")
    if n_random < 0:
        raise MlpdesignError(f"--random must be >= 0, got {n_random}")
    if output is not None:
        check_output_dir(output, force)


def _prepare(store, sels, names, selection_paths, kernel, n_random: int, seed: int):
    """The designs on the store's rows, the kernel options, and the random designs."""
    from mlpdesign.report import metrics as rp

    designs = [
        rp.design_from_selection(s, store, nm, p)
        for s, nm, p in zip(sels, names, selection_paths, strict=True)
    ]
    opts = dict(kernel) if kernel is not None else rp.selection_kernel_options(sels[0])
    for d in designs:
        if len(d.index) == 0:
            raise MlpdesignError(f"design {d.name!r} is empty")
        if len(np.unique(d.index)) != len(d.index):
            raise MlpdesignError("a design repeats a candidate")
    n_max = max(len(d.index) for d in designs)
    randoms = rp.random_designs(store.n_configs, n_max, n_random, seed) if n_random else []
    return designs, opts, randoms


def _finish(store, store_path, ref, union, queries, designs, all_idx, curves, opts, run: dict):
    """Rank 0: the metrics from the design points' rows and the covering curves."""
    from mlpdesign.report import metrics as rp

    oracle = _UnionOracle(store.n_configs, union, DesignPoints(ref).build(queries))

    def covering(ds):
        if len(ds) != len(all_idx) or any(
            not np.array_equal(a, b) for a, b in zip(ds, all_idx, strict=True)
        ):
            raise MlpdesignError("internal error: report designs changed")
        return curves

    return rp.compute(
        oracle,
        designs,
        **run,
        structure=store.structure,
        F=store.F,
        n_atoms=store.n_atoms,
        covering=covering,
        pool=rp.pool_info(store, store_path, opts),
    )


def _pool_pass(c: Comm, store, opts: dict, all_idx, union, engine: dict):
    """The one pass over the pool: covering curves on this rank's shard, and the rows of
    every design point (read once, in pool order, for pairwise D² and log det)."""
    from mlpdesign.progress import progress

    shard = c.agree(
        PoolShard,
        store,
        c.agree(_report_options, opts),
        memory_limit=engine["limit"],
        comm=engine["comm"],
        block_rows=engine["block_rows"],
        n_design=max(len(d) for d in all_idx) + len(union),
        what="the report",
    )
    bar = None
    if engine["show"] and c.rank == 0:
        bar = progress(sum(len(d) for d in all_idx), "report", unit="pt")
    with blas_one_thread(), contextlib.closing(shard):
        eps = shard.global_eps()
        curves = _covering(shard, eps, all_idx, bar)
        st = StreamedState(shard, eps)
        queries = [st.fetch(int(s))[1] for s in union]
    if bar is not None:
        bar.close()
    return shard.ref, curves, queries


def report_scaled(
    store_path,
    selection_paths,
    output,
    *,
    n_random: int = 20,
    sizes=None,
    seed: int = 1,
    jitter: float | None = None,
    bins: int | None = None,
    kernel: dict | None = None,
    force: bool = False,
    memory_limit=None,
    comm=None,
    block_rows: int = BLOCK_ROWS,
    show_progress: bool = False,
    cover_targets=None,
    cost_exponent: float = 3.0,
):
    """:func:`mlpdesign.report.metrics.report` with the pool streamed and/or split over MPI ranks:
    the covering radius (the only pass over the pool) runs on each rank's shard of blocks
    under ``memory_limit``; the design points' kernel (pairwise D², log det) is read once.
    Rank 0 computes the metrics and writes the folder; it returns the ReportData (None on
    the other ranks)."""
    from mlpdesign.io.atomic import atomic_dir
    from mlpdesign.io.selection import load_selection
    from mlpdesign.io.store import open_store
    from mlpdesign.report import metrics as rp

    c = Comm(comm)
    jitter = rp.DEFAULT_JITTER if jitter is None else jitter
    bins = rp.DEFAULT_BINS if bins is None else bins
    limit = c.agree(parse_memory, memory_limit)

    c.agree(_check_args, selection_paths, bins, n_random, output, force)
    sels = c.agree(lambda: [load_selection(p) for p in selection_paths])
    with c.agree(open_store, store_path) as store:
        names = rp.short_names(selection_paths)

        designs, opts, randoms = c.agree(
            _prepare, store, sels, names, selection_paths, kernel, n_random, seed
        )
        all_idx = [np.asarray(d.index, dtype=np.int64) for d in designs] + randoms
        union = np.unique(np.concatenate(all_idx))
        engine = dict(limit=limit, comm=comm, block_rows=block_rows, show=show_progress)
        ref, curves, queries = _pool_pass(c, store, opts, all_idx, union, engine)
        if c.rank != 0:
            c.agree(lambda: None)
            return None

        run = dict(sizes=sizes, n_random=n_random, seed=seed, jitter=jitter)
        if cover_targets is not None:
            run["cover_targets"] = cover_targets
        run["cost_exponent"] = cost_exponent
        data = c.agree(
            _finish,
            store,
            store_path,
            ref,
            union,
            queries,
            designs,
            all_idx,
            curves,
            opts,
            run,
        )
    if output is not None:
        from mlpdesign.report.figures import write_figures

        with atomic_dir(output, force) as tmp:
            data.metrics["figures"] = write_figures(data, tmp, bins)
            (tmp / "metrics.json").write_text(rp.json_dumps(data.metrics))
    return data
