"""Kernel blocks of a pool beyond one machine's memory and across MPI ranks (PoolShard).

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

import numpy as np

from mlpdesign.errors import MlpdesignError

#: Default kernel rows per block and descriptor: below kernels.SMALL_PRODUCT, so every
#: product runs on one BLAS thread whatever the machine.
BLOCK_ROWS = 1 << 15
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


def fmt_bytes(n: float, up: bool = False) -> str:
    """``1.5G``-style text for a byte count (binary units, 3 significant digits);
    ``up``: rounded up, so that the text given back as a limit is at least ``n``."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            v = n / size
            if up:
                scale = 10.0 ** (2 - math.floor(math.log10(v)))
                return f"{math.ceil(v * scale - 1e-9) / scale:g}{unit}"
            text = f"{v:.3g}"
            return f"{text if 'e' not in text else f'{v:.0f}'}{unit}"
    return f"{math.ceil(n)}B"


def kernel_bytes(kd) -> int:
    """Bytes held by a KernelData's arrays (rows in the working dtype and per-config data)."""
    total = kd.diag_t.nbytes + kd.diag.nbytes + kd.n_atoms.nbytes
    for t in kd.terms:
        total += t.rows.nbytes + t.aux.nbytes + t.weights.nbytes + t.offsets.nbytes + 8 * t.n
    return int(total)


@contextlib.contextmanager
def blas_one_thread():
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


class Comm:
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

    def max(self, x):
        """The largest ``x`` over the ranks."""
        if self.comm is None:
            return x
        from mpi4py import MPI

        return self.comm.allreduce(x, op=MPI.MAX)

    def min(self, x):
        """The smallest ``x`` over the ranks."""
        if self.comm is None:
            return x
        from mpi4py import MPI

        return self.comm.allreduce(x, op=MPI.MIN)

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
    the others are read again whenever a pick needs them. ``extra_bytes``: what the
    caller holds beside the shard (counted in the limit's working space). ``stats``:
    ``bytes_read``, ``blocks_read``, ``cache_hits``, ``blocks_skipped``,
    ``peak_cache_bytes``.
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
        extra_bytes: int = 0,
    ) -> None:
        from mlpdesign.kernels.core import term_plans

        self.store, self.options, self.c = store, dict(options), Comm(comm)
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
        #: working space the caller holds beside the shard (score: the training set's
        #: Cholesky factor), counted against the memory limit
        self.extra_bytes = int(extra_bytes)
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
        work += self.extra_bytes
        fixed = state + design + gbytes + work + (skeleton if self.spill else 0)
        biggest = max(est, default=0)
        if limit < fixed + biggest:
            raise MlpdesignError(
                f"--memory-limit {fmt_bytes(limit)} is too small for {what} on "
                f"{self.local_n} candidates: the O(N) state needs {fmt_bytes(state)}, one "
                f"block of rows {fmt_bytes(biggest)} and working space "
                f"{fmt_bytes(work + design + gbytes)}; "
                f"give at least {fmt_bytes(fixed + biggest, up=True)}"
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
                s = (kd.bound_terms(), float(kd.diag.max(initial=0.0)))
                out = s if out is None else merge_stats(out, s)
            return out

        parts = [p for p in self.c.allgather(self.c.agree(scan)) if p is not None]
        total = parts[0]
        for p in parts[1:]:
            total = merge_stats(total, p)
        return self.ref.eps_merged(total[0], total[1], given)


def merge_stats(a, b):
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
        self.chunks: list = []  # (KernelData, its queries), oldest first

    @property
    def n(self) -> int:
        return sum(c.n for c, _ in self.chunks)

    def build(self, queries) -> object:
        """The queries as one KernelData of the reference kernel (same centring)."""
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
            diag_t=np.stack([q.diag_t for q in queries], axis=1),  # not recomputed
        )
        return kd

    def add(self, q) -> None:
        self.chunks.append((self.build([q]), [q]))
        while len(self.chunks) > 1 and self.chunks[-1][0].n == self.chunks[-2][0].n:
            b = self.chunks.pop()
            a = self.chunks.pop()
            self.chunks.append((self.build(a[1] + b[1]), a[1] + b[1]))

    def d2(self, q) -> np.ndarray:
        """D² from ``q`` to every design point, in the order added."""
        if not self.chunks:
            return np.zeros(0)
        return np.concatenate([c.d2_range(q, 0, c.n) for c, _ in self.chunks])


def reference_kernel(store, options: dict, c: Comm):
    """Config 0 as a KernelData with the whole store's centring and pair grid: the
    template every block and the given set are built ``like``."""
    from mlpdesign.kernels.core import StoreKernel

    return c.agree(StoreKernel, store, configs=(0, 1), **options)
