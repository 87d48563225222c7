"""Greedy maximum-entropy (D-optimal) design on a GAP kernel: the math, apart from storage.

Shewry & Wynn's maximum-entropy design maximises ``log det(K_TT + λI)`` of the design's
kernel matrix (λ > 0 a jitter). Adding a point x to T multiplies the determinant by the
posterior variance of x given T::

    σ²(x | T) = k(x,x) + λ − k_xT (K_TT + λI)⁻¹ k_Tx,
    log det(K_{T+x} + λI) = log det(K_TT + λI) + log σ²(x | T)

so the greedy design adds, at each step, the candidate of largest σ² (T = the given set
and the design so far). Ties: every candidate within ``tol`` of the largest σ² (default
the engine's window, ``2 eps``, eps the kernel's rounding bound) counts as the largest, and
the lowest index wins. Every prefix is the greedy design of its size. The engine's rules
hold as for max-min: the first pick of an unconditional design is the candidate farthest
from candidate 0 (or ``first``; with a normalised kernel every σ² is then 1 + λ anyway),
and a duplicate of the design or the given set (Ψ <= eps) is never picked.

Three implementations, the same picks:

* :class:`MaxEnt`, the criterion of :mod:`mlpdesign.select.engine` (``select --criterion
  maxent``; in memory, streamed and under MPI), and :func:`maxent_lazy` (it in memory),
  fast and lean: σ² never increases as T grows (conditioning on more
  points cannot raise a variance), so a stale σ² is an upper bound; so is σ² given only
  the nearest design point, a function of max-min's Ψ (kept exactly by
  :class:`~mlpdesign.kernels.nearest.MaxMinState`; kernels with k(x,x) = 1). The bounds are
  the priority queue: each round re-evaluates the largest bounds still within ``tol`` of
  the best fresh σ² (an ``argpartition`` over the array: one O(N) numpy pass, not a heap
  pop per candidate in Python), until none is left. A re-evaluation extends the
  candidate's cached row of the Cholesky factor by the columns of the design points added
  since, for a block of candidates at once: one kernel block
  (:mod:`mlpdesign.kernels.kblock`, a matrix product), one triangular solve. Memory O(N)
  + the cached rows (evicted, lowest bounds first, above ``cache_bytes``) + |T|²; no
  N×N or N×n matrix.
* :func:`maxent_full`: the plain pivoted Cholesky, one kernel row and one rank-one update
  of every σ² per pick (an N × |T| factor): the benchmark's baseline.
* :func:`maxent_bruteforce`: ``numpy.linalg.slogdet`` of every augmented matrix at every
  step, from the kernel matrix of the whole pool; the reference of the tests.

Set functions (for ``score`` and reports): :func:`log_det_set`, :func:`loo_variances`
(``1 / [(K + λI)⁻¹]_tt``: how much each member adds given the others) and
:func:`variances_given` (σ² of every candidate given a set).

Design points are integers: ``i >= 0`` is pool candidate i, ``-1 - j`` is config j of the
given set. Kernel access: :class:`SpaceOracle` (the criterion's, over the engine space's
local candidates) and :class:`KernelOracle` (the references' and set functions', a
KernelData in memory): blocks between candidates and design points from
:func:`mlpdesign.kernels.kblock.k_block`; the brute force's matrix from the public
``KernelData.k_subset`` (independent arithmetic: the tests compare them). The factor of
``K_TT + λI`` is the same on every MPI rank: each pick's row is computed from its query.

On the paper's 100 000-candidate Zr pool (normalised kernel) σ² falls to a few λ within
~50 picks (the kernel's spectrum decays fast), after which most candidates stay close to
the best and the lazy rounds re-evaluate most of them: the kernel values computed come
near the full-row greedy's N × n (``benchmarks/bench_maxent.py``).

Library API::

    MaxEnt(jitter=1e-6, cache_bytes=1 << 30)   # the engine's criterion ("maxent")
    maxent_lazy(kd, n, *, jitter=1e-6, given=None, strata=None, tol=None, first=None,
                cache_bytes=1 << 30, progress=None) -> EntropyDesign   # MaxEnt in memory
                # .index, .var (σ² at pick time), .logdet(size), .stats
    maxent_full(kd, n, *, jitter=1e-6, given=None, strata=None, tol=None, first=None)
    maxent_bruteforce(kd, n, *, jitter=1e-6, given=None, strata=None, tol=None, first=None)
    log_det_set(oracle, points, jitter) -> float
    loo_variances(oracle, points, jitter) -> (len(points),)
    variances_given(oracle, points, jitter) -> (oracle.n,)
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.core import PIECE, KernelData
from mlpdesign.kernels.kblock import Points, Rows, k_block
from mlpdesign.kernels.linalg import solve_triangular
from mlpdesign.select.engine import (
    Criterion,
    Strata,
    check_design_size,
    greedy,
    make_strata,
    memory_space,
    tie_argmax,
    tie_window,
)

DEFAULT_JITTER = 1e-6  # the report's log-det jitter (mlpdesign.report.metrics)
#: kernel values per chunk of a lazy re-evaluation (bounds its temporary matrix)
CHUNK = 1 << 20


_CONTROLLER: list = []


def one_blas_thread(fn: Callable) -> Callable:
    """Run ``fn`` with BLAS (numpy's and scipy's) on one thread: its products and
    triangular solves are small, and waking BLAS threads costs more than they do (8 ms for
    a 10 x 10 solve on a busy 2-core machine)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if not _CONTROLLER:
                from threadpoolctl import ThreadpoolController

                _CONTROLLER.append(ThreadpoolController())
            limit = _CONTROLLER[0].limit(limits=1, user_api="blas")
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            limit = contextlib.nullcontext()
        with limit:
            return fn(*args, **kwargs)

    return wrapper


@dataclass
class EntropyDesign:
    """An ordered MaxEnt design: pool positions ``index`` and σ² at pick time ``var``;
    ``logdet_given`` is log det(K_GG + λI) of the given set (0 without one)."""

    index: np.ndarray
    var: np.ndarray
    jitter: float
    logdet_given: float = 0.0
    stopped_early: bool = False
    stats: dict = field(default_factory=dict)

    def logdet(self, size: int | None = None) -> float:
        """log det(K_TT + λI) of the given set and the first ``size`` picks."""
        return self.logdet_given + float(np.log(self.var[:size]).sum())


def self_kernel(kd: KernelData) -> np.ndarray:
    """k(x, x) of every config in the kernel's mode: exactly 1 when normalised."""
    if kd.normalize or kd.balance:
        return np.ones(kd.n)
    return np.asarray(kd.diag, dtype=np.float64)


def ties(values: np.ndarray, idx: np.ndarray, tol: float) -> int:
    """The pick among candidates ``idx`` with σ² ``values``: the lowest index among those
    within ``tol`` of the largest."""
    top = float(values.max())
    return int(idx[values >= top - tol].min())


class KernelOracle:
    """Kernel values between pool candidates and design points (module docstring's
    numbering), counting the values computed in :attr:`kernel_values`."""

    def __init__(self, kd: KernelData, given: KernelData | None = None) -> None:
        if given is not None:
            kd.compatible(given)
        self.kd, self.given = kd, given
        self.n = kd.n
        self.kxx = self_kernel(kd)
        self.kxx_given = self_kernel(given) if given is not None else np.zeros(0)
        self.eps = max(kd.eps, kd.eps_with(given)) if given is not None else kd.eps
        self.kernel_values = 0

    def query(self, p: int):
        return self.kd.query(p) if p >= 0 else self.given.query(-1 - p)

    def self_k(self, points: Sequence[int]) -> np.ndarray:
        """k(p, p) of design points ``points``."""
        p = np.asarray(points, dtype=np.int64)
        out = np.empty(len(p))
        out[p >= 0] = self.kxx[p[p >= 0]]
        out[p < 0] = self.kxx_given[-1 - p[p < 0]]
        return out

    def range_block(self, c0: int, c1: int, B: Rows) -> np.ndarray:
        """k between pool candidates ``c0 .. c1-1`` and design points ``B`` (no copy of
        the candidates' rows)."""
        out = np.empty((c1 - c0, B.n))
        step = max(1, min(PIECE, CHUNK // max(1, B.n)))
        for a in range(c0, c1, step):
            b = min(c1, a + step)
            out[a - c0 : b - c0] = k_block(self.kd, Rows.range(self.kd, a, b), B)
        self.kernel_values += out.size
        return out

    def against(self, q, points: Sequence[int]) -> np.ndarray:
        """k between a query (a pool or given config) and design points ``points``."""
        p = np.asarray(points, dtype=np.int64)
        out = np.empty(len(p))
        pool, giv = p >= 0, p < 0
        if pool.any():
            out[pool] = self.kd.k_subset(q, p[pool])
        if giv.any():
            out[giv] = self.given.k_subset(q, -1 - p[giv])
        self.kernel_values += len(p)
        return out

    def tt(self, points: Sequence[int]) -> np.ndarray:
        """The symmetric kernel matrix of design points ``points``, k(p, p) on the diagonal."""
        p = list(points)
        m = len(p)
        K = np.zeros((m, m))
        for a in range(m):
            K[a, a:] = self.against(self.query(p[a]), p[a:])
        K = np.triu(K, 1)
        return K + K.T + np.diag(self.self_k(p))


class Factor:
    """The growing Cholesky factor L of ``K_TT + λI`` of the design points T, and their
    rows stacked for kernel blocks (:attr:`rows`)."""

    def __init__(self, jitter: float, oracle, cap: int = 64) -> None:
        self.jitter = jitter
        self.oracle = oracle
        self.L = np.zeros((cap, cap))
        self.points: list[int] = []
        self.rows = Points(oracle.kd)

    @property
    def m(self) -> int:
        return len(self.points)

    def append(self, p: int, row: np.ndarray, var: float, q=None) -> None:
        """Add design point ``p`` (its query ``q``, else fetched) with its factor row
        ``row`` (length m) and σ² ``var``."""
        m = self.m
        if m == len(self.L):
            big = np.zeros((2 * m, 2 * m))
            big[:m, :m] = self.L[:m, :m]
            self.L = big
        self.L[m, :m] = row
        self.L[m, m] = math.sqrt(var)
        self.points.append(int(p))
        self.rows.add(self.oracle.query(int(p)) if q is None else q)

    def start(self, points: Sequence[int]) -> None:
        """Factor the design points ``points`` (a given set) directly."""
        if not len(points):
            return
        A = self.oracle.tt(points) + self.jitter * np.eye(len(points))
        try:
            C = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            raise MlpdesignError("the given set's kernel matrix is not positive definite") from None
        for j, p in enumerate(points):
            self.append(p, C[j, :j], float(C[j, j]) ** 2)

    def extend(self, rows: np.ndarray, kb: np.ndarray, a: int) -> np.ndarray:
        """The factor columns ``a .. m-1`` of candidates whose columns ``0 .. a-1`` are
        ``rows`` and whose kernel values against design points ``a .. m-1`` are ``kb``."""
        m = self.m
        R = kb - rows @ self.L[a:m, :a].T if a else kb
        return solve_triangular(self.L[a:m, a:m], R.T, lower=True, check_finite=False).T

    def logdet(self) -> float:
        return 2.0 * float(np.log(np.diag(self.L)[: self.m]).sum())


def _setup(kd, n, jitter, given, strata, tol, first):
    """Checks shared by the references: the oracle, tolerance, first pick and quotas (the
    engine's rules: an unconditional design starts at the candidate farthest from
    candidate 0 unless ``first`` says otherwise)."""
    check_jitter(jitter)
    check_design_size(kd.n, n)
    if first is not None and not 0 <= int(first) < kd.n:
        raise MlpdesignError(f"first candidate {first} is outside the pool (0..{kd.n - 1})")
    oracle = KernelOracle(kd, given)
    tol = tie_window(oracle.eps, kd.terms[0].rows.dtype) if tol is None else float(tol)
    if first is None and given is None:
        first = tie_argmax(kd.d2_row(0), tie_window(oracle.eps, kd.terms[0].rows.dtype))
    factor = Factor(float(jitter), oracle)
    factor.start([-1 - j for j in range(given.n)] if given is not None else [])
    return oracle, tol, factor, make_strata(strata, kd.n), first


def _stats(stats: dict, quota: Strata | None) -> dict:
    if quota is not None:
        stats["strata"] = quota.counts()
    return stats


# ---------------------------------------------------------------------------- lazy


class SpaceOracle:
    """Kernel access for :class:`MaxEnt` over an engine space's local candidates (0-based
    from ``space.lo``): blocks against design points (the space's KernelData, or its
    shard's blocks), self-kernels, queries (collective on a shard), the given set."""

    def __init__(self, space) -> None:
        self.space, self.given = space, space.given
        self.shard = getattr(space, "shard", None)
        self.kd = space.kd if self.shard is None else self.shard.ref
        self.n = space.hi - space.lo
        self.parts = [(-1, 0, self.n)]
        if self.shard is not None:
            self.parts = [(i, *self.shard.local_range(i)) for i in range(len(self.shard.blocks))]
        if self.kd.normalize or self.kd.balance:
            self.kxx = np.ones(self.n)
        else:
            self.kxx = np.zeros(self.n)
            for i, a, b in self.parts:
                self.kxx[a:b] = self.part(i).diag
        self.kxx_given = self_kernel(self.given) if self.given is not None else np.zeros(0)
        self.kernel_values = 0

    def part(self, i: int) -> KernelData:
        """Part ``i`` of :attr:`parts` (``(i, a, b)``: local candidates ``a .. b-1``) as a
        KernelData: the space's pool (``i`` = -1) or block ``i`` of its shard."""
        return self.space.kd if i < 0 else self.shard.block(i)

    def query(self, p: int):
        return self.space.query(p) if p >= 0 else self.given.query(-1 - p)

    def tt(self, points: Sequence[int]) -> np.ndarray:
        """The kernel matrix of given-set points ``points`` (``-1 - j``)."""
        j = -1 - np.asarray(points, dtype=np.int64)
        K = np.array([self.given.k_subset(self.given.query(int(a)), j) for a in j])
        K = np.triu(K.reshape(len(j), len(j)), 1)
        return K + K.T + np.diag(self.kxx_given[j])

    def block(self, idx: np.ndarray, B: Rows) -> np.ndarray:
        """k between local candidates ``idx`` (ascending) and design points ``B``."""
        pieces = []
        for i, a, b in self.parts:
            lo, hi = np.searchsorted(idx, [a, b])
            if hi > lo:
                pieces.append(Rows.gather(self.part(i), idx[lo:hi] - a))
        out = k_block(self.kd, pieces[0] if len(pieces) == 1 else Rows.concat(pieces), B)
        self.kernel_values += out.size
        return out


class LazyState:
    """Cached factor rows and σ² upper bounds of the local candidates (module docstring)."""

    def __init__(self, oracle: SpaceOracle, factor: Factor, cache_bytes: int) -> None:
        self.oracle, self.factor = oracle, factor
        n = oracle.n
        self.rows: list[np.ndarray | None] = [None] * n
        self.mx = np.zeros(n, dtype=np.int64)  # factor columns cached per candidate
        self.top = oracle.kxx + factor.jitter  # σ² given nothing
        self.ub = self.top.copy()  # last σ² computed: an upper bound from then on
        self.fpsi = np.full(n, np.inf)  # the Psi bound
        self.cached = 0  # floats in self.rows
        self.cache_floats = max(1, int(cache_bytes) // 8)
        self.stats = {"evaluations": 0, "evictions": 0, "cache_peak_bytes": 0, "rounds": 0}
        self.size = 8  # first round's batch: half the last scan's evaluations

    def evaluate(self, batch: np.ndarray) -> None:
        """Bring the σ² of candidates ``batch`` up to date with the whole design (in chunks
        of at most :data:`CHUNK` kernel values)."""
        m = self.factor.m
        batch = batch[self.mx[batch] < m]
        batch = batch[np.argsort(self.mx[batch], kind="stable")]
        r, most = 0, max(64, -(-len(batch) // 8))  # a few blocks: little unused width
        while r < len(batch):
            width = m - int(self.mx[batch[r]])
            chunk = batch[r : r + max(1, min(most, CHUNK // width))]
            self._evaluate_chunk(np.sort(chunk))
            r += len(chunk)
        self.stats["evaluations"] += len(batch)
        self.stats["cache_peak_bytes"] = max(self.stats["cache_peak_bytes"], 8 * self.cached)
        if self.cached > self.cache_floats:
            self.evict(keep=batch)

    def _evaluate_chunk(self, batch: np.ndarray) -> None:
        """One block: the kernel against design points ``lo .. m-1`` (lo: the stalest row),
        the factor columns from lo on for every row, σ² = k(x,x) + λ - |row|²."""
        m = self.factor.m
        mx = self.mx[batch]
        lo = int(mx.min())
        kb = self.oracle.block(batch, self.factor.rows.rows(lo, m))
        old = np.stack([self.rows[x][:lo] for x in batch]) if lo else np.zeros((len(batch), 0))
        new = np.concatenate([old, self.factor.extend(old, kb, lo)], axis=1)
        self.ub[batch] = self.top[batch] - np.einsum("ij,ij->i", new, new)
        for r, x in enumerate(batch):
            self.rows[x] = new[r].copy()  # not a view: the cache holds only its rows
        self.cached += int((m - mx).sum())
        self.mx[batch] = m

    def evict(self, keep: np.ndarray) -> None:
        """Drop the cached rows of the lowest bounds, but those of ``keep``, until half the
        cache is free (their bounds stay valid; a later evaluation starts their rows again
        from scratch)."""
        held = np.flatnonzero(self.mx > 0)
        held = held[~np.isin(held, keep)]
        for x in held[np.argsort(self.ub[held], kind="stable")]:
            if self.cached <= self.cache_floats // 2:
                break
            self.drop(int(x))
            self.stats["evictions"] += 1

    def drop(self, x: int) -> None:
        """Forget candidate ``x``'s cached row (picked, or evicted)."""
        self.cached -= int(self.mx[x])
        self.rows[x], self.mx[x] = None, 0

    def psi_bound(self, psi: np.ndarray, eps: float, tol: float) -> None:
        """σ²(x | T) <= σ²(x | p) = 1 + λ - k²/(1 + λ) for the design point p nearest to x
        (k(x,x) = 1 kernels), with k >= 1 - (Psi + eps)/2, plus a margin for the rounding
        of computed σ²."""
        lam = self.factor.jitter
        k = np.maximum(0.0, 1.0 - 0.5 * (psi + eps))
        self.fpsi = 1.0 + lam - k * k / (1.0 + lam) + (tol + 1e-9)

    def scan(self, live: np.ndarray, tol: float) -> np.ndarray:
        """Fresh σ² (-inf elsewhere) of every ``live`` candidate that may be within ``tol``
        of the best. The bounds are the priority queue: each round re-evaluates the
        ``size`` largest bounds still within ``tol`` of the best fresh σ²
        (``argpartition``), until none is left."""
        b = np.minimum(self.ub, self.fpsi)
        live = live.copy()
        vals = np.full(len(b), -np.inf)
        best, size, count = -np.inf, self.size, 0
        while True:
            cand = np.flatnonzero(live & (b >= best - tol))
            if not len(cand):
                break
            if len(cand) > size:
                cand = cand[np.argpartition(-b[cand], size - 1)[:size]]
            self.evaluate(cand)
            vals[cand] = self.ub[cand]
            best = max(best, float(vals[cand].max()))
            live[cand] = False  # fresh: out of the queue
            count += len(cand)
            self.stats["rounds"] += 1
            size *= 2
        self.size = max(8, count // 2)
        return vals


class MaxEnt(Criterion):
    """Greedy maximum entropy (module docstring): the largest σ²(x | T), lazily.

    Keeps per local candidate a σ² upper bound and a cached factor row
    (:class:`LazyState`); the factor of ``K_TT + λI`` is the same on every rank (each
    pick's row is computed from its query, which every rank has). Candidates at max-min's
    floor (Psi <= eps: duplicates of the design or the given set) are never picked.
    ``var``: σ² of each pick at pick time; ``logdet_given``: log det(K_GG + λI)."""

    name = "maxent"

    def __init__(
        self,
        jitter: float = DEFAULT_JITTER,
        *,
        cache_bytes: int = 1 << 30,
        tie: float | None = None,
    ) -> None:
        check_jitter(jitter)
        self.jitter = float(jitter)
        self.cache_bytes = int(cache_bytes)
        self.tie_override = tie
        self.var: list[float] = []

    @classmethod
    def from_options(cls, seed: int = 1, jitter: float | None = None, **_) -> MaxEnt:
        return cls(DEFAULT_JITTER if jitter is None else jitter)

    def start(self, space) -> None:
        super().start(space)
        if self.tie_override is not None:
            self.tie = float(self.tie_override)
        self.oracle = SpaceOracle(space)
        self.factor = Factor(self.jitter, self.oracle)
        g = space.given.n if space.given is not None else 0
        self.factor.start([-1 - j for j in range(g)])
        self.logdet_given = self.factor.logdet()
        self.lazy = LazyState(self.oracle, self.factor, self.cache_bytes)
        o = self.oracle
        self.unit = bool(np.all(o.kxx == 1.0) and np.all(o.kxx_given == 1.0))
        self.var = []
        self._bound(space)

    def _bound(self, space) -> None:
        if self.unit:
            self.lazy.psi_bound(space.psi, space.eps, self.tie)

    @one_blas_thread
    def next(self, space, strata: Strata | None) -> int | None:
        live = space.psi > self.floor
        if strata is None:
            return space.best(self.lazy.scan(live, self.tie), self.tie, -math.inf)
        for h in strata.order():
            m = strata.members[h]
            a, b = np.searchsorted(m, [space.lo, space.hi])
            inside = np.zeros(len(live), dtype=bool)
            inside[m[a:b] - space.lo] = True
            s = space.best(self.lazy.scan(live & inside, self.tie), self.tie, -math.inf, m)
            if s is not None:
                return s
            strata.open[h] = False
        return None

    @one_blas_thread
    def update(self, space, s: int) -> None:
        q = space.query(s)
        m, kd = self.factor.m, self.oracle.kd
        row = np.zeros(0)
        if m:
            kb = k_block(kd, Rows.of_queries([q], len(kd.terms)), self.factor.rows.rows(0, m))
            row = self.factor.extend(np.zeros((1, 0)), kb, 0)[0]
        kxx = 1.0 if (kd.normalize or kd.balance) else float(q.diag)
        var = kxx + self.jitter - float(row @ row)
        if not var > 0:
            raise MlpdesignError(
                f"σ² of pick {len(self.var) + 1} is not positive ({var:.3g}): "
                f"--jitter {self.jitter:g} is below the rounding of this kernel; use a larger one"
            )
        self.factor.append(s, row, var, q)
        self.var.append(var)
        if space.lo <= s < space.hi:
            self.lazy.drop(s - space.lo)
        self._bound(space)

    def label(self, psi: float) -> str:
        return f"var={self.var[-1]:.4g}" if self.var else super().label(psi)

    budget_name = "var"

    def budget_value(self, psi: float) -> float:
        """σ² of the pick just made (``select --until-var``)."""
        return self.var[-1]


def check_jitter(jitter) -> None:
    """One line unless ``jitter`` is a finite number > 0."""
    if not (isinstance(jitter, (int, float, np.floating)) and jitter > 0 and math.isfinite(jitter)):
        raise MlpdesignError(f"--jitter must be a positive number, got {jitter}")


@one_blas_thread
def maxent_lazy(
    kd: KernelData,
    n: int,
    *,
    jitter: float = DEFAULT_JITTER,
    given: KernelData | None = None,
    strata=None,
    tol: float | None = None,
    first=None,
    cache_bytes: int = 1 << 30,
    progress=None,
) -> EntropyDesign:
    """Lazy greedy MaxEnt in memory: :class:`MaxEnt` on the engine's loop
    (:func:`~mlpdesign.select.engine.greedy`; ``first``: its first-pick rule, None: the
    candidate farthest from candidate 0 of an unconditional design). ``strata``: a label
    per candidate (:class:`~mlpdesign.select.engine.Strata`). ``cache_bytes``: cached rows
    above this are evicted. The picks of :func:`maxent_full`."""
    crit = MaxEnt(jitter, cache_bytes=cache_bytes, tie=tol)
    d = greedy(memory_space(kd, given), crit, n, first=first, strata=strata, progress=progress)
    stats = {**d.stats, **crit.lazy.stats, "kernel_values": crit.oracle.kernel_values}
    stats["tol"] = crit.tie
    return EntropyDesign(
        d.index, np.array(crit.var), float(jitter), crit.logdet_given, d.stopped_early, stats
    )


# ---------------------------------------------------------------------------- full rows


def _given_logdet(factor: Factor, given: KernelData | None) -> float:
    if given is None:
        return 0.0
    return 2.0 * float(np.log(np.diag(factor.L)[: given.n]).sum())


def _full_pick(s2: np.ndarray, picked: np.ndarray, quota: Strata | None, tol: float):
    """argmax σ² with the tie rule, within the stratum whose turn it is."""
    groups = [(None, np.arange(len(s2)))] if quota is None else None
    if quota is not None:
        groups = [(h, quota.members[h]) for h in quota.order()]
    for h, m in groups:
        m = m[~picked[m]]
        if len(m):
            return ties(s2[m], m, tol)
        if h is not None:
            quota.open[h] = False
    return None


class _Cholesky:
    """:func:`maxent_full`'s state: the N × (|given| + n) factor's rows and every σ²."""

    def __init__(self, kd: KernelData, oracle: KernelOracle, factor: Factor, n: int) -> None:
        self.kd, self.oracle, self.factor = kd, oracle, factor
        self.Lp = np.zeros((kd.n, factor.m + n))
        self.s2 = oracle.kxx + factor.jitter
        for j in range(factor.m):
            k = oracle.range_block(0, kd.n, factor.rows.rows(j, j + 1))[:, 0]
            col = (k - self.Lp[:, :j] @ factor.L[j, :j]) / factor.L[j, j]
            self.Lp[:, j] = col
            self.s2 -= col * col

    def variances(self, picked: np.ndarray) -> np.ndarray:
        return self.s2

    def take(self, s: int) -> None:
        """One new factor column and one rank-one update of every σ²."""
        factor, m = self.factor, self.factor.m
        row = self.Lp[s, :m].copy()
        factor.append(s, row, float(self.s2[s]))
        k = self.oracle.range_block(0, self.kd.n, factor.rows.rows(m, m + 1))[:, 0]
        col = (k - self.Lp[:, :m] @ row) / factor.L[m, m]
        self.Lp[:, m] = col
        self.s2 -= col * col

    def given_logdet(self, given: KernelData | None) -> float:
        return _given_logdet(self.factor, given)

    def stats(self) -> dict:
        return {"kernel_values": self.oracle.kernel_values}


def _slogdet(A: np.ndarray) -> float:
    if len(A) == 0:
        return 0.0
    sign, ld = np.linalg.slogdet(A)
    if sign <= 0:
        raise MlpdesignError("a kernel matrix plus jitter is not positive definite")
    return float(ld)


class _Determinants:
    """:func:`maxent_bruteforce`'s state: the kernel matrix of the given set and the whole
    pool, the design's positions in it and its log det."""

    def __init__(self, kd: KernelData, oracle: KernelOracle, factor: Factor, n: int) -> None:
        self.G = factor.m
        pts = factor.points + list(range(kd.n))  # given first, then the pool
        self.K = oracle.tt(pts) + factor.jitter * np.eye(len(pts))
        self.T = list(range(self.G))  # positions in pts
        self.ld_given = _slogdet(self.K[np.ix_(self.T, self.T)])
        self.ld = self.ld_given

    def variances(self, picked: np.ndarray) -> np.ndarray:
        var = np.zeros(len(picked))
        for x in np.flatnonzero(~picked):
            Tx = self.T + [self.G + int(x)]
            var[x] = math.exp(_slogdet(self.K[np.ix_(Tx, Tx)]) - self.ld)
        return var

    def take(self, s: int) -> None:
        self.T.append(self.G + s)
        self.ld = _slogdet(self.K[np.ix_(self.T, self.T)])

    def given_logdet(self, given: KernelData | None) -> float:
        return self.ld_given if given is not None else 0.0

    def stats(self) -> dict:
        return {}


@one_blas_thread
def _reference(
    kd: KernelData,
    n: int,
    state: type,
    *,
    jitter: float = DEFAULT_JITTER,
    given: KernelData | None = None,
    strata=None,
    tol: float | None = None,
    first: int | None = None,
) -> EntropyDesign:
    """The greedy loop of the references over ``state`` (:class:`_Cholesky` or
    :class:`_Determinants`): σ² of every candidate, the pick, the update."""
    oracle, tol, factor, quota, first = _setup(kd, n, jitter, given, strata, tol, first)
    ref = state(kd, oracle, factor, n)
    picked = np.zeros(kd.n, dtype=bool)
    S, V = [], []
    stopped = False
    while len(S) < n:
        var = ref.variances(picked)
        s = int(first) if (not S and first is not None) else _full_pick(var, picked, quota, tol)
        if s is None:
            stopped = True
            break
        V.append(float(var[s]))
        ref.take(s)
        picked[s] = True
        S.append(s)
        if quota is not None:
            quota.take(s)
    return EntropyDesign(
        np.array(S, dtype=np.int64),
        np.array(V),
        float(jitter),
        ref.given_logdet(given),
        stopped,
        _stats({**ref.stats(), "tol": tol}, quota),
    )


def maxent_full(kd: KernelData, n: int, **options) -> EntropyDesign:
    """Plain greedy MaxEnt by pivoted Cholesky: one kernel row of every candidate and one
    rank-one update of every σ² per design point (an N × (|given| + n) factor).
    ``options``: ``jitter``, ``given``, ``strata``, ``tol``, ``first`` as for
    :func:`maxent_lazy`."""
    return _reference(kd, n, _Cholesky, **options)


def maxent_bruteforce(kd: KernelData, n: int, **options) -> EntropyDesign:
    """The reference: at every step ``slogdet(K_{T+x} + λI)`` of every remaining
    candidate x, σ² = exp(difference to log det(K_TT + λI)), from the kernel matrix of the
    whole pool and given set (N + |given| squared: small pools only). ``options`` as for
    :func:`maxent_full`."""
    return _reference(kd, n, _Determinants, **options)


# ---------------------------------------------------------------------------- sets


def _set_factor(oracle: KernelOracle, points: Sequence[int], jitter: float) -> Factor:
    check_jitter(jitter)
    f = Factor(float(jitter), oracle, max(1, len(points)))
    try:
        f.start(list(points))
    except MlpdesignError:
        raise MlpdesignError(
            "the set's kernel matrix plus jitter is not positive definite"
        ) from None
    return f


@one_blas_thread
def log_det_set(oracle: KernelOracle, points: Sequence[int], jitter: float) -> float:
    """log det(K_TT + λI) of design points ``points``."""
    return _set_factor(oracle, points, jitter).logdet()


@one_blas_thread
def loo_variances(oracle: KernelOracle, points: Sequence[int], jitter: float) -> np.ndarray:
    """Leave-one-out σ² of each member of a set given the others: ``1 / [(K+λI)⁻¹]_tt``."""
    m = len(points)
    if m == 0:
        return np.zeros(0)
    L = _set_factor(oracle, points, jitter).L[:m, :m]
    inv = solve_triangular(L, np.eye(m), lower=True, check_finite=False)
    return 1.0 / np.einsum("ij,ij->j", inv, inv)


@one_blas_thread
def variances_given(
    oracle: KernelOracle, points: Sequence[int], jitter: float, block: int = 8192
) -> np.ndarray:
    """σ²(x | points) of every pool candidate x (in blocks of ``block`` candidates)."""
    f = _set_factor(oracle, points, jitter)
    out = oracle.kxx + float(jitter)
    if f.m == 0:
        return out
    for c0 in range(0, oracle.n, block):
        c1 = min(oracle.n, c0 + block)
        kb = oracle.range_block(c0, c1, f.rows.rows(0, f.m))
        Y = f.extend(np.zeros((c1 - c0, 0)), kb, 0)
        out[c0:c1] -= np.einsum("ij,ij->i", Y, Y)
    return out
