"""GAP energy kernels between configurations and the squared kernel distance D².

GAP's energy covariance between configurations A and B is a sum of terms, one per
descriptor, each a double sum over the descriptor rows (atoms, pairs) of both::

    K(A,B) = sum_t delta_t^2 sum_{a in A} sum_{b in B} w_a w_b f_t(x_a, x_b)

with ``f = (x_a . x_b)^zeta`` (``covariance_type=dot_product``, SOAP) or
``f = exp(-|x_a - x_b|^2 / 2 theta^2)`` (``ard_se`` with ``theta_uniform``; the
``distance_2b`` term, and the plain Gaussian kernel of toy problems). ``w`` are QUIP's
covariance-cutoff weights. The distance is ``D² = k(p,p) + k(q,q) - 2 k(p,q)`` (paper eq. 2)
on the normalised kernel ``k = K(p,q)/sqrt(K(p,p) K(q,q))`` by default (D² in [0, 2]);
``per_atom`` divides K by ``n_atoms(p) n_atoms(q)``, ``balance`` normalises each term on
its own and weights it by ``delta_t^2 / sum delta^2``.

The pair term is not evaluated pair by pair: a Gaussian kernel between two sums of points
is the overlap of the two Gaussian-smoothed pair distributions, so each config is embedded
once on a radial grid (:func:`pair_embedding`) and the term becomes one dot product
(``zeta=1``). :func:`pair_kernel_bruteforce` is the double sum it is tested against.

Rows are held centred (``x - mu``, ``mu`` a mean row) in the working dtype (float32 or
float64); the products with ``mu`` are kept in float64. Centring makes the float32 dot
products small, and :attr:`KernelData.eps` a provable bound on the rounding error of any
computed D² (used by the exact bounds of :mod:`mlpdesign.select.greedy`).

Library API (all arrays numpy; configs are indexed 0..n-1 in store order)::

    KernelData(terms: list[Term], n_atoms=None, *, normalize=True, per_atom=False,
               balance=False)
        .n, .eps, .diag (K(c,c) in the chosen mode), .query(i) -> Query
        .d2_range(q: Query, c0, c1) -> (c1-c0,) D² from q to configs c0..c1-1 (a contiguous
                                          block: no copy, the unit of streaming)
        .d2_subset(q: Query, idx) -> (len(idx),) D² from q to configs idx
        .d2_below(q: Query, idx, psi) -> D² where it may be below psi, else a lower bound
        .d2_below_range(q, c0, c1, psi) -> the same for the contiguous block c0..c1-1
        .d2_row(i) -> (n,) D² from config i to every config
        .k_block(idx_a, idx_b) -> (len a, len b) kernel k (normalised per the mode)
        .d2_block(idx_a, idx_b) -> (len a, len b) D²
        .min_d2_to(idx) -> (n,) min D² of every config to the configs idx (exact bounds)
    StoreKernel(store, normalize=True, per_atom=False, balance=False, dtype="float64",
                like=None, grid_step=None)           # a KernelData from a descriptor store
    linear(X, normalize=True, dtype="float64")       # toy kernels, one row per config
    gaussian(X, length_scale=1.0, dtype="float64")
    polynomial(X, zeta=2, normalize=True, dtype="float64")
    Term.dot(rows, offsets=None, weights=None, zeta=1, delta=1.0, ...)   # building blocks
    Term.gauss(rows, offsets=None, weights=None, length=1.0, delta=1.0, ...)
    pair_embedding(r, weights, offsets, theta, grid) -> (n_configs, len(grid))
    pair_grid(cutoff, theta, step=None) -> grid
    pair_kernel_bruteforce(r_a, w_a, r_b, w_b, theta) -> float

For example, fig. 3 of the paper (100 of 10^4 points from N(0, 0.5) under a unit
Gaussian kernel)::

    X = np.random.default_rng(0).normal(0, 0.5, (10_000, 2))
    sel = mlpdesign.select.greedy.maxmin(kernels.gaussian(X, 1.0), 100)
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import math
import multiprocessing
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mlpdesign.errors import MlpdesignError

DTYPES = ("float32", "float64")
_U64 = float(np.finfo(np.float64).eps) / 2


def _unit_roundoff(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps) / 2


def _gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of an n-term dot product,
    valid for any summation order (BLAS blocking, SIMD lanes, FMA)."""
    nu = n * u
    if nu >= 0.5:
        return 2 * nu
    return nu / (1 - nu)


# ---------------------------------------------------------------------------- helpers

#: Products with fewer rows than this run on one BLAS thread: waking threads costs more
#: than such a product (10 ms instead of 0.15 ms for 2660 x 606 on a busy 2-core machine).
SMALL_PRODUCT = 1 << 16
_CONTROLLER = None


class _Pinned:
    on = False  # BLAS already pinned to one thread by an enclosing _one_blas_thread


_PINNED = _Pinned()


@contextlib.contextmanager
def _one_blas_thread():
    """Context manager limiting BLAS to one thread (a no-op without threadpoolctl, or
    inside another one)."""
    global _CONTROLLER
    if _PINNED.on:
        yield
        return
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        limit = _CONTROLLER.limit(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn/scipy
        limit = contextlib.nullcontext()
    with limit:
        _PINNED.on = True
        try:
            yield
        finally:
            _PINNED.on = False


#: Configs per piece of a large D² evaluation. Pieces are fixed by position in the request
#: (never by the number of threads), and each piece is one product on one BLAS thread, so
#: every computed D² has the same bits whatever the number of threads.
PIECE = 2048
#: in :meth:`KernelData.d2_below_range`, the costly terms of a piece are computed in place
#: (no gather) when the bound keeps more than this fraction of its configs
BELOW_IN_PLACE = 0.3
#: in :meth:`KernelData.d2_below`, the configs whose costly-term rows are gathered at once
GATHER = 256
_EXECUTOR: list = [None, 0, None]  # pool, its threads, set_threads override


def set_threads(n: int | None) -> None:
    """Use ``n`` threads for D² evaluation (None: back to the default of :func:`n_threads`)."""
    _EXECUTOR[2] = None if n is None else max(1, int(n))


@contextlib.contextmanager
def all_cpus():
    """D² on every CPU this process may use inside the block, unless ``--jobs`` /
    :func:`set_threads` or ``MLPDESIGN_THREADS`` chose: for a serial select or report
    (an MPI rank keeps one thread per rank). Same bits for any number of threads."""
    if _EXECUTOR[2] is not None or os.environ.get("MLPDESIGN_THREADS", "").strip():
        yield
        return
    _EXECUTOR[2] = n_threads(None)
    try:
        yield
    finally:
        _EXECUTOR[2] = None


class _Serial(threading.local):
    on = False  # this thread runs one item of items_map: its D² pieces run serially


_SERIAL = _Serial()


#: (fn, items) of the running forked :func:`items_map`: its workers inherit it at fork
_FORKED: list = [None]


def _forked_item(k: int):
    """Item ``k`` of the forked :func:`items_map`, in a worker: serial, BLAS on one thread."""
    fn, items = _FORKED[0]
    _SERIAL.on = True
    with _one_blas_thread():
        return fn(items[k])


def can_fork() -> bool:
    """Whether worker processes may be forked here: POSIX fork, and no MPI started (an
    MPI process must not fork)."""
    if "fork" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return False
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is None or not mpi.Is_initialized() or bool(mpi.Is_finalized())


def _forked_map(fn, items: list, workers: int, done) -> list:
    """:func:`items_map` on ``workers`` forked processes (the data copy-on-write)."""
    _FORKED[0] = (fn, items)
    out = []
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for k, res in enumerate(pool.imap(_forked_item, range(len(items)))):
                out.append(res)
                if done is not None:
                    done(items[k])
    finally:
        _FORKED[0] = None
    return out


def items_map(fn, items: list, done=None, fork: bool = False) -> list:
    """``[fn(x) for x in items]``, the items on :func:`n_threads` threads at once (each
    item's D² pieces then run serially on its thread, BLAS on one thread: the same bits as
    one item at a time). ``done(x)`` is called in the caller's thread, in order, as each
    item is finished. For independent work too fine for pieces: the report's designs.

    ``fork``: on forked worker processes instead of threads where :func:`can_fork`, for
    work that holds the GIL much of its time (the covering curves' Psi tracking: 4 random
    designs of 1000 on the 100 000 paper pool, 2 cores: 17.7 s serial, 16.1 s on two
    threads, 7.8 s on two processes); ``fn`` and the items reach the workers by fork, only
    the results are pickled back. Same bits either way."""
    threads = min(n_threads(1), len(items))
    if threads > 1 and fork and can_fork():
        return _forked_map(fn, items, threads, done)
    if threads <= 1:
        out = []
        for x in items:
            out.append(fn(x))
            if done is not None:
                done(x)
        return out

    def serial(x):
        _SERIAL.on = True
        try:
            return fn(x)
        finally:
            _SERIAL.on = False

    out = []
    with _one_blas_thread(), ThreadPoolExecutor(threads, "mlpdesign-items") as ex:
        for x, fut in zip(items, [ex.submit(serial, x) for x in items], strict=True):
            out.append(fut.result())
            if done is not None:
                done(x)
    return out


def n_threads(default: int | None = None) -> int:
    """Threads: :func:`set_threads`, else ``MLPDESIGN_THREADS``, else ``default``, else the
    CPUs this process may use (its affinity mask: what SLURM or taskset gave it), at most 8.

    D² evaluation defaults to one thread, except inside :func:`all_cpus` (serial select
    and report): on the 2-core machine a second thread made the 1000-of-100 000 selection
    faster (7.3-7.7 s vs 8.9-9.3 s end to end, same bits; it was slower before the engine's
    pieces grew). The pair embedding and centring of a store load use every CPU. One
    thread inside an item of :func:`items_map`."""
    if _SERIAL.on:
        return 1
    if _EXECUTOR[2] is not None:
        return _EXECUTOR[2]
    env = os.environ.get("MLPDESIGN_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if default is not None:
        return default
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _pieces_map(fn, pieces: list, default_threads: int | None = 1) -> list:
    """``[fn(p) for p in pieces]``, on a thread pool when there are several pieces and
    threads (numpy's gathers and BLAS release the GIL), BLAS pinned to one thread."""
    threads = n_threads(default_threads)
    if len(pieces) == 1:
        return [fn(pieces[0])]
    with _one_blas_thread():
        if threads == 1:
            return [fn(p) for p in pieces]
        if _EXECUTOR[0] is None or _EXECUTOR[1] != threads:
            if _EXECUTOR[0] is not None:
                _EXECUTOR[0].shutdown()
            _EXECUTOR[0] = ThreadPoolExecutor(threads, thread_name_prefix="mlpdesign-d2")
            _EXECUTOR[1] = threads
        return list(_EXECUTOR[0].map(fn, pieces))


def one_heap() -> None:
    """Let every thread allocate from glibc's main heap (``mallopt(M_ARENA_MAX, 1)``).

    Called on import, before the D² threads and tqdm's monitor start: glibc fixes the
    limit when the first thread makes an arena, and ``MALLOC_ARENA_MAX`` in the
    environment wins. Each D² thread would otherwise get an arena whose free top chunk
    ``malloc_trim`` does not hand back. Select -n 1000 on the 100 000-config paper pool,
    peak RSS over 3 runs: 796-815 MiB with an arena per thread, 789 MiB in one heap
    (both with :data:`GATHER`), the same CPU seconds: the D² threads allocate a few large
    blocks per piece, so the shared heap's lock is not contended."""
    if _ONE_HEAP[0] or os.environ.get("MALLOC_ARENA_MAX"):
        return
    _ONE_HEAP[0] = True
    mallopt = _glibc("mallopt")
    if mallopt:
        mallopt(-8, 1)  # M_ARENA_MAX (malloc.h)


_ONE_HEAP: list = [False]


@functools.cache
def _glibc(name: str):
    """glibc's function ``name`` (None where the C library is not glibc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


one_heap()


def release_free_heap() -> None:
    """Hand the heap's freed pages back to the OS (glibc's ``malloc_trim``; a no-op
    elsewhere). A store load frees many temporaries of a few MB, which glibc keeps in its
    heap: on the 100 000-config paper pool they held 135 MiB of the peak RSS."""
    trim = _glibc("malloc_trim")
    if trim:
        trim(0)


def _segment_sum(v: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum ``v`` over consecutive segments of lengths ``counts`` (empty segments give 0)."""
    out = np.zeros(len(counts), dtype=np.float64)
    nz = counts > 0
    if not nz.any():
        return out
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[nz]
    out[nz] = np.add.reduceat(v, starts)
    return out


def _rows_of(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of configs ``idx`` (in that order) and the row count of each config."""
    starts, counts = offsets[idx], offsets[idx + 1] - offsets[idx]
    total = int(counts.sum())
    if total == len(idx) and np.all(counts == 1):
        return starts, counts
    # row j of the result belongs to config position p(j): start[p] + (j - first row of p)
    first = np.cumsum(counts) - counts
    rows = np.repeat(starts - first, counts) + np.arange(total, dtype=np.int64)
    return rows, counts


def _ipow(v: np.ndarray, z: int) -> np.ndarray:
    """``v**z`` for a positive integer ``z`` by repeated squaring (faster than np.power)."""
    if z == 1:
        return v
    out = None
    base = v
    while z:
        if z & 1:
            out = base if out is None else out * base
        z >>= 1
        if z:
            base = base * base
    return out


#: Queries with at most this many rows are multiplied one row at a time: OpenBLAS's
#: matrix-matrix product with 2-4 columns reads the pool rows at a third of the speed of
#: its matrix-vector product (measured on this project's 2-core machines).
GEMV_ROWS = 4


def _products(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``X @ Q.T`` in float64: pool rows times query rows."""
    m = Q.shape[0]
    if 1 <= m <= GEMV_ROWS:
        G = np.empty((X.shape[0], m))
        for j in range(m):
            G[:, j] = X @ Q[j]
        return G
    return (X @ Q.T).astype(np.float64, copy=False)


def _check_finite(a: np.ndarray, what: str) -> None:
    if not np.isfinite(a).all():
        raise MlpdesignError(f"{what} contains NaN or infinite values")


# ---------------------------------------------------------------------------- terms


def _check_kernel(kind: str, zeta, length: float, delta: float) -> None:
    """Refuse a term that is not a positive-definite kernel of a distance."""
    if kind == "dot":
        if int(zeta) != zeta or zeta < 1:
            raise MlpdesignError(
                f"zeta must be a positive integer for a distance "
                f"(dot_product^zeta is then a kernel), got {zeta}"
            )
    elif kind == "gauss":
        if not length > 0:
            raise MlpdesignError(f"length scale must be positive, got {length}")
    else:
        raise MlpdesignError(f"unknown kernel term kind {kind!r}")
    if not delta > 0:
        raise MlpdesignError(f"delta must be positive, got {delta}")


def _array_reader(rows, offsets, block: int, what: str):
    """(reader, offsets, n_rows, dim, first block) of rows given as an array; the reader
    returns copies, since :func:`_centre` centres them in place."""
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise MlpdesignError(f"rows of {what} must be a 2-D (n_rows, dim) array")
    n_rows, dim = x.shape
    off = (
        np.arange(n_rows + 1, dtype=np.int64)
        if offsets is None
        else np.asarray(offsets, dtype=np.int64)
    )

    def get(a, b, out=None):
        if out is None:
            return x[a:b].copy()
        out[...] = x[a:b]
        return out

    return get, off, n_rows, dim, x[:block]


#: rows centred per piece in :func:`_centre` (on threads). ``x . mu`` is one BLAS call
#: per piece, whose last bits depend on the piece's row count: keep it fixed
CENTRE_ROWS = 1 << 13


def _centre(get, n_rows: int, dim: int, mu, dtype, dot: bool, what: str):
    """Rows ``get(a, b)`` centred on ``mu`` into one ``(n_rows, dim)`` array of ``dtype``
    (the only copy of them), with ``aux`` (``x . mu`` for a dot product term, else
    ``|x - mu|²``) and the largest ``|x - mu|²`` of the rounded rows. ``get(a, b, out)``
    reads rows ``a .. b-1`` (into ``out`` when given), centred here in place, in pieces on
    :func:`n_threads` threads."""
    xc_all = np.empty((n_rows, dim), dtype=dtype)
    aux = np.empty(n_rows)
    tiny = np.finfo(dtype).tiny
    same = np.dtype(dtype) == np.float64

    def piece(a: int) -> float:
        b = min(n_rows, a + CENTRE_ROWS)
        if same:  # read into place and centre there
            xb = get(a, b, out=xc_all[a:b])
        else:
            xb = np.asarray(get(a, b), dtype=np.float64).reshape(b - a, dim)
        _check_finite(xb, f"descriptor rows of {what}")
        if dot:
            aux[a:b] = xb @ mu
        xb -= mu
        for s0 in range(0, b - a, 1024):  # no subnormals (2x slower); small masks
            xs = xb[s0 : s0 + 1024]
            xs[(xs > -tiny) & (xs < tiny)] = 0.0
        if not same:
            xc_all[a:b] = xb
        xc = xb if same else xc_all[a:b].astype(np.float64)  # as stored: the rounded values
        sq = np.einsum("ij,ij->i", xc, xc)
        if not dot:
            aux[a:b] = sq
        return float(sq.max(initial=0.0))

    m2 = max(_pieces_map(piece, list(range(0, n_rows, CENTRE_ROWS)), None), default=0.0)
    return xc_all, aux, m2


@dataclass
class Term:
    """One additive kernel term: rows of one descriptor in CSR form and its kernel.

    ``kind`` is ``"dot"`` (``(x.y)^zeta``) or ``"gauss"`` (``exp(-|x-y|^2/2 length^2)``).
    ``rows`` are centred (``x - mu``) in the working dtype; ``aux`` is ``mu . x`` (dot) or
    ``|x - mu|^2`` (gauss) in float64. Build with :meth:`dot` / :meth:`gauss`.
    """

    kind: str
    rows: np.ndarray
    weights: np.ndarray
    offsets: np.ndarray
    delta: float
    zeta: int
    length: float
    mu: np.ndarray
    aux: np.ndarray
    name: str = ""
    meta: dict = field(default_factory=dict)
    max_centred_norm: float = 0.0

    @property
    def n(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.rows.shape[1]

    @functools.cached_property
    def one_row(self) -> bool:
        """Every config has exactly one row (the pair term's embedding): a config's rows
        are its index, and its value needs no segment sum."""
        o = np.asarray(self.offsets)
        return bool(o[-1] == len(o) - 1 and np.array_equal(o, np.arange(len(o))))

    def rows_of(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of configs ``idx`` (in that order) and the row count of each."""
        if self.one_row:
            return idx, np.ones(len(idx), dtype=np.int64)
        return _rows_of(self.offsets, idx)

    @classmethod
    def build(
        cls,
        kind: str,
        rows,
        offsets=None,
        weights=None,
        *,
        zeta: int = 1,
        length: float = 1.0,
        delta: float = 1.0,
        mu=None,
        dtype="float64",
        name: str = "",
        meta: dict | None = None,
        block: int = 1 << 13,
    ) -> Term:
        """Centre ``rows`` on ``mu`` (default: the mean of the first ``block`` rows) and
        store them in ``dtype``; ``rows`` may be an array or a callable ``rows(r0, r1)``
        returning that row range (so a store is read block by block, never all in
        float64 at once)."""
        if dtype not in DTYPES:
            raise MlpdesignError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        what = name or kind
        if callable(rows):
            get = rows
            if offsets is None:
                raise MlpdesignError("internal error: offsets needed with a row reader")
            off = np.asarray(offsets, dtype=np.int64)
            n_rows = int(off[-1])
            first = np.asarray(get(0, min(n_rows, block)), dtype=np.float64)
            dim = first.shape[1] if first.ndim == 2 else 1
        else:
            get, off, n_rows, dim, first = _array_reader(rows, offsets, block, what)
        if off.ndim != 1 or off[0] != 0 or off[-1] != n_rows or np.any(np.diff(off) < 0):
            raise MlpdesignError(f"offsets of {what} must rise from 0 to {n_rows}")
        w = (
            np.ones(n_rows)
            if weights is None
            else np.asarray(weights, dtype=np.float64).reshape(-1)
        )
        if w.shape != (n_rows,):
            raise MlpdesignError(f"weights of {what} must have {n_rows} entries")
        _check_finite(w, f"weights of {what}")
        _check_kernel(kind, zeta, length, delta)
        if mu is None:
            _check_finite(first, f"descriptor rows of {what}")
            mu = first.reshape(len(first), dim).mean(axis=0) if len(first) else np.zeros(dim)
        mu = np.asarray(mu, dtype=np.float64)
        if mu.shape != (dim,):
            raise MlpdesignError(
                f"{what}: dimension {dim} differs from the reference's {mu.shape[0]}"
            )
        del first  # only its mean and shape were needed
        xc_all, aux, m2 = _centre(get, n_rows, dim, mu, dtype, kind == "dot", what)
        return cls(
            kind,
            xc_all,
            w,
            off,
            float(delta),
            int(zeta),
            float(length),
            mu,
            aux,
            name,
            dict(meta or {}),
            math.sqrt(m2),
        )

    @classmethod
    def dot(cls, rows, offsets=None, weights=None, zeta: int = 1, delta: float = 1.0, **kw) -> Term:
        """``delta^2 sum w_a w_b (x_a . x_b)^zeta`` (GAP ``dot_product``)."""
        return cls.build("dot", rows, offsets, weights, zeta=zeta, delta=delta, **kw)

    @classmethod
    def gauss(
        cls, rows, offsets=None, weights=None, length: float = 1.0, delta: float = 1.0, **kw
    ) -> Term:
        """``delta^2 sum w_a w_b exp(-|x_a - x_b|^2 / 2 length^2)`` (GAP ``ard_se``)."""
        return cls.build("gauss", rows, offsets, weights, length=length, delta=delta, **kw)

    def like(self, rows, offsets=None, weights=None, name: str | None = None) -> Term:
        """The same kernel on other rows, centred like this term (for a given set)."""
        return Term.build(
            self.kind,
            rows,
            offsets,
            weights,
            zeta=self.zeta,
            length=self.length,
            delta=self.delta,
            mu=self.mu,
            dtype=self.rows.dtype.name,
            name=self.name if name is None else name,
            meta=self.meta,
        )

    def same_kernel(self, other: Term) -> bool:
        return (self.kind, self.zeta, self.length, self.delta, self.dim) == (
            other.kind,
            other.zeta,
            other.length,
            other.delta,
            other.dim,
        )

    # -- the pair function on centred dot products G (float64), rows x query
    def _f(self, G: np.ndarray, aux_a: np.ndarray, aux_b: np.ndarray) -> np.ndarray:
        if self.kind == "dot":
            v = G + aux_a[:, None] + (aux_b[None, :] - self.mu @ self.mu)
            return _ipow(v, self.zeta)
        sq = aux_a[:, None] + aux_b[None, :] - 2.0 * G
        return np.exp(np.maximum(sq, 0.0) * (-0.5 / self.length**2))

    def diag(self, block: int = 1 << 10) -> np.ndarray:
        """``K_t(c, c)`` of every config, in float64 arithmetic on the stored rows (in
        blocks of ``block`` configs: a config's value does not depend on the block)."""
        out = np.empty(self.n)
        for c0 in range(0, self.n, block):
            c1 = min(self.n, c0 + block)
            counts = np.diff(self.offsets[c0 : c1 + 1])
            for m in np.unique(counts):
                cfg = c0 + np.flatnonzero(counts == m)
                if m == 0:
                    out[cfg] = 0.0
                    continue
                r = self.offsets[cfg][:, None] + np.arange(m)
                X = self.rows[r].astype(np.float64, copy=False)  # (nc, m, d): one copy
                G = np.einsum("cid,cjd->cij", X, X)
                a = self.aux[r]
                if self.kind == "dot":
                    v = G + a[:, :, None] + a[:, None, :] - self.mu @ self.mu
                    v = v if self.zeta == 1 else v**self.zeta
                else:
                    sq = a[:, :, None] + a[:, None, :] - 2.0 * G
                    v = np.exp(np.maximum(sq, 0.0) * (-0.5 / self.length**2))
                w = self.weights[r]
                out[cfg] = np.einsum("ci,cij,cj->c", w, v, w)
        return self.delta**2 * out

    def values(
        self,
        q_rows: np.ndarray,
        q_aux: np.ndarray,
        q_w: np.ndarray,
        rows: slice | np.ndarray,
        counts: np.ndarray,
    ) -> np.ndarray:
        """K_t between one query config (its rows) and the configs whose rows are
        ``rows`` (a slice: a contiguous block, no copy; or gathered indices), whose row
        counts are ``counts``."""
        return self.values_of(self.gather(rows), q_rows, q_aux, q_w, counts)

    def gather(self, rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, aux, weights) of these rows, for :meth:`values_of` against many queries."""
        return self.rows[rows], self.aux[rows], self.weights[rows]

    def values_of(self, gathered, q_rows, q_aux, q_w, counts: np.ndarray) -> np.ndarray:
        """:meth:`values` on rows gathered once by :meth:`gather` (the same bits)."""
        X, aux, w = gathered
        if X.shape[0] == 0:
            return np.zeros(len(counts))
        with _one_blas_thread():  # same bits on any machine; threads come from pieces
            G = _products(X, q_rows)
        v = self._f(G, aux, q_aux)
        v = (v @ q_w) * w
        if self.one_row:  # one row a config: v is the sum
            return self.delta**2 * v.astype(np.float64, copy=False)
        return self.delta**2 * _segment_sum(v, counts)

    def err_stats(self) -> dict:
        """Per-term magnitudes for the rounding-error bound."""
        M = self.max_centred_norm
        P = M + float(np.sqrt(self.mu @ self.mu))
        W = _segment_sum(np.abs(self.weights), np.diff(self.offsets))
        return {
            "M": M,
            "P": P,
            "W": W,
            "rows": int(np.diff(self.offsets).max(initial=0)),
            "u": _unit_roundoff(self.rows.dtype),
            "d": self.dim,
        }


@dataclass
class Query:
    """One configuration's rows for every term, ready to be compared with a pool."""

    rows: list[np.ndarray]
    aux: list[np.ndarray]
    weights: list[np.ndarray]
    diag_t: np.ndarray  # (n_terms,) K_t(q, q)
    diag: float  # K(q, q) in the mode's meaning
    n_atoms: int


# ---------------------------------------------------------------------------- kernel data


class KernelData:
    """The configurations of a pool (or a given set) under one kernel; see module doc."""

    def __init__(
        self,
        terms: Sequence[Term],
        n_atoms=None,
        *,
        normalize: bool = True,
        per_atom: bool = False,
        balance: bool = False,
        diag_t: np.ndarray | None = None,
    ) -> None:
        """``diag_t``: the ``(n_terms, n)`` values K_t(c, c) when they are known already
        (the design points of a streamed run carry theirs in their queries); else computed."""
        if not terms:
            raise MlpdesignError("a kernel needs at least one term")
        self.terms = list(terms)
        n = self.terms[0].n
        if any(t.n != n for t in self.terms):
            raise MlpdesignError("kernel terms disagree on the number of configurations")
        self.n = n
        self.n_atoms = (
            np.diff(self.terms[0].offsets)
            if n_atoms is None
            else np.asarray(n_atoms, dtype=np.int64)
        ).astype(np.float64)
        if self.n_atoms.shape != (n,):
            raise MlpdesignError(f"n_atoms must have {n} entries")
        self.normalize, self.per_atom, self.balance = bool(normalize), bool(per_atom), bool(balance)
        delta2 = np.array([t.delta**2 for t in self.terms])
        self.term_weight = delta2 / delta2.sum()
        if diag_t is None:
            diag_t = np.stack([t.diag() for t in self.terms])
        self.diag_t = np.asarray(diag_t, dtype=np.float64).reshape(len(self.terms), n)
        self.diag = self._combine_diag(self.diag_t, self.n_atoms)
        if (self.normalize or self.balance) and n:
            d = self.diag_t if self.balance else self.diag[None, :]
            bad = np.flatnonzero((d <= 0).any(axis=0))
            if len(bad):
                raise MlpdesignError(
                    f"configuration {bad[0]} has a zero kernel with itself "
                    "(no rows within the cutoff?): it cannot be normalised; "
                    "use --no-normalize"
                )
        self._stats = [t.err_stats() for t in self.terms]
        self.costly_evaluated = 0  # configs whose costly terms d2_below had to compute
        self._norm = self._norm_factors()
        self.eps = self.eps_with(self)

    @property
    def options(self) -> dict:
        return {
            "normalize": self.normalize,
            "per_atom": self.per_atom,
            "balance": self.balance,
            "dtype": self.terms[0].rows.dtype.name,
        }

    def _combine_diag(self, diag_t: np.ndarray, n_atoms) -> np.ndarray:
        d = diag_t.sum(axis=0)
        if self.per_atom and not (self.normalize or self.balance):
            d = d / np.asarray(n_atoms, dtype=np.float64) ** 2
        return d

    def _norm_factors(self) -> list[float]:
        """max over configs of W_t,c / (normalisation of c), per term (error bound)."""
        out = []
        for t, s in enumerate(self._stats):
            W = s["W"]
            if self.balance:
                a = W / np.sqrt(self.diag_t[t])
            elif self.normalize:
                a = W / np.sqrt(self.diag)
            elif self.per_atom:
                a = W / self.n_atoms
            else:
                a = W
            out.append(float(a.max(initial=0.0)))
        return out

    def eps_with(self, other: KernelData) -> float:
        """A bound on the rounding error of any computed D² between configs of ``self``
        and of ``other`` (same kernel), with a safety factor of 2."""
        total = 0.0
        vmax_all = 1.0
        for t, (sa, sb) in enumerate(zip(self._stats, other._stats, strict=True)):
            term = self.terms[t]
            g = _gamma(sa["d"] + 2, max(sa["u"], sb["u"]))
            ddot = g * sa["M"] * sb["M"] + 16 * _U64 * (sa["P"] + sa["M"]) * (sb["P"] + sb["M"])
            tiny = float(np.finfo(self.terms[t].rows.dtype).tiny)  # flushed subnormals
            ddot += 2 * sa["d"] * tiny * (sa["M"] + sb["M"] + 1.0)
            B = sa["P"] * sb["P"]
            if term.kind == "dot":
                z = term.zeta
                e = z * (B + ddot) ** (z - 1) * ddot + 4 * z * _U64 * B**z
                vmax = B**z
            else:
                e = (2 * ddot + 4 * _U64 * (sa["M"] ** 2 + sb["M"] ** 2)) / (
                    2 * term.length**2
                ) + 4 * _U64
                vmax = 1.0
            e += 4 * (sa["rows"] + sb["rows"] + 4) * _U64 * vmax
            coeff = self.term_weight[t] if self.balance else 1.0
            total += 2 * coeff * term.delta**2 * e * self._norm[t] * other._norm[t]
            vmax_all = max(vmax_all, term.delta**2 * vmax)
        scale = (
            1.0
            if (self.normalize or self.balance)
            else max(float(self.diag.max(initial=0.0)), float(other.diag.max(initial=0.0)), 1e-300)
        )
        return 2.0 * (total + 64 * _U64 * scale)

    def bound_terms(self) -> list[tuple[float, int, float]]:
        """Per term what :attr:`eps` depends on, to be merged over blocks of a pool: the
        largest centred row norm, the most rows per config, the largest norm factor."""
        return [(st["M"], st["rows"], nm) for st, nm in zip(self._stats, self._norm, strict=True)]

    def eps_merged(self, terms, diag_max: float, other: KernelData | None = None) -> float:
        """:attr:`eps` of a pool of blocks like this one (same kernel and centring) whose
        merged :meth:`bound_terms` are ``terms`` and largest K(x, x) ``diag_max``; with
        ``other``, the larger of that and the bound against ``other``."""
        px = copy.copy(self)
        mu_norm = [float(np.sqrt(t.mu @ t.mu)) for t in px.terms]
        px._stats = [
            dict(st, M=m, P=m + mn, rows=r)
            for st, (m, r, _), mn in zip(self._stats, terms, mu_norm, strict=True)
        ]
        px._norm = [nm for _, _, nm in terms]
        px.diag = np.array([diag_max])
        eps = px.eps_with(px)
        return float(max(eps, px.eps_with(other)) if other is not None else eps)

    # -- queries
    def query(self, i: int) -> Query:
        """Config ``i`` as a query against this (or another compatible) KernelData."""
        rows, aux, w = [], [], []
        for t in self.terms:
            a, b = int(t.offsets[i]), int(t.offsets[i + 1])
            rows.append(t.rows[a:b])
            aux.append(t.aux[a:b])
            w.append(t.weights[a:b])
        return Query(
            rows, aux, w, self.diag_t[:, i].copy(), float(self.diag[i]), int(self.n_atoms[i])
        )

    def _d2(self, Kt: list[np.ndarray], sel, q: Query) -> np.ndarray:
        if self.balance:
            k = sum(
                self.term_weight[t] * Kt[t] / np.sqrt(self.diag_t[t, sel] * q.diag_t[t])
                for t in range(len(Kt))
            )
            d2 = 2.0 - 2.0 * k
        elif self.normalize:
            d2 = 2.0 - 2.0 * sum(Kt) / np.sqrt(self.diag[sel] * q.diag)
        else:
            K = sum(Kt)
            if self.per_atom:
                K = K / (self.n_atoms[sel] * q.n_atoms)
            d2 = self.diag[sel] + q.diag - 2.0 * K
        return np.maximum(d2, 0.0)

    def _k(self, Kt: list[np.ndarray], sel, q: Query) -> np.ndarray:
        if self.balance:
            return sum(
                self.term_weight[t] * Kt[t] / np.sqrt(self.diag_t[t, sel] * q.diag_t[t])
                for t in range(len(Kt))
            )
        K = sum(Kt)
        if self.normalize:
            return K / np.sqrt(self.diag[sel] * q.diag)
        if self.per_atom:
            return K / (self.n_atoms[sel] * q.n_atoms)
        return K

    def _terms_range(self, q: Query, c0: int, c1: int) -> list[np.ndarray]:
        out = []
        for t, term in enumerate(self.terms):
            o = term.offsets
            out.append(
                term.values(
                    q.rows[t],
                    q.aux[t],
                    q.weights[t],
                    slice(int(o[c0]), int(o[c1])),
                    np.diff(o[c0 : c1 + 1]),
                )
            )
        return out

    def _terms_subset(self, q: Query, idx: np.ndarray) -> list[np.ndarray]:
        out = []
        for t, term in enumerate(self.terms):
            rows, counts = term.rows_of(idx)
            out.append(term.values(q.rows[t], q.aux[t], q.weights[t], rows, counts))
        return out

    def d2_range(self, q: Query, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """D² from ``q`` to the contiguous block of configs ``c0 .. c1-1`` (in pieces of
        :data:`PIECE` configs from ``c0``, on :func:`n_threads` threads)."""
        c1 = self.n if c1 is None else c1

        def piece(a: int) -> np.ndarray:
            b = min(c1, a + PIECE)
            return self._d2(self._terms_range(q, a, b), slice(a, b), q)

        starts = list(range(c0, c1, PIECE)) or [c0]
        if len(starts) == 1:
            return self._d2(self._terms_range(q, c0, c1), slice(c0, c1), q)
        return np.concatenate(_pieces_map(piece, starts))

    def d2_subset(self, q: Query, idx) -> np.ndarray:
        """D² from ``q`` to configs ``idx`` (any order; in pieces as :meth:`d2_range`)."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            return np.zeros(0)
        if len(idx) <= PIECE:
            return self._d2(self._terms_subset(q, idx), idx, q)

        def piece(a: int) -> np.ndarray:
            sub = idx[a : a + PIECE]
            return self._d2(self._terms_subset(q, sub), sub, q)

        return np.concatenate(_pieces_map(piece, list(range(0, len(idx), PIECE))))

    def _cheap_first(self) -> list[int]:
        """Terms in order of cost per config (rows per config x dimension)."""
        cost = [t.rows.shape[0] / max(1, t.n) * t.dim for t in self.terms]
        return sorted(range(len(self.terms)), key=lambda t: (cost[t], t))

    def d2_below(self, q: Query, idx, psi, eps: float | None = None) -> np.ndarray:
        """D² from ``q`` to configs ``idx`` wherever it may be below ``psi`` (per config);
        elsewhere a certified lower bound that is at least ``psi``.

        The cheapest term is computed first; each other term is bounded by Cauchy-Schwarz,
        ``|K_t(p, q)| <= sqrt(K_t(p, p) K_t(q, q))``, which bounds D² from below. Configs
        whose bound exceeds ``psi + 2 eps`` cannot come below ``psi`` in the full
        computation (``eps`` bounds the rounding of both), so the costly terms are computed
        only for the others: with the paper's kernel the pair term is 5x cheaper than SOAP
        and carries almost all of D², so most SOAP rows are never read. ``eps``: the
        rounding bound to use (default :attr:`eps`; a block of a pool passes the pool's).
        """
        idx = np.asarray(idx, dtype=np.int64)
        psi = np.asarray(psi, dtype=np.float64)
        if len(self.terms) == 1 or len(idx) == 0:
            self.costly_evaluated += len(idx)
            return self.d2_subset(q, idx)

        def piece(a: int) -> tuple[np.ndarray, int]:
            return self._below_piece(q, idx[a : a + PIECE], psi[a : a + PIECE], None, eps)

        out = _pieces_map(piece, list(range(0, len(idx), PIECE)))
        self.costly_evaluated += sum(k for _, k in out)
        return np.concatenate([d for d, _ in out])

    def d2_below_range(
        self, q: Query, c0: int, c1: int, psi, eps: float | None = None
    ) -> np.ndarray:
        """:meth:`d2_below` for the contiguous configs ``c0 .. c1-1`` (``psi``: one value
        per config; ``-inf``: not wanted, ``inf``: wanted exactly), in pieces of
        :data:`PIECE` configs from ``c0`` as :meth:`d2_range`. The cheap term is computed
        in place (no gather of rows); the costly ones for the configs the bound keeps,
        gathered, or in place when they are more than :data:`BELOW_IN_PLACE` of a piece.

        For large cells (~100 SOAP rows per config against one pair-embedding row) the
        pass reads the SOAP rows only of the configs whose D² may come below ``psi``."""
        psi = np.asarray(psi, dtype=np.float64)
        if len(self.terms) == 1 or c1 <= c0:
            self.costly_evaluated += max(0, c1 - c0)
            return self.d2_range(q, c0, c1)

        def piece(a: int) -> tuple[np.ndarray, int]:
            b = min(c1, a + PIECE)
            return self._below_piece(q, np.arange(a, b), psi[a - c0 : b - c0], (a, b), eps)

        out = _pieces_map(piece, list(range(c0, c1, PIECE)))
        self.costly_evaluated += sum(k for _, k in out)
        return np.concatenate([d for d, _ in out])

    def _term_values(self, t: int, q: Query, sub: np.ndarray, span) -> np.ndarray:
        """Term ``t`` between ``q`` and configs ``sub``: their rows gathered, or in place
        when ``span = (a, b)`` says that ``sub`` is the contiguous run ``a .. b-1``."""
        term = self.terms[t]
        if span is None:
            rows, counts = term.rows_of(sub)
        else:
            o = term.offsets
            rows, counts = (
                slice(int(o[span[0]]), int(o[span[1]])),
                np.diff(o[span[0] : span[1] + 1]),
            )
        return term.values(q.rows[t], q.aux[t], q.weights[t], rows, counts)

    def _gathered_values(self, t: int, q: Query, sel: np.ndarray) -> np.ndarray:
        """Term ``t`` between ``q`` and configs ``sel``, their rows gathered :data:`GATHER`
        configs at a time: a bound on the rows copied at once (two D² threads gathering
        2048 SOAP configs each held 21 MiB of the paper pool's select peak)."""
        if len(sel) <= GATHER:
            return self._term_values(t, q, sel, None)
        return np.concatenate(
            [self._term_values(t, q, sel[a : a + GATHER], None) for a in range(0, len(sel), GATHER)]
        )

    def _below_piece(self, q: Query, sub, psi, span, eps=None) -> tuple[np.ndarray, int]:
        """One piece of :meth:`d2_below` (``span`` None) or :meth:`d2_below_range`: D²
        (or its bound) and the number of configs whose costly terms were computed."""
        first, *rest = self._cheap_first()
        lim = psi + 2.0 * (self.eps if eps is None else eps)
        Kt: list = [None] * len(self.terms)
        Kt[first] = self._term_values(first, q, sub, span)
        for t in rest:
            Kt[t] = np.sqrt(self.diag_t[t, sub] * q.diag_t[t])
        where = sub if span is None else slice(*span)
        d2 = self._d2(Kt, where, q)
        need = np.flatnonzero(d2 < lim)
        if len(need) == 0:
            return d2, 0
        if span is not None and len(need) > BELOW_IN_PLACE * len(sub):
            for t in rest:
                Kt[t] = self._term_values(t, q, sub, span)
            d2[need] = self._d2(Kt, where, q)[need]
            return d2, len(sub)
        keep = [k[need] for k in Kt]
        sel = sub[need]
        for t in rest:
            keep[t] = self._gathered_values(t, q, sel)
        d2[need] = self._d2(keep, sel, q)
        return d2, len(need)

    def d2_many(self, rows, c0: int, c1: int) -> np.ndarray:
        """``(len rows, c1 - c0)`` D² from configs ``rows`` to configs ``c0 .. c1-1``: one
        matrix product per term for all the rows together (not one pass per row)."""
        kd = self
        qs = [kd.query(int(i)) for i in rows]
        kt = []  # per term: (c1-c0, len(rows)) K_t values
        for t, term in enumerate(kd.terms):
            o = term.offsets
            sl = slice(int(o[c0]), int(o[c1]))
            q_rows = [q.rows[t] for q in qs]
            owner = np.repeat(np.arange(len(qs)), [len(r) for r in q_rows])
            x = term.rows[sl]
            if x.shape[0] == 0 or len(owner) == 0:
                kt.append(np.zeros((c1 - c0, len(qs))))
                continue
            g = (x @ np.concatenate(q_rows).T).astype(np.float64, copy=False)
            v = term._f(g, term.aux[sl], np.concatenate([q.aux[t] for q in qs]))
            v *= np.concatenate([q.weights[t] for q in qs])[None, :]
            if len(owner) != len(qs):  # sum each query's columns (its rows)
                n_q = np.bincount(owner, minlength=len(qs))
                first = np.minimum(np.cumsum(n_q) - n_q, len(owner) - 1)
                v = np.add.reduceat(v, first, axis=1)
                v[:, n_q == 0] = 0.0
            v *= term.weights[sl][:, None]  # (rows in chunk, queries)
            counts = np.diff(o[c0 : c1 + 1])
            if len(counts) == x.shape[0]:  # one row per config: nothing to sum
                seg = v
            else:
                starts = np.minimum(o[c0:c1] - o[c0], max(x.shape[0] - 1, 0))
                seg = np.add.reduceat(v, starts, axis=0)
                seg[counts == 0] = 0.0
            kt.append(term.delta**2 * seg)
        out = np.empty((len(qs), c1 - c0))
        for j, q in enumerate(qs):
            out[j] = kd._d2([k[:, j] for k in kt], slice(c0, c1), q)
        return out

    def k_subset(self, q: Query, idx) -> np.ndarray:
        """Kernel k (per the mode) between ``q`` and configs ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        return self._k(self._terms_subset(q, idx), idx, q)

    def d2_row(self, i: int) -> np.ndarray:
        """D² from config ``i`` to every config (one full pass)."""
        return self.d2_range(self.query(i), 0, self.n)

    def _block(self, idx_a, idx_b, combine) -> np.ndarray:
        """Rows of ``combine(Kt, idx_b, query a)`` for every a, the rows of ``idx_b``
        gathered once (the bits of :meth:`k_subset` / :meth:`d2_subset` per row)."""
        idx_b = np.asarray(idx_b, dtype=np.int64)
        out = np.empty((len(idx_a), len(idx_b)))
        if len(idx_b) == 0:
            return out
        parts = []
        for term in self.terms:
            rows, counts = term.rows_of(idx_b)
            parts.append((term.gather(rows), counts))
        for r, i in enumerate(idx_a):
            q = self.query(int(i))
            kt = [
                term.values_of(g, q.rows[t], q.aux[t], q.weights[t], counts)
                for t, (term, (g, counts)) in enumerate(zip(self.terms, parts, strict=True))
            ]
            out[r] = combine(kt, idx_b, q)
        return out

    def k_block(self, idx_a, idx_b) -> np.ndarray:
        """``(len a, len b)`` kernel matrix k between configs ``idx_a`` and ``idx_b``."""
        return self._block(idx_a, idx_b, self._k)

    def d2_block(self, idx_a, idx_b) -> np.ndarray:
        """``(len a, len b)`` matrix of D² between configs ``idx_a`` and ``idx_b``."""
        return self._block(idx_a, idx_b, self._d2)

    def min_d2_to(self, idx) -> np.ndarray:
        """Min D² from every config to the configs ``idx`` (e.g. a design: the covering
        radius is the max of this), with the exact bounds of :mod:`mlpdesign.kernels.nearest`."""
        from mlpdesign.kernels.nearest import min_d2_to

        return min_d2_to(self, idx)

    def compatible(self, other: KernelData) -> None:
        """Raise unless ``other`` uses the same kernel, centring and options."""
        if len(self.terms) != len(other.terms) or not all(
            a.same_kernel(b) and np.array_equal(a.mu, b.mu) and a.meta == b.meta
            for a, b in zip(self.terms, other.terms, strict=True)
        ):
            raise MlpdesignError("the given set uses another kernel or descriptor than the pool")
        if self.options != other.options:
            raise MlpdesignError("internal error: kernel options differ between pool and given set")


# ---------------------------------------------------------------------------- pair term


def pair_grid(
    cutoff: float, theta: float, step: float | None = None, r_min: float = 0.0
) -> np.ndarray:
    """Radial grid for :func:`pair_embedding`: spacing ``theta/3`` by default, from
    ``r_min - 7 theta`` to ``cutoff + 7 theta`` (the Gaussians are below e^-49 outside).

    The rectangle rule on a Gaussian integrand of width theta/2 with spacing h has a
    relative error of about 2 exp(-pi^2 theta^2 / 2 h^2): 1e-19 at h = theta/3.
    """
    h = theta / 3.0 if step is None else float(step)
    if not (h > 0 and theta > 0 and cutoff > r_min):
        raise MlpdesignError(f"bad pair grid: cutoff={cutoff}, theta={theta}, step={h}")
    lo = math.floor((r_min - 7 * theta) / h)
    hi = math.ceil((cutoff + 7 * theta) / h)
    return np.arange(lo, hi + 1, dtype=np.float64) * h


def pair_embedding(
    r,
    weights,
    offsets,
    theta: float,
    grid: np.ndarray,
    block: int = 1 << 16,
    out: np.ndarray | None = None,
    threads: bool = True,
) -> np.ndarray:
    """Embed each config's pairs as ``e(x_g) = c sum_i w_i exp(-(x_g - r_i)^2 / theta^2)``.

    With ``c = sqrt(h / (theta sqrt(pi/2)))`` the dot product of two embeddings equals
    ``sum_ij w_i w_j exp(-(r_i - r_j)^2 / 2 theta^2)`` (an integral of two Gaussians of
    width theta/sqrt 2, done by the rectangle rule on ``grid``). Returns (n_configs, G).
    Equal consecutive distances of a config (i-j and j-i, +R and -R images) are merged
    first, and each Gaussian is evaluated only within 7 theta of its centre (beyond, it is
    below e^-49 of its peak). ``out``: write into this (n_configs, G) array instead;
    ``threads=False``: one thread (inside another thread pool). Each config's row has
    the same bits whatever ``block``, ``threads`` and the configs embedded beside it.
    """
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    off = np.asarray(offsets, dtype=np.int64)
    _check_finite(r, "pair distances")
    G = len(grid)
    h = float(grid[1] - grid[0])
    if len(r) and (r.min() < grid[0] + 7 * theta - 1e-9 or r.max() > grid[-1] - 7 * theta + 1e-9):
        raise MlpdesignError(
            f"pair distances {r.min():.3g}..{r.max():.3g} fall outside the embedding grid "
            f"{grid[0] + 7 * theta:.3g}..{grid[-1] - 7 * theta:.3g}"
        )
    c = math.sqrt(h / (theta * math.sqrt(math.pi / 2)))
    n = len(off) - 1
    if out is None:
        out = np.zeros((n, G))
    else:
        out[...] = 0.0
    if len(r) == 0:
        return out
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(off))
    first = np.flatnonzero(np.r_[True, (r[1:] != r[:-1]) | (owner[1:] != owner[:-1])])
    w = np.add.reduceat(w, first)
    r, owner = r[first], owner[first]
    width = int(math.ceil(14 * theta / h)) + 3
    j0 = np.clip(np.floor((r - 7 * theta - grid[0]) / h).astype(np.int64) - 1, 0, G - width)
    ar = np.arange(width)
    # blocks of about ``block`` pairs that start on a config's first pair: each block
    # writes its own rows of ``out``, so blocks run on threads (exp releases the GIL)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    cuts = np.unique(starts[np.searchsorted(starts, np.arange(0, len(r), block), "right") - 1])
    bounds = list(zip(cuts.tolist(), cuts[1:].tolist() + [len(r)], strict=True))

    def one(ab: tuple[int, int]) -> None:
        a, b = ab
        j = j0[a:b, None] + ar
        e = grid[j]  # exp(-((x_g - r) / theta)^2) c w, in place (the same operations)
        e -= r[a:b, None]
        e /= theta
        np.square(e, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        e *= c * w[a:b, None]
        o0, o1 = int(owner[a]), int(owner[b - 1]) + 1
        j += (owner[a:b, None] - o0) * G  # the flat index into out[o0:o1]
        out[o0:o1] += np.bincount(j.ravel(), e.ravel(), minlength=(o1 - o0) * G).reshape(o1 - o0, G)

    if threads:
        _pieces_map(one, bounds, default_threads=None)
    else:
        for ab in bounds:
            one(ab)
    return out


def pair_meta(theta: float, grid: np.ndarray) -> dict:
    """A pair term's ``meta``: its width and embedding grid (start, step, points)."""
    return {
        "embedding": "pair",
        "theta": theta,
        "grid": [float(grid[0]), float(grid[1] - grid[0]), len(grid)],
    }


def pair_kernel_bruteforce(r_a, w_a, r_b, w_b, theta: float) -> float:
    """``sum_ij w_i w_j exp(-(r_i - r_j)^2 / 2 theta^2)``: the reference double sum."""
    r_a, r_b = np.asarray(r_a, float).reshape(-1), np.asarray(r_b, float).reshape(-1)
    d = r_a[:, None] - r_b[None, :]
    return float(np.asarray(w_a, float) @ np.exp(-d * d / (2 * theta**2)) @ np.asarray(w_b, float))


def pair_term(
    r,
    weights,
    offsets,
    theta: float,
    cutoff: float,
    delta: float = 1.0,
    step: float | None = None,
    grid: np.ndarray | None = None,
    mu=None,
    dtype: str = "float64",
    name: str = "distance_2b",
) -> Term:
    """The ``distance_2b`` / ``ard_se`` term as a linear term on pair embeddings."""
    grid = pair_grid(cutoff, theta, step) if grid is None else grid
    emb = pair_embedding(r, weights, offsets, theta, grid)
    return Term.dot(
        emb,
        None,
        None,
        zeta=1,
        delta=delta,
        mu=mu,
        dtype=dtype,
        name=name,
        meta=pair_meta(theta, grid),
    )


# ---------------------------------------------------------------------------- toy kernels


def linear(X, normalize: bool = True, dtype: str = "float64") -> KernelData:
    """``k(x, y) = x . y`` on one feature row per config (normalised: cosine)."""
    return KernelData(
        [Term.dot(X, zeta=1, dtype=dtype, name="linear")], np.ones(len(X)), normalize=normalize
    )


def polynomial(X, zeta: int = 2, normalize: bool = True, dtype: str = "float64") -> KernelData:
    """``k(x, y) = (x . y)^zeta`` on one feature row per config."""
    return KernelData(
        [Term.dot(X, zeta=zeta, dtype=dtype, name="polynomial")],
        np.ones(len(X)),
        normalize=normalize,
    )


def gaussian(X, length_scale: float = 1.0, dtype: str = "float64") -> KernelData:
    """``k(x, y) = exp(-|x - y|^2 / 2 l^2)``: D² = 2 - 2k is monotone in |x - y|."""
    return KernelData(
        [Term.gauss(X, length=length_scale, dtype=dtype, name="gaussian")],
        np.ones(len(X)),
        normalize=False,
    )


# ---------------------------------------------------------------------------- stores


def _float(spec, key: str, where: str) -> float:
    v = spec.kernel.get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise MlpdesignError(
            f"{where}: kernel key {key}={v!r} is missing or not a number"
        ) from None


def term_plans(specs) -> list[dict]:
    """How each descriptor of a store is served: one dict per descriptor, or a one-line
    error for a kernel type we cannot evaluate."""
    plans = []
    for k, spec in enumerate(specs):
        where = f"descriptor {k} ({spec.name})"
        cov = str(spec.kernel.get("covariance_type", "")).lower()
        delta = _float(spec, "delta", where)
        if cov == "dot_product":
            zeta = _float(spec, "zeta", where)
            if zeta != int(zeta) or zeta < 1:
                raise MlpdesignError(
                    f"{where}: zeta={zeta} is not a positive integer; "
                    "select needs an integer zeta (a true kernel distance)"
                )
            plans.append({"kind": "dot", "zeta": int(zeta), "delta": delta, "name": spec.name})
        elif cov in ("ard_se", "gaussian"):
            if "theta_uniform" not in spec.kernel:
                raise MlpdesignError(f"{where}: select supports {cov} only with theta_uniform=")
            theta = _float(spec, "theta_uniform", where)
            if spec.dim == 1:
                cutoff = spec.params.get("cutoff")
                if not isinstance(cutoff, (int, float)):
                    raise MlpdesignError(f"{where}: no cutoff= for the pair embedding")
                plans.append(
                    {
                        "kind": "pair",
                        "theta": theta,
                        "delta": delta,
                        "cutoff": float(cutoff),
                        "name": spec.name,
                    }
                )
            else:
                plans.append({"kind": "gauss", "length": theta, "delta": delta, "name": spec.name})
        else:
            raise MlpdesignError(
                f"{where}: covariance_type={cov or '?'} is not supported by "
                "select (dot_product and ard_se are)"
            )
    return plans


class StoreKernel(KernelData):
    """A :class:`KernelData` read from a descriptor store (``mlpdesign.io.store.Store``).

    ``like``: another KernelData whose centring and pair grid to reuse (for a given set
    compared with a pool). Rows are read in config blocks (``store.config_ranges``).
    ``configs=(c0, c1)``: only configs ``c0 .. c1-1`` (a shard or a streamed block), with
    the centring and pair grid of the whole store (those ``StoreKernel(store)`` uses).
    """

    def __init__(
        self,
        store,
        normalize: bool = True,
        per_atom: bool = False,
        balance: bool = False,
        dtype: str = "float64",
        like: KernelData | None = None,
        grid_step: float | None = None,
        configs: tuple[int, int] | None = None,
        check_values: bool = True,
    ) -> None:
        if store.n_configs == 0:
            raise MlpdesignError(f"{store.path}: the store holds no configurations")
        c0, c1 = (0, store.n_configs) if configs is None else (int(configs[0]), int(configs[1]))
        if not 0 <= c0 < c1 <= store.n_configs:
            raise MlpdesignError(f"config range {c0}:{c1} outside 0:{store.n_configs}")
        part = (c0, c1) != (0, store.n_configs)
        plans = term_plans(store.descriptors)
        terms, checks = [], []
        for k, plan in enumerate(plans):
            ds = store.f[f"descriptors/{k}/rows"]
            full_off = store.offsets(k)
            r0 = int(full_off[c0])
            off = full_off[c0 : c1 + 1] - r0
            w = np.asarray(store.weights(k, c0, c1), dtype=np.float64)
            # the store's value check, on the rows this load reads anyway (one read)
            check = None if part or not check_values else store.row_check(k)
            if check is not None:
                check.weights(0, w)
                checks.append(check)
            ref = like.terms[k] if like is not None else None
            mu = None if ref is None else ref.mu
            where = f"{store.path}: descriptor {k} ({plan['name']})"
            if mu is None and part:  # the whole store's centring (see Term.build)
                mu = _store_mu(store, k, plan, grid_step, where)
            build = _store_pair_term if plan["kind"] == "pair" else _store_row_term
            term = build(
                ds,
                r0,
                off,
                w,
                plan,
                ref=ref,
                mu=mu,
                dtype=dtype,
                step=grid_step,
                where=where,
                check=check,
            )
            terms.append(term)
            release_free_heap()  # the load's temporaries, before the next term's rows
        for check in checks:
            check.finish()
        if checks:
            store.mark_checked()
        super().__init__(
            terms, store.n_atoms[c0:c1], normalize=normalize, per_atom=per_atom, balance=balance
        )
        release_free_heap()  # the self-kernels' temporaries
        if like is not None:
            like.compatible(self)


def _store_pair_term(
    ds, r0: int, off, w, plan: dict, *, ref, mu, dtype, step, where, check=None
) -> Term:
    """A store's ``distance_2b`` rows ``r0 ..`` as a pair term (``ref``: reuse its grid;
    ``check``: the store's :class:`~mlpdesign.io.store.RowCheck`, fed the rows read).

    The embedding is made config block by config block, straight into the term's array
    (the distances of one block in memory at a time, not the whole store's): the same
    bits as :func:`pair_term` on all the distances at once."""
    if ref is not None:
        lo, h, m = ref.meta["grid"]
        grid = lo + h * np.arange(m)
    else:
        grid = pair_grid(plan["cutoff"], plan["theta"], step)
    theta = plan["theta"]

    def get(a, b, out=None):
        p0, p1 = int(off[a]), int(off[b])
        rows = np.asarray(ds[r0 + p0 : r0 + p1], dtype=np.float64)
        if check is not None:
            check.rows(r0 + p0, rows)
        _check_finite(rows, where)
        return pair_embedding(
            rows, w[p0:p1], off[a : b + 1] - p0, theta, grid, out=out, threads=False
        )

    n = len(off) - 1
    return Term.dot(
        get,
        np.arange(n + 1, dtype=np.int64),
        None,
        zeta=1,
        delta=plan["delta"],
        mu=mu,
        dtype=dtype,
        name=plan["name"],
        meta=pair_meta(theta, grid),
    )


def _store_row_term(
    ds, r0: int, off, w, plan: dict, *, ref, mu, dtype, step, where, check=None
) -> Term:
    """A store's rows ``r0 ..`` (SOAP, ...) as a dot-product or Gaussian term, read block
    by block straight into the term's array (``check``: fed each block as stored)."""

    def get(a, b, out=None):
        if out is None or ds.dtype != out.dtype:
            raw = ds[r0 + a : r0 + b]
            if check is not None:
                check.rows(r0 + a, raw)
            x = np.asarray(raw, dtype=np.float64)
            if out is None:
                return x
            out[...] = x
        else:  # straight into the kernel's array: no copy of the rows
            ds.read_direct(out, np.s_[r0 + a : r0 + b])
            if check is not None:
                check.rows(r0 + a, out)
        return out

    extra = {"zeta": plan["zeta"]} if plan["kind"] == "dot" else {"length": plan["length"]}
    return Term.build(
        plan["kind"],
        get,
        off,
        w,
        delta=plan["delta"],
        mu=mu,
        dtype=dtype,
        name=plan["name"],
        **extra,
    )


def _store_mu(store, k: int, plan: dict, grid_step, where: str, block: int = 1 << 13):
    """The centring row ``StoreKernel(store)`` uses for descriptor ``k``: the mean of the
    first ``block`` rows (``Term.build``'s default), of the pair embeddings for a pair term."""
    ds = store.f[f"descriptors/{k}/rows"]
    if plan["kind"] == "pair":
        c1 = min(store.n_configs, block)
        off = store.offsets(k)[: c1 + 1]
        rows = np.asarray(ds[: int(off[-1])], dtype=np.float64)
        _check_finite(rows, where)
        grid = pair_grid(plan["cutoff"], plan["theta"], grid_step)
        first = pair_embedding(rows, store.weights(k, 0, c1), off, plan["theta"], grid)
    else:
        first = np.asarray(ds[: min(ds.shape[0], block)], dtype=np.float64)
        _check_finite(first, where)
    dim = first.shape[1] if first.ndim == 2 else 1
    return first.reshape(len(first), dim).mean(axis=0) if len(first) else np.zeros(dim)
