"""Max-min selection and covering radius beyond one machine's memory, and across MPI ranks.

The pool is cut into a fixed grid of contiguous config blocks (at most ``block_rows`` kernel
rows per descriptor, chunk-aligned where the store's chunks allow; a pair term counts one
embedded row per config). Each block is a :class:`mlpdesign.kernels.core.StoreKernel` over its
configs with the whole store's centring and pair grid (``configs=`` / ``like=``). Only the
O(N) state stays in memory: Psi and the nearest design point of every candidate; the design
points' rows are kept (small). Per added design point, a block is skipped unless one of its
candidates survives the nearest-design-point bound of :class:`mlpdesign.select.greedy.MaxMinState`
(``D²(s, n_i) >= 4 Psi_i + 5 eps`` rules candidate i out), so later picks read little.

* ``--memory-limit``: the first blocks that fit the limit stay cached, the others are
  re-read from HDF5 in order each time a pick needs them (sequential reads).
* MPI (``mpiexec -n P``, detected by :func:`mlpdesign.mpi.world`): rank r holds a contiguous
  run of blocks (its shard of Psi); a step is a local argmax, one ``allreduce`` (MAXLOC) of
  ``(Psi, index)`` (ties: lowest global index) and one ``bcast`` of the winner's rows from
  its owner; rank 0 writes the file.

Every D² is computed on its block of the fixed grid, with one BLAS thread, by a rule that
depends only on the (identical) state, so Psi is bitwise the same for any number of ranks,
any memory limit and any cache state. BLAS results depend on a row's position inside a
product, so Psi can differ from the in-memory :func:`mlpdesign.select.greedy.maxmin` in the last
bits (within the rounding bound ``eps``); the picks are the same.

Library API::

    parse_memory("1.5G") -> int (bytes)
    select_streamed(store_path, n, *, memory_limit=None, comm=None, method="maxmin",
                    first=None, seed=1, given=None, normalize=True, per_atom=False,
                    balance=False, dtype="float64", block_rows=BLOCK_ROWS,
                    progress=None) -> select.Design          # Design.stats: I/O figures
    select_store_scaled(store_path, n, output, *, ..., comm, memory_limit, ...)
                                                  -> (Selection, Design)  # the CLI's work
    covering_streamed(store_path, designs, options, *, memory_limit=None, comm=None,
                      block_rows=BLOCK_ROWS, progress=None) -> list[np.ndarray]
    report_scaled(store_path, selections, output, *, memory_limit, comm, ...)
                                                  -> report.ReportData (rank 0) | None
    describe_mpi(pool, output, *, comm, gap=None, jobs=1, ...) -> Path  # = a serial store

Blocks out of the cache are built from HDF5 once, then their centred rows live in a scratch
file (``$MLPDESIGN_SCRATCH``, else ``$TMPDIR``) that later passes map and read in order: no
rebuilding, the same bits, and page-cache speed (measured 1.04x the in-memory path per byte
at 10^6 x 606 float32 under a 1G limit).
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
import warnings

import numpy as np

from mlpdesign.errors import MlpdesignError

#: Default kernel rows per block and descriptor: below kernels.SMALL_PRODUCT, so every
#: product runs on one BLAS thread whatever the machine.
BLOCK_ROWS = 1 << 15
PICKED = -1.0
FULL_PASS = 0.3  # as mlpdesign.select.greedy: above this fraction of a block, one pass in place
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


# ---------------------------------------------------------------------------- memory


def parse_memory(text: str | int | None) -> int | None:
    """Bytes from ``512M``, ``1.5G``, ``4G``, ``4GiB``, ``64K`` or a plain byte count
    (binary units: 1K = 1024 bytes)."""
    if text is None or isinstance(text, int):
        return text
    pattern = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGTB]?)(?:I?B)?\s*"
    m = re.fullmatch(pattern, str(text).upper())
    if not m:
        raise MlpdesignError(
            f"--memory-limit {text!r}: expected a size such as 512M, 1.5G, 4G or a byte count"
        )
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not value >= 1:
        raise MlpdesignError(f"--memory-limit {text!r} must be at least one byte")
    return int(value)


def fmt_bytes(n: float) -> str:
    """``1.5G``-style text for a byte count (binary units)."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{int(n)}B"


def kernel_bytes(kd) -> int:
    """Bytes held by a KernelData's arrays (rows in the working dtype and per-config data)."""
    total = kd.diag_t.nbytes + kd.diag.nbytes + kd.n_atoms.nbytes
    for t in kd.terms:
        total += t.rows.nbytes + t.aux.nbytes + t.weights.nbytes + t.offsets.nbytes + 8 * t.n
    return int(total)


@contextlib.contextmanager
def _blas_one_thread():
    """One BLAS thread: products give the same bits on any machine (OpenBLAS splits a
    product across threads by their number)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scipy / scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ---------------------------------------------------------------------------- block grid


def block_grid(store, plans, block_rows: int = BLOCK_ROWS) -> list[tuple[int, int]]:
    """Consecutive config blocks with at most ``block_rows`` kernel rows per descriptor
    (at least one config each); a row descriptor's limit is rounded down to whole HDF5
    chunks when it holds several, so blocks of one-row configs start on chunk boundaries."""
    n = store.n_configs
    cums, limits = [], []
    for k, plan in enumerate(plans):
        if plan["kind"] == "pair":
            cums.append(np.arange(n + 1, dtype=np.int64))
            limits.append(block_rows)
            continue
        cums.append(np.asarray(store.offsets(k), dtype=np.int64))
        chunks = store.f[f"descriptors/{k}/rows"].chunks
        ch = int(chunks[0]) if chunks else 1
        limits.append((block_rows // ch) * ch if ch <= block_rows else block_rows)
    bounds = [0]
    c = 0
    while c < n:
        hi = n
        for cum, lim in zip(cums, limits, strict=True):
            j = int(np.searchsorted(cum, cum[c] + lim, side="right")) - 1
            hi = min(hi, max(j, c + 1))
        bounds.append(hi)
        c = hi
    return list(zip(bounds[:-1], bounds[1:], strict=False))


def split_blocks(sizes: list[int], parts: int) -> list[int]:
    """Block boundaries ``b[0]=0 <= ... <= b[parts]=len(sizes)`` giving each part about
    the same bytes (contiguous runs of blocks)."""
    cum = np.concatenate(([0], np.cumsum(np.asarray(sizes, dtype=np.float64))))
    total = cum[-1]
    cuts = [0]
    for r in range(1, parts):
        cuts.append(max(cuts[-1], int(np.searchsorted(cum, total * r / parts, side="left"))))
    cuts.append(len(sizes))
    return [min(c, len(sizes)) for c in cuts]


# ---------------------------------------------------------------------------- pool shard


class _Comm:
    """The collectives the engine needs; serial when ``comm`` is None."""

    def __init__(self, comm) -> None:
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()

    def allgather(self, x):
        return [x] if self.comm is None else self.comm.allgather(x)

    def bcast(self, x, root: int = 0):
        return x if self.comm is None else self.comm.bcast(x, root=root)

    def sum(self, x):
        return x if self.comm is None else self.comm.allreduce(x)

    def maxloc(self, value: float, index: int) -> tuple[float, int]:
        """The largest ``value`` over the ranks and its ``index``; ties: the lowest index
        (MPI's MAXLOC rule)."""
        if self.comm is None:
            return value, index
        from mpi4py import MPI

        v, i = self.comm.allreduce((value, index), op=MPI.MAXLOC)
        return float(v), int(i)

    def agree(self, fn, /, *args, **kw):
        from mlpdesign.mpi import agree

        return agree(self.comm, fn, *args, **kw)


class PoolShard:
    """This rank's run of grid blocks of a store, with the O(N) state of its candidates.

    Blocks in ``cache`` (the first that fit the memory limit) stay in memory once read;
    the others are read again whenever a pick needs them. ``stats``: ``bytes_read``,
    ``blocks_read``, ``cache_hits``, ``blocks_skipped``, ``peak_cache_bytes``.
    """

    def __init__(
        self,
        store,
        options: dict,
        *,
        memory_limit: int | None = None,
        comm=None,
        block_rows: int = BLOCK_ROWS,
        n_design: int = 0,
        given=None,
        what: str = "select",
        ref=None,
        spill: bool = True,
    ) -> None:
        from mlpdesign.kernels.core import term_plans

        self.store, self.options, self.c = store, dict(options), _Comm(comm)
        self.n = store.n_configs
        self.plans = term_plans(store.descriptors)
        # the whole store's centring and pair grid (every rank computes the same)
        self.ref = reference_kernel(store, self.options, self.c) if ref is None else ref
        self.grid = block_grid(store, self.plans, block_rows)
        est = [self._estimate(b0, b1) for b0, b1 in self.grid]
        cuts = split_blocks(est, self.c.size)
        self.shard_blocks = [cuts[r + 1] - cuts[r] for r in range(self.c.size)]
        lo, hi = cuts[self.c.rank], cuts[self.c.rank + 1]
        self.blocks = self.grid[lo:hi]
        first = [self.grid[b][0] if b < len(self.grid) else self.n for b in cuts[:-1]]
        self.starts = np.array(first + [self.n], dtype=np.int64)
        self.c0 = int(self.starts[self.c.rank])
        self.c1 = int(self.starts[self.c.rank + 1])
        self.local_n = self.c1 - self.c0
        self.stats = {
            "blocks": len(self.grid),
            "ranks": self.c.size,
            "memory_limit": memory_limit,
            "bytes_read": 0,
            "blocks_read": 0,
            "cache_hits": 0,
            "blocks_skipped": 0,
            "peak_cache_bytes": 0,
        }
        self._cache: dict[int, object] = {}
        #: blocks out of the cache: rows in a scratch file, the rest in memory
        self.spill = spill
        self._skeleton: dict[int, tuple] = {}
        self._spill_file = None
        self._spill_dir = None
        self.stats["spill_bytes"] = 0
        self.cache_set = self.c.agree(self._plan, memory_limit, est[lo:hi], n_design, given, what)
        self.stats["cached_blocks"] = len(self.cache_set)

    # -- memory plan
    def _estimate(self, b0: int, b1: int) -> int:
        item = np.dtype(self.options.get("dtype", "float64")).itemsize
        total = (b1 - b0) * 8 * (2 * len(self.plans) + 3)
        for k, t in enumerate(self.ref.terms):
            if self.plans[k]["kind"] == "pair":
                rows = b1 - b0
            else:
                o = self.store.offsets(k)
                rows = int(o[b1] - o[b0])
            total += rows * (t.dim * item + 24) + 8 * (b1 - b0 + 1)
        return int(total)

    def _plan(self, limit, est: list[int], n_design: int, given, what: str) -> set[int]:
        if limit is None:
            return set(range(len(self.blocks)))
        n_terms = len(self.plans)
        state = self.local_n * 48 + self.n * (8 * n_terms + 16)
        per_config = 0.0  # design rows per point: one embedded row per pair term
        for k, t in enumerate(self.ref.terms):
            rows = 1.0
            if self.plans[k]["kind"] != "pair":
                rows = max(1.0, float(self.store.offsets(k)[-1]) / self.n)
            per_config += (t.dim * t.rows.itemsize + 24) * rows
        design = int(2 * n_design * (per_config + 64))
        gbytes = 0 if given is None else kernel_bytes(given)
        work = 0
        for k, t in enumerate(self.ref.terms):  # reading and centring one block, at peak
            o = np.asarray(self.store.offsets(k))
            rows = max((int(o[b1] - o[b0]) for b0, b1 in self.blocks), default=0)
            if self.plans[k]["kind"] == "pair":  # distances, embedding temporaries, rows
                width = math.ceil(14 * self.plans[k]["theta"] / (t.meta["grid"][1])) + 3
                cfgs = max((b1 - b0 for b0, b1 in self.blocks), default=0)
                work = max(work, 6 * min(rows, 1 << 16) * width * 8 + 16 * rows + cfgs * t.dim * 16)
            else:
                work = max(work, int(3.5 * min(rows, 1 << 13) * t.dim * 8))
        qrows = max(int(np.diff(self.store.offsets(k)).max(initial=1)) for k in range(n_terms))
        rows_blk = max((b1 - b0) for b0, b1 in self.blocks) if self.blocks else 0
        work += 4 * min(rows_blk * qrows, 1 << 26) * 8
        item = np.dtype(self.options.get("dtype", "float64")).itemsize
        rows_bytes = []
        for b0, b1 in self.blocks:
            r = 0
            for k, t in enumerate(self.ref.terms):
                n_rows = b1 - b0
                if self.plans[k]["kind"] != "pair":
                    o = self.store.offsets(k)
                    n_rows = int(o[b1] - o[b0])
                r += n_rows * t.dim * item
            rows_bytes.append(r)
        # a spilled block keeps its per-config arrays (aux, weights, offsets, diagonals)
        skeleton = sum(max(0, e - r) for e, r in zip(est, rows_bytes, strict=True))
        fixed = state + design + gbytes + work + (skeleton if self.spill else 0)
        biggest = max(est, default=0)
        if limit < fixed + biggest:
            raise MlpdesignError(
                f"--memory-limit {fmt_bytes(limit)} is too small for {what} on "
                f"{self.local_n} candidates: the O(N) state needs {fmt_bytes(state)}, one "
                f"block of rows {fmt_bytes(biggest)} and working space "
                f"{fmt_bytes(work + design + gbytes)}; give at least {fmt_bytes(fixed + biggest)}"
            )
        if fixed + sum(est) <= limit:
            return set(range(len(self.blocks)))
        budget = limit - fixed - biggest
        keep, used = set(), 0
        for i, e in enumerate(est):
            if used + e > budget:
                break
            keep.add(i)
            used += e
        return keep

    # -- blocks
    def block(self, i: int):
        """Block ``i`` of this shard as a KernelData: cached, re-read from the spill file
        or built from the store now (the first time)."""
        kd = self._cache.get(i)
        if kd is not None:
            self.stats["cache_hits"] += 1
            return kd
        self.stats["blocks_read"] += 1
        if i in self._skeleton:
            kd = self._unspill(i)
            self.stats["bytes_read"] += sum(t.rows.nbytes for t in kd.terms)
            return kd
        from mlpdesign.kernels.core import StoreKernel

        b0, b1 = self.blocks[i]
        kd = StoreKernel(self.store, configs=(b0, b1), like=self.ref, **self.options)
        for k in range(len(self.plans)):
            ds = self.store.f[f"descriptors/{k}/rows"]
            o = self.store.offsets(k)
            r = int(o[b1] - o[b0])
            self.stats["bytes_read"] += r * (int(np.prod(ds.shape[1:])) * ds.dtype.itemsize + 8)
        if i in self.cache_set:
            self._cache[i] = kd
            held = sum(kernel_bytes(v) for v in self._cache.values())
            self.stats["peak_cache_bytes"] = max(self.stats["peak_cache_bytes"], held)
        elif self.spill:
            self._spill_block(i, kd)
        return kd

    def _spill_block(self, i: int, kd) -> None:
        """Keep block ``i``'s built rows (centred, working dtype) in this rank's scratch
        file and its small per-config arrays in memory: a re-read is one sequential read
        of exactly the bytes a product needs, with no rebuilding (the same bits)."""
        import os
        import tempfile

        if self._spill_file is None:
            where = os.environ.get("MLPDESIGN_SCRATCH") or None
            self._spill_dir = tempfile.TemporaryDirectory(prefix="mlpdesign-spill-", dir=where)
            self._spill_file = open(os.path.join(self._spill_dir.name, "rows.bin"), "w+b")  # noqa: SIM115
        f = self._spill_file
        f.seek(0, os.SEEK_END)
        parts = []
        for t in kd.terms:
            a = np.ascontiguousarray(t.rows)
            parts.append((f.tell(), a.shape, a.dtype))
            a.tofile(f)
        f.flush()
        skel = copy.copy(kd)
        skel.terms = []
        for t in kd.terms:
            t2 = copy.copy(t)
            t2.rows = None
            skel.terms.append(t2)
        self._skeleton[i] = (skel, parts)
        self.stats["spill_bytes"] = f.tell()

    def _unspill(self, i: int):
        skel, parts = self._skeleton[i]
        kd = copy.copy(skel)
        kd.terms = []
        for t, (off, shape, dtype) in zip(skel.terms, parts, strict=True):
            # mapped, not copied: the product reads the page cache directly; the map (and
            # its resident pages) goes when the block is dropped after use
            if int(np.prod(shape)) == 0:
                rows = np.empty(shape, dtype=dtype)
            else:
                rows = np.memmap(
                    self._spill_file.name, dtype=dtype, mode="r", offset=off, shape=shape
                )
            t2 = copy.copy(t)
            t2.rows = rows
            kd.terms.append(t2)
        return kd

    def close(self) -> None:
        """Remove the spill file."""
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None

    def local_range(self, i: int) -> tuple[int, int]:
        b0, b1 = self.blocks[i]
        return b0 - self.c0, b1 - self.c0

    def owner(self, s: int) -> int:
        return int(np.searchsorted(self.starts, s, side="right")) - 1

    def global_eps(self, given=None) -> float:
        """The rounding bound of the whole pool (and the given set): per-term maxima
        over every block and rank, put into the bound of
        :meth:`mlpdesign.kernels.core.KernelData.eps_with`. Reads every block once (and
        fills the cache); a bad block fails on every rank alike."""

        def scan():
            out = None
            for i in range(len(self.blocks)):
                kd = self.block(i)
                s = (
                    [(st["M"], st["rows"], nm) for st, nm in zip(kd._stats, kd._norm, strict=True)],
                    float(kd.diag.max(initial=0.0)),
                )
                out = s if out is None else _merge_stats(out, s)
            return out

        parts = [p for p in self.c.allgather(self.c.agree(scan)) if p is not None]
        total = parts[0]
        for p in parts[1:]:
            total = _merge_stats(total, p)
        px = copy.copy(self.ref)
        mu_norm = [float(np.sqrt(t.mu @ t.mu)) for t in px.terms]
        px._stats = [
            dict(st, M=m, P=m + mn, rows=r)
            for st, (m, r, _), mn in zip(self.ref._stats, total[0], mu_norm, strict=True)
        ]
        px._norm = [nm for _, _, nm in total[0]]
        px.diag = np.array([total[1]])
        eps = px.eps_with(px)
        if given is not None:
            eps = max(eps, px.eps_with(given))
        return float(eps)


def _merge_stats(a, b):
    return (
        [
            (max(x[0], y[0]), max(x[1], y[1]), max(x[2], y[2]))
            for x, y in zip(a[0], b[0], strict=True)
        ],
        max(a[1], b[1]),
    )


# ---------------------------------------------------------------------------- design points


class DesignPoints:
    """The design points' rows (queries), grown one at a time; D² from a query to all of
    them, in the order they were added. Held as chunks of 1, 2, 4, ... points (merged
    like a binary counter), so adding n points rebuilds O(n log n) rows."""

    def __init__(self, ref) -> None:
        self.ref = ref
        self.chunks: list = []  # KernelData, oldest first

    @property
    def n(self) -> int:
        return sum(c.n for c in self.chunks)

    def _build(self, queries) -> object:
        from mlpdesign.kernels.core import KernelData, Term

        terms = []
        for t, tmpl in enumerate(self.ref.terms):
            rows = [q.rows[t] for q in queries]
            counts = np.array([len(r) for r in rows], dtype=np.int64)
            terms.append(
                Term(
                    tmpl.kind,
                    np.concatenate(rows).astype(tmpl.rows.dtype, copy=False),
                    np.concatenate([q.weights[t] for q in queries]),
                    np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
                    tmpl.delta,
                    tmpl.zeta,
                    tmpl.length,
                    tmpl.mu,
                    np.concatenate([q.aux[t] for q in queries]),
                    tmpl.name,
                    dict(tmpl.meta),
                    tmpl.max_centred_norm,
                )
            )
        kd = KernelData(
            terms,
            np.array([q.n_atoms for q in queries], dtype=np.float64),
            normalize=self.ref.normalize,
            per_atom=self.ref.per_atom,
            balance=self.ref.balance,
        )
        kd._queries = list(queries)
        return kd

    def add(self, q) -> None:
        self.chunks.append(self._build([q]))
        while len(self.chunks) > 1 and self.chunks[-1].n == self.chunks[-2].n:
            b = self.chunks.pop()
            a = self.chunks.pop()
            self.chunks.append(self._build(a._queries + b._queries))

    def d2(self, q) -> np.ndarray:
        """D² from ``q`` to every design point, in the order added."""
        if not self.chunks:
            return np.zeros(0)
        return np.concatenate([c.d2_range(q, 0, c.n) for c in self.chunks])


# ---------------------------------------------------------------------------- engine


class StreamedState:
    """:class:`mlpdesign.select.greedy.MaxMinState` over a :class:`PoolShard`: Psi and the nearest
    design point of this rank's candidates; design points added on every rank alike."""

    def __init__(self, shard: PoolShard, eps: float) -> None:
        self.shard, self.eps = shard, eps
        self.psi = np.full(shard.local_n, np.inf)
        self.nearest = np.zeros(shard.local_n, dtype=np.int64)
        self.design = DesignPoints(shard.ref)
        self.evaluated = 0
        self.adds = 0

    def add(self, q) -> None:
        """Lower Psi with the distances to a new design point ``q`` (a Query)."""
        sh = self.shard
        dc = self.design.d2(q) if self.design.n else None
        centre = self.design.n
        for i in range(len(sh.blocks)):
            a, b = sh.local_range(i)
            psi = self.psi[a:b]
            if dc is None:
                cand = np.flatnonzero(psi >= 0)
            else:
                cand = np.flatnonzero(dc[self.nearest[a:b]] < 4.0 * psi + 5.0 * self.eps)
            if len(cand) == 0:
                sh.stats["blocks_skipped"] += 1
                continue
            kd = sh.block(i)
            if len(cand) > FULL_PASS * kd.n:
                d2 = kd.d2_range(q, 0, kd.n)[cand]
            else:
                d2 = kd.d2_subset(q, cand)
            upd = d2 < psi[cand]
            hit = cand[upd]
            psi[hit] = d2[upd]
            self.nearest[a + hit] = centre
            self.evaluated += len(cand)
        self.design.add(q)
        self.adds += 1

    def fetch(self, s: int):
        """(Psi_s, query of candidate s), broadcast from the rank that holds s."""
        sh = self.shard
        root = sh.owner(s)
        out = None
        if root == sh.c.rank:
            loc = s - sh.c0
            i = int(np.searchsorted([b0 for b0, _ in sh.blocks], s, side="right")) - 1
            kd = sh.block(i)
            q = kd.query(s - sh.blocks[i][0])
            q = type(q)(
                [r.copy() for r in q.rows],
                [a.copy() for a in q.aux],
                [w.copy() for w in q.weights],
                q.diag_t,
                q.diag,
                q.n_atoms,
            )
            out = (float(self.psi[loc]), q)
        return sh.c.bcast(out, root=root)

    def exclude(self, s: int) -> None:
        sh = self.shard
        if sh.c0 <= s < sh.c1:
            self.psi[s - sh.c0] = PICKED

    def argmax(self, members: np.ndarray | None = None) -> tuple[float, int]:
        """Largest Psi over all ranks and its global index (ties: lowest index);
        ``members``: only these (sorted global indices; a stratum)."""
        sh = self.shard
        mine = (-math.inf, sh.n)
        if members is None:  # the plain design: no gather on the hot path
            if sh.local_n:
                j = int(np.argmax(self.psi))  # the first of equal maxima: the lowest index
                mine = (float(self.psi[j]), sh.c0 + j)
        else:
            lo, hi = np.searchsorted(members, [sh.c0, sh.c1])
            local = members[lo:hi] - sh.c0
            if len(local):
                j = int(local[np.argmax(self.psi[local])])
                mine = (float(self.psi[j]), sh.c0 + j)
        return sh.c.maxloc(*mine)  # one allreduce

    def next_pick(self, eps: float, strata) -> tuple[float, int] | None:
        """(Psi, index) of the next max-min pick, within the stratum whose turn it is
        (:class:`mlpdesign.select.greedy.Strata`); None when no candidate is left above eps."""
        if strata is None:
            psi_s, s = self.argmax()
            return (psi_s, s) if psi_s > eps else None
        for h in strata.order():
            psi_s, s = self.argmax(strata.members[h])
            if psi_s > eps:
                return psi_s, s
            strata.open[h] = False
        return None

    def count_above(self, x: float) -> int:
        return int(self.shard.c.sum(int(np.count_nonzero(self.psi > x))))

    def farthest_from(self, q) -> int:
        """The candidate farthest from ``q`` (one full pass; ties: lowest index)."""
        sh = self.shard
        best = (-math.inf, sh.n)
        for i in range(len(sh.blocks)):
            kd = sh.block(i)
            d = kd.d2_range(q, 0, kd.n)
            j = int(np.argmax(d))
            if d[j] > best[0]:
                best = (float(d[j]), sh.blocks[i][0] + j)
        return sh.c.maxloc(*best)[1]


def reference_kernel(store, options: dict, c: _Comm):
    """Config 0 as a KernelData with the whole store's centring and pair grid: the
    template every block and the given set are built ``like``."""
    from mlpdesign.kernels.core import StoreKernel

    return c.agree(StoreKernel, store, configs=(0, 1), **options)


def _open_given(c: _Comm, ref, given, store):
    """The given set's KernelData (built on rank 0, sent to all) and its provenance."""
    import tempfile

    from mlpdesign.select.greedy import _given_kernel

    def build():
        if c.rank != 0:
            return None
        with tempfile.TemporaryDirectory(prefix="mlpdesign-given-") as tmp:
            return _given_kernel(given, store, ref, tmp)

    return c.bcast(c.agree(build), root=0)


def _run(
    store,
    n: int,
    *,
    method: str,
    first,
    seed: int,
    given,
    options: dict,
    memory_limit,
    comm,
    block_rows: int,
    progress,
    strata=None,
):
    from mlpdesign.select.greedy import Design, _left_msg, _strata, _strata_stats

    c = _Comm(comm)
    if n < 1:
        raise MlpdesignError(f"-n must be at least 1, got {n}")
    if n > store.n_configs:
        raise MlpdesignError(f"-n {n} is larger than the pool ({store.n_configs} candidates)")
    if method not in ("maxmin", "random"):
        raise MlpdesignError(f"unknown method {method!r} (maxmin or random)")
    t0 = time.monotonic()
    # a first shard without the given set to build it against the pool's centring
    ref = reference_kernel(store, options, c)
    gk, ginfo = _open_given(c, ref, given, store) if given is not None else (None, None)
    shard = PoolShard(
        store,
        options,
        memory_limit=memory_limit,
        comm=comm,
        block_rows=block_rows,
        n_design=n + (gk.n if gk is not None else 0),
        given=gk,
        ref=ref,
    )
    with _blas_one_thread(), contextlib.closing(shard):
        eps = shard.global_eps(gk)
        st = StreamedState(shard, eps)
        if gk is not None:
            for j in range(gk.n):
                st.add(gk.query(j))
            left = st.count_above(eps)
            if n > left:
                raise MlpdesignError(_left_msg(n, store.n_configs, left))
        quota = _strata(strata, store.n_configs)
        S, P = [], []
        how = "random" if method == "random" else "conditional"
        stopped = False
        order = None
        if method == "random":
            order = np.random.default_rng(seed).permutation(store.n_configs)
        pos = 0
        while len(S) < n:
            if method == "random":
                if pos == len(order):
                    stopped = True
                    break
                s = int(order[pos])
                pos += 1
                psi_s, q = st.fetch(s)
                if gk is not None and psi_s <= eps:
                    continue
            elif not S and (gk is None or first is not None):
                if first is None or first == "extreme":
                    s, how = st.farthest_from(st.fetch(0)[1]), "extreme"
                elif first == "random":
                    s, how = int(np.random.default_rng(seed).integers(store.n_configs)), "random"
                else:
                    s = int(first)
                    if not 0 <= s < store.n_configs:
                        raise MlpdesignError(
                            f"first candidate {s} is outside the pool (0..{store.n_configs - 1})"
                        )
                    how = str(s)
                psi_s, q = st.fetch(s)
                if gk is not None and psi_s <= eps:
                    raise MlpdesignError(f"first candidate {s} duplicates the given set")
            else:
                nxt = st.next_pick(eps, quota)
                if nxt is None:
                    stopped = True
                    break
                psi_s, s = nxt
                q = st.fetch(s)[1]
            S.append(s)
            P.append(psi_s)
            if quota is not None:
                quota.take(s)
            st.exclude(s)
            st.add(q)
            if progress is not None:
                progress.set_postfix_str(f"psi={psi_s:.4g}", refresh=False)
                progress.update(1)
    if stopped:
        warnings.warn(
            f"stopped after {len(S)} of {n} picks: every remaining candidate duplicates "
            "the design (Psi = 0)",
            RuntimeWarning,
            stacklevel=3,
        )
    stats = dict(shard.stats)
    for key in ("bytes_read", "blocks_read", "cache_hits", "blocks_skipped"):
        stats[key] = int(c.sum(stats[key]))
    stats["peak_cache_bytes"] = int(max(c.allgather(stats["peak_cache_bytes"])))
    stats.update(adds=st.adds, eps=eps, wall_s=time.monotonic() - t0)
    _strata_stats(stats, quota)
    design = Design(
        np.array(S, dtype=np.int64),
        np.array(P, dtype=np.float64),
        stopped,
        n,
        int(c.sum(st.evaluated)),
        store.n_configs,
        how,
        stats,
    )
    return design, shard, gk, ginfo


def select_streamed(
    store_path,
    n: int,
    *,
    memory_limit=None,
    comm=None,
    method: str = "maxmin",
    first=None,
    seed: int = 1,
    given=None,
    normalize: bool = True,
    per_atom: bool = False,
    balance: bool = False,
    dtype: str = "float64",
    block_rows: int = BLOCK_ROWS,
    progress=None,
    stratify: bool | None = None,
):
    """Greedy max-min (or ``method="random"``) on a store, streamed and/or over MPI ranks.

    ``memory_limit``: bytes or text (``"1G"``) for the kernel data and O(N) state of this
    rank (not the interpreter); ``comm``: an mpi4py communicator (None: serial). ``first``:
    None (farthest from candidate 0), a pool position, or ``"random"``. ``given``: path of
    an existing training set (store or extxyz). ``stratify``: as
    :func:`mlpdesign.select.greedy.select_store` (None: stratified when the pool has two or more
    structure labels). Returns a :class:`mlpdesign.select.greedy.Design`
    (the same on every rank) whose ``stats`` hold ``bytes_read``, ``blocks_read``,
    ``cache_hits``, ``blocks_skipped``, ``peak_cache_bytes``, ``blocks``,
    ``cached_blocks`` (this rank), ``ranks``, ``eps``, ``adds``, ``wall_s``.
    """
    from mlpdesign.io.store import open_store
    from mlpdesign.select.greedy import strata_labels

    limit = parse_memory(memory_limit)
    options = dict(normalize=normalize, per_atom=per_atom, balance=balance, dtype=dtype)
    with open_store(store_path) as store:
        design, *_ = _run(
            store,
            n,
            method=method,
            first=first,
            seed=seed,
            given=given,
            options=options,
            memory_limit=limit,
            comm=comm,
            block_rows=block_rows,
            progress=progress,
            strata=strata_labels(store, store_path, stratify) if method == "maxmin" else None,
        )
    return design


def select_store_scaled(
    store_path,
    n: int,
    output,
    *,
    method: str = "maxmin",
    given=None,
    first=None,
    seed: int = 1,
    normalize: bool = True,
    per_atom: bool = False,
    balance: bool = False,
    dtype: str = "float64",
    stratify: bool | None = None,
    fmt: str | None = None,
    force: bool = False,
    command: str = "",
    memory_limit=None,
    comm=None,
    block_rows: int = BLOCK_ROWS,
    progress_factory=None,
):
    """:func:`mlpdesign.select.greedy.select_store` streamed and/or over MPI: the same file layout
    and attributes; rank 0 writes it. ``first``: None, a candidate_id or ``"random"``."""
    from mlpdesign.io.atomic import check_output
    from mlpdesign.io.selection import Selection, write_selection
    from mlpdesign.io.store import open_store
    from mlpdesign.select.greedy import selection_attrs, strata_labels

    c = _Comm(comm)
    limit = c.agree(parse_memory, memory_limit)
    c.agree(check_output, output, force)
    options = dict(normalize=normalize, per_atom=per_atom, balance=balance, dtype=dtype)
    with c.agree(open_store, store_path) as store:

        def first_index():
            if first in (None, "random"):
                return first
            hit = np.flatnonzero(np.asarray(store.candidate_id) == int(first))
            if len(hit) == 0:
                raise MlpdesignError(
                    f"--first {first}: no candidate with that candidate_id in {store_path}"
                )
            return int(hit[0])

        first_idx = c.agree(first_index)
        labels = None
        if method == "maxmin":
            labels = c.agree(strata_labels, store, store_path, stratify)
        bar = progress_factory(n, "select") if (progress_factory and c.rank == 0) else None
        try:
            design, shard, gk, ginfo = c.agree(
                _run,
                store,
                n,
                method=method,
                first=first_idx,
                seed=seed,
                given=given,
                options=options,
                memory_limit=limit,
                comm=comm,
                block_rows=block_rows,
                progress=bar,
                strata=labels,
            )
        finally:
            if bar is not None:
                bar.close()
        attrs = selection_attrs(
            store,
            store_path,
            shard.ref,
            design,
            method=method,
            first=first,
            seed=seed,
            n=n,
            given=[ginfo] if ginfo is not None else [],
            command=command,
            stratify=labels is not None,
        )
        cids = np.asarray(store.candidate_id)
        sel = Selection(cids[design.index], design.index, design.psi, attrs)
    c.agree(lambda: write_selection(output, sel, fmt, force) if c.rank == 0 else None)
    return sel, design


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
        with _blas_one_thread(), contextlib.closing(shard):
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
):
    """:func:`mlpdesign.report.metrics.report` with the pool streamed and/or split over MPI ranks:
    the covering radius (the only pass over the pool) runs on each rank's shard of blocks
    under ``memory_limit``; the design points' kernel (pairwise D², log det) is read once.
    Rank 0 computes the metrics and writes the folder; it returns the ReportData (None on
    the other ranks)."""
    from mlpdesign.io.atomic import atomic_dir, check_output_dir
    from mlpdesign.io.selection import load_selection
    from mlpdesign.io.store import open_store
    from mlpdesign.progress import progress
    from mlpdesign.report import metrics as rp

    c = _Comm(comm)
    jitter = rp.DEFAULT_JITTER if jitter is None else jitter
    bins = rp.DEFAULT_BINS if bins is None else bins
    limit = c.agree(parse_memory, memory_limit)

    def check():
        if not selection_paths:
            raise MlpdesignError("give at least one selection file")
        if bins < 1:
            raise MlpdesignError(f"--bins must be >= 1, got {bins}")
        if n_random < 0:
            raise MlpdesignError(f"--random must be >= 0, got {n_random}")
        if output is not None:
            check_output_dir(output, force)

    c.agree(check)
    sels = c.agree(lambda: [load_selection(p) for p in selection_paths])
    with c.agree(open_store, store_path) as store:
        names = rp._names(selection_paths)

        def prepare():
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

        designs, opts, randoms = c.agree(prepare)
        all_idx = [np.asarray(d.index, dtype=np.int64) for d in designs] + randoms
        union = np.unique(np.concatenate(all_idx))
        sopts = c.agree(_report_options, opts)
        shard = c.agree(
            PoolShard,
            store,
            sopts,
            memory_limit=limit,
            comm=comm,
            block_rows=block_rows,
            n_design=max(len(d) for d in all_idx) + len(union),
            what="the report",
        )
        bar = None
        if show_progress and c.rank == 0:
            bar = progress(sum(len(d) for d in all_idx), "report", unit="pt")
        with _blas_one_thread(), contextlib.closing(shard):
            eps = shard.global_eps()
            curves = _covering(shard, eps, all_idx, bar)
            # the design points' rows, read once in pool order, for pairwise D² and log det
            st = StreamedState(shard, eps)
            queries = [st.fetch(int(s))[1] for s in union]
        if bar is not None:
            bar.close()
        if c.rank != 0:
            c.agree(lambda: None)
            return None

        def finish():
            kd = DesignPoints(shard.ref)._build(queries)
            oracle = _UnionOracle(store.n_configs, union, kd)

            def covering(ds):
                if len(ds) != len(all_idx) or any(
                    not np.array_equal(a, b) for a, b in zip(ds, all_idx, strict=True)
                ):
                    raise MlpdesignError("internal error: report designs changed")
                return curves

            return rp.compute(
                oracle,
                designs,
                sizes=sizes,
                n_random=n_random,
                seed=seed,
                jitter=jitter,
                structure=store.structure,
                F=store.F,
                covering=covering,
                pool=rp.pool_info(store, store_path, opts),
            )

        data = c.agree(finish)
    if output is not None:
        from mlpdesign.report.figures import write_figures

        with atomic_dir(output, force) as tmp:
            data.metrics["figures"] = write_figures(data, tmp, bins)
            (tmp / "metrics.json").write_text(rp.json_dumps(data.metrics))
    return data


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
        with open_store(path) as s:
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
):
    """:func:`mlpdesign.describe.runner.describe` over the ranks of ``comm``: rank r describes
    shard r+1 of P (contiguous, ``--shard`` rules) into a hidden part file beside ``output``
    (itself resumable), then rank 0 merges the parts into ``output`` with the serial run's
    ``command`` and removes them. The store equals a serial run's in every dataset and
    attribute. A killed run continues where it stopped (each part from its chunks)."""
    from mlpdesign.describe.runner import describe, index_pool
    from mlpdesign.generate.pool import shard_range
    from mlpdesign.io.atomic import check_output
    from mlpdesign.io.store import merge_stores

    c = _Comm(comm)
    out = c.agree(check_output, output, force)
    n_pool = c.agree(lambda: index_pool(pool).n_configs if c.rank == 0 else None)
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
