"""Fedorov exchange from a greedy design (``select --refine exchange``).

Starting from a design T (and a fixed given set G; S = G ∪ T), each step makes the best
swap, a design point t out and a pool candidate x in, while the objective improves by
more than ``tol`` (and by more than the tie window), up to ``max_swaps`` swaps. The
result is a set, not an ordered design: the design's list with each swapped-in point in
the place of the point it replaced. A swap never takes a given point out; x is a
candidate not in S, allowed (``allowed``: e.g. ``--max-atoms``), with t's stratum label
(so every stratum keeps its count).

* **maxent**: ``log det(K_SS + λI)``. With ``A = K_SS + λI``, ``a = diag(A⁻¹)``,
  ``w = A⁻¹ k_Sx`` and ``σ²(x | S) = k(x,x) + λ - k_xS w``, removing t and adding x
  changes the log det by exactly (rank-one down- and update)::

      gain(t, x) = log σ²(x | S∖t) − log σ²(t | S∖t) = log(a_t σ²(x | S) + w_t²)

  for every t at once from x's kernel row and two triangular solves with A's Cholesky
  factor L (``y = L⁻¹ k_Sx``, ``σ²(x | S) = k(x,x) + λ - |y|²``, ``w = L⁻ᵀ y``). A
  candidate that duplicates a point of S∖t (D² <= eps, the greedy's rule) is not swapped
  in for t. **Bounds** (upper bounds of a candidate's best gain; a candidate whose bound
  is below a lower bound of the step's best gain less the window is not solved a second
  time): (1) ``σ²(x | S∖t) <= σ²(x | {p}) = k(x,x) + λ − k_xp² / (k(p,p) + λ)`` for any p
  left in S∖t: every given point and all design points but t; (2) in the factor's order
  (G, then T) S∖t_j holds the j points before t_j, so ``σ²(x | S∖t_j) <= k(x,x) + λ −
  Σ_{i<j} y_i²``, a prefix sum of the row already solved. The lower bound:
  ``gain >= log(a_t σ²(x | S))`` (σ²(x | S) is a *lower* bound of σ²(x | S∖t)).
* **maxmin**: the smallest D² over the pairs of S with a design point in them. A swap
  can only raise it if t is in every closest pair, i.e. t is one of the (at most two)
  design points of one closest pair (exact: every other t leaves that pair in place);
  for those t the new objective is ``min(m_t, Ψ(x | S∖t))``, m_t the smallest pair
  without t and Ψ(x | S∖t) x's D² to S∖t: its nearest D² (kept up to date per swap),
  unless its nearest point is t; then ``Ψ(x | S∖t) <= (D(x, t) + D(t, n_t))²`` (n_t: t's
  nearest other point, triangle inequality) and only candidates whose bound can reach
  the best value are recomputed. ``bounds=False`` tries every t and every candidate.

Ties: gains within the window of the best are equal and the lowest (out, in) pool index
wins; a gain must exceed the window as well as ``tol``, so the objective rises at every
swap and the exchange cannot cycle. Window: ``2 eps`` for maxmin; for maxent the larger of
:data:`LOGDET_TIE` and ``2 eps / λ`` (σ² rounds within about eps, relative to σ² >= λ).

Cost: the kernel values between this rank's candidates and S (N × |S| floats) are kept
when they fit ``cache_bytes`` (None: always), one column replaced per swap (one kernel
column of the pool); else they are recomputed in blocks each step (maxent: N × |S| kernel
values; maxmin: t's cell and the new column). maxent: A's factor (|S|³) and two
triangular solves per candidate (|S|² each) per step; maxmin: O(N) per step. Never an
N × N matrix. On an engine space (:class:`~mlpdesign.select.engine.MemorySpace` or a
shard of MPI ranks) every decision is a collective max / min, so every path and rank
makes the same swaps.

:func:`exchange_bruteforce` is the reference: the objective recomputed from scratch
(``numpy.linalg.slogdet``; all pairwise D²) for every possible swap.

Library API::

    exchange(kd, index, method, *, given=None, jitter=1e-6, tol=0.0, max_swaps=1000,
             strata=None, allowed=None, bounds=True, cache_bytes=None) -> Exchange
    exchange_space(space, index, method, *, ...same, progress=None) -> Exchange  # engine
    exchange_bruteforce(kd, index, method, ...same...) -> Exchange
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.blocks import Comm
from mlpdesign.kernels.core import PIECE, KernelData
from mlpdesign.kernels.kblock import Rows, k_block
from mlpdesign.kernels.linalg import solve_triangular
from mlpdesign.select.engine import memory_space, pool_eps, tie_window
from mlpdesign.select.maxent import CHUNK, DEFAULT_JITTER, KernelOracle, SpaceOracle, check_jitter

#: the least window (log det units) of maxent ties: the rank-one path and slogdet from
#: scratch differ by up to ~1e-8 on the Zr test store with λ = 1e-4
LOGDET_TIE = 1e-7
#: margin on the maxent bounds (log units) against the rounding of both sides
BOUND_MARGIN = 1e-9
METHODS = ("maxent", "maxmin")
#: what each method's objective is called in the selection file and the report
OBJECTIVES = {"maxent": "logdet", "maxmin": "min_pairwise_d2"}


@dataclass
class Exchange:
    """The refined set ``index`` (pool positions; the design's order, each swap in the
    place of the point it replaced), the swaps ``(out, in, gain)`` in pool positions, the
    objective before and after, counts; from :func:`exchange_space` also each member's D²
    to the rest of S (``psi``) and, for maxent, its leave-one-out σ² (``var``)."""

    index: np.ndarray
    swaps: list = field(default_factory=list)
    before: float = 0.0
    after: float = 0.0
    method: str = "maxent"
    stats: dict = field(default_factory=dict)
    psi: np.ndarray | None = None
    var: np.ndarray | None = None
    tol: float = 0.0
    max_swaps: int = 0

    @property
    def objective(self) -> str:
        return OBJECTIVES[self.method]


def check_refine(method: str, tol, max_swaps) -> None:
    """One line unless an exchange can run with these options."""
    if method not in METHODS:
        raise MlpdesignError(
            f"--refine exchange works on maxent or maxmin designs, not --criterion {method}"
        )
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol >= 0):
        raise MlpdesignError(f"--tol must be a number >= 0, got {tol}")
    whole = isinstance(max_swaps, (int, np.integer)) and not isinstance(max_swaps, bool)
    if not whole or max_swaps < 0:
        raise MlpdesignError(f"--max-swaps must be a whole number >= 0, got {max_swaps}")


def _check(n: int, index, method: str, tol, max_swaps, jitter) -> np.ndarray:
    check_refine(method, tol, max_swaps)
    if method == "maxent":
        check_jitter(jitter)
    idx = np.asarray(index, dtype=np.int64).copy()
    if len(np.unique(idx)) != len(idx) or (len(idx) and (idx.min() < 0 or idx.max() >= n)):
        raise MlpdesignError("the design to refine has repeated or out-of-pool positions")
    return idx


def _codes(strata, n: int) -> np.ndarray | None:
    if strata is None:
        return None
    labels = getattr(strata, "code", strata)  # a Strata, or a label per candidate
    if len(labels) != n:
        raise MlpdesignError(f"{len(labels)} stratum labels for a pool of {n} candidates")
    return np.unique(np.asarray(labels), return_inverse=True)[1].astype(np.int64)


def maxent_tie(eps_tie: float, jitter: float) -> float:
    """The window (log units) within which two maxent gains tie."""
    return max(LOGDET_TIE, float(eps_tie) / float(jitter))


# ---------------------------------------------------------------------------- S


class FSet:
    """The points of S in factor order (given set first, then the design list), their
    queries, self-kernels and kernel matrix ``K`` (the same on every rank)."""

    def __init__(self, oracle: SpaceOracle, points: Sequence[int]) -> None:
        self.kd = oracle.kd
        self.n_terms = len(self.kd.terms)
        self.unit = bool(self.kd.normalize or self.kd.balance)
        self.points = [int(p) for p in points]
        self.queries = [oracle.query(p) for p in self.points]  # collective on a shard
        self.kxx = np.array([self._self_k(q) for q in self.queries], dtype=np.float64)
        self._rows: Rows | None = None
        B = self.rows()
        K = k_block(self.kd, B, B) if self.m else np.zeros((0, 0))
        K = 0.5 * (K + K.T)
        np.fill_diagonal(K, self.kxx)
        self.K = K

    def _self_k(self, q) -> float:
        return 1.0 if self.unit else float(q.diag)

    @property
    def m(self) -> int:
        return len(self.points)

    def rows(self) -> Rows:
        """S's points as kernel rows (rebuilt after a swap)."""
        if self._rows is None and self.m:
            self._rows = Rows.of_queries(self.queries, self.n_terms)
        return self._rows

    def swap(self, pos: int, p: int, q) -> None:
        """Put pool candidate ``p`` (query ``q``) in the place of the point at ``pos``."""
        self.points[pos], self.queries[pos] = int(p), q
        self._rows = None
        row = k_block(self.kd, Rows.of_queries([q], self.n_terms), self.rows())[0]
        self.kxx[pos] = row[pos] = self._self_k(q)
        self.K[pos, :] = self.K[:, pos] = row

    def d2(self) -> np.ndarray:
        """D² between the points of S (0 on the diagonal)."""
        D = self.kxx[:, None] + self.kxx[None, :] - 2.0 * self.K
        np.maximum(D, 0.0, out=D)
        np.fill_diagonal(D, 0.0)
        return D


class CandidateKernel:
    """Kernel values between this rank's candidates and the points of S: an N_local × |S|
    matrix when it fits ``cache_bytes`` (None: always), else computed per chunk."""

    def __init__(self, oracle: SpaceOracle, fset: FSet, cache_bytes: int | None) -> None:
        self.o, self.f = oracle, fset
        self.n = oracle.n
        self.values = 0  # kernel values computed
        self.cached = cache_bytes is None or 8 * self.n * fset.m <= int(cache_bytes)
        self.C = None
        if self.cached:
            self.C = np.empty((self.n, fset.m))
            for lo, hi, kb in self._computed(fset.rows()):
                self.C[lo:hi] = kb

    def _computed(self, B: Rows):
        """(lo, hi, kernel block) over this rank's candidates, in chunks."""
        step = max(1, min(PIECE, CHUNK // max(1, B.n)))
        for i, a, b in self.o.parts:
            kd = self.o.part(i)
            for c0 in range(a, b, step):
                c1 = min(b, c0 + step)
                kb = k_block(self.o.kd, Rows.range(kd, c0 - a, c1 - a), B)
                self.values += kb.size
                yield c0, c1, kb

    def chunks(self):
        """(lo, hi, k of candidates lo .. hi-1 against S) over this rank's candidates."""
        if not self.cached:
            yield from self._computed(self.f.rows())
            return
        step = max(1, CHUNK // max(1, self.f.m))
        for c0 in range(0, self.n, step):
            yield c0, min(self.n, c0 + step), self.C[c0 : min(self.n, c0 + step)]

    def rows_of(self, idx: np.ndarray) -> np.ndarray:
        """k of local candidates ``idx`` (ascending) against S."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.cached:
            return self.C[idx]
        if not len(idx):
            return np.zeros((0, self.f.m))
        out = self.o.block(idx, self.f.rows())
        self.values += out.size
        return out

    def swapped(self, pos: int, q) -> np.ndarray:
        """After S's point at ``pos`` became ``q``: the new point's kernel column."""
        B = Rows.of_queries([q], self.f.n_terms)
        parts = [kb[:, 0] for _, _, kb in self._computed(B)]
        col = np.concatenate(parts) if parts else np.zeros(0)
        if self.cached:
            self.C[:, pos] = col
        return col


# ---------------------------------------------------------------------------- state


class _Run:
    """What one exchange keeps: the space, S, the candidates' kernel values and masks."""

    def __init__(self, space, method: str, index, opts: dict) -> None:
        self.space = space
        self.c = getattr(space, "c", None) or Comm(None)
        self.method, self.bounds = method, bool(opts["bounds"])
        self.o = SpaceOracle(space)
        self.G = space.given.n if space.given is not None else 0
        self.lo, self.n = space.lo, space.n
        self.eps = space.eps
        self.f = FSet(self.o, [-1 - j for j in range(self.G)] + [int(i) for i in index])
        self.cand = CandidateKernel(self.o, self.f, opts["cache_bytes"])
        self.kxx = self.o.kxx
        self.code = _codes(opts["strata"], self.n)
        allowed = opts["allowed"]
        self.ok = np.ones(self.o.n, dtype=bool)
        if allowed is not None:
            self.ok = np.asarray(allowed, dtype=bool)[space.lo : space.hi].copy()
        self.adm = self.ok.copy()
        for p in index:
            self.mark(int(p), False)
        self.tol = float(opts["tol"])
        self.jitter = float(opts["jitter"])
        self.tie = space.tie if method == "maxmin" else maxent_tie(space.tie, self.jitter)
        self.stats = {"steps": 0, "rows_scanned": 0, "rows_solved": 0, "rows_recomputed": 0}
        self.prune_frac = 1.0  # share of the candidates the maxent bounds ruled out last

    def mark(self, p: int, admissible: bool) -> None:
        """Candidate ``p`` (global) may (or may not) be swapped in, where it is local."""
        if self.lo <= p < self.lo + self.o.n:
            self.adm[p - self.lo] = admissible and self.ok[p - self.lo]

    @property
    def design(self) -> list[int]:
        return self.f.points[self.G :]

    def mine(self, x: int) -> bool:
        return self.lo <= x < self.lo + self.o.n

    def same_stratum(self, lo: int, hi: int, tpool: np.ndarray) -> np.ndarray:
        """(hi-lo, len tpool): local candidates lo..hi-1 admissible for each t."""
        ok = np.repeat(self.adm[lo:hi, None], len(tpool), axis=1)
        if self.code is not None:
            ok &= self.code[self.lo + lo : self.lo + hi, None] == self.code[tpool][None, :]
        return ok

    def d2_rows(self, idx: np.ndarray) -> np.ndarray:
        """D² of local candidates ``idx`` (ascending) to the points of S."""
        k = self.cand.rows_of(idx)
        return np.maximum(self.kxx[idx, None] + self.f.kxx[None, :] - 2.0 * k, 0.0)

    def lowest(self, values: np.ndarray, at_least: float) -> int:
        """The lowest global index whose local value is >= ``at_least`` (n: none)."""
        hit = np.flatnonzero(values >= at_least)
        return int(self.c.min(self.lo + int(hit[0]) if len(hit) else self.n))

    def swap(self, t: int, x: int) -> tuple[int, np.ndarray]:
        """Swap design point ``t`` for candidate ``x``: S's position of both and the local
        kernel column of ``x``."""
        pos = self.f.points.index(int(t))
        q = self.space.query(int(x))  # collective on a shard
        self.f.swap(pos, int(x), q)
        col = self.cand.swapped(pos, q)
        self.mark(int(t), True)
        self.mark(int(x), False)
        return pos, col


# ---------------------------------------------------------------------------- maxent


def _factor(K: np.ndarray, jitter: float):
    """Cholesky factor of ``K + λI`` and the diagonal of its inverse."""
    try:
        L = np.linalg.cholesky(K + jitter * np.eye(len(K)))
    except np.linalg.LinAlgError:
        raise MlpdesignError(
            f"the design's kernel matrix plus --jitter {jitter:g} is not positive definite; "
            "use a larger jitter"
        ) from None
    Linv = solve_triangular(L, np.eye(len(K)), lower=True, check_finite=False)
    return L, np.einsum("ij,ij->j", Linv, Linv)


def _log(v: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(v), -np.inf)
    np.log(v, out=out, where=np.asarray(v) > 0)
    return out


class _MaxEntScan:
    """One maxent step: the factor, the swappable columns in pool order, the bounds, and
    the rows whose best gain is within the window of this rank's best."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.L, M = _factor(run.f.K, run.jitter)
        tp = np.array(run.design, dtype=np.int64)
        order = np.argsort(tp, kind="stable")
        self.tpool = tp[order]
        self.cols = run.G + order  # factor positions of the swappable points, pool order
        self.M = M[self.cols]
        self.glow = -math.inf  # a lower bound of the best gain: log(a_t σ²(x | S))
        self.best = -math.inf  # the best gain solved on this rank
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_kept = 0
        # the bounds are exact; where they ruled out little last step, every 8th step
        self.use_bound = run.bounds and (run.prune_frac >= 0.05 or run.stats["steps"] % 8 == 1)
        self.pruned = 0

    def allowed(self, lo: int, hi: int, kb: np.ndarray) -> np.ndarray:
        """(hi-lo, swappable): x may come in for t: admissible, in t's stratum, and not a
        duplicate (D² <= eps, the greedy's rule) of a point of S∖t."""
        run = self.run
        ok = run.same_stratum(lo, hi, self.tpool)
        D = run.kxx[lo:hi, None] + run.f.kxx[None, :] - 2.0 * kb
        near = np.flatnonzero((D.min(axis=1) <= run.eps) & ok.any(axis=1)) if D.shape[1] else []
        for i in near:  # few: duplicates of a point of S (S's own points are not admissible)
            close = np.flatnonzero(D[i] <= run.eps)
            ok[i] &= len(close) > 1 or self.cols != close[0]
        return ok

    def bound(self, Y: np.ndarray, kb: np.ndarray, top: np.ndarray, ok) -> np.ndarray:
        """Upper bounds of each row's best log gain: ``a_t σ²(x | S∖t)`` with σ²(x | S∖t)
        at most σ²(x | p) for a point p left in S∖t, and at most the variance given the
        points before t in the factor (a prefix sum of the factor row)."""
        G, run = self.run.G, self.run
        before = np.cumsum(Y * Y, axis=1) - Y * Y  # Σ_{i<j} y_i²
        U = top[:, None] - before[:, self.cols]
        one = top[:, None] - kb * kb / (run.f.kxx + run.jitter)[None, :]  # σ²(x | {p})
        inf = np.full(len(kb), np.inf)
        mg = one[:, :G].min(axis=1) if G else inf
        d = one[:, G:]
        p1 = np.argmin(d, axis=1)
        r = np.arange(len(kb))
        s1 = d[r, p1].copy()
        d[r, p1] = np.inf
        s2 = d.min(axis=1) if d.shape[1] > 1 else inf
        V = np.where(
            self.cols[None, :] == (G + p1)[:, None],
            np.minimum(mg, s2)[:, None],
            np.minimum(mg, s1)[:, None],
        )
        U = self.M[None, :] * np.minimum(U, V)
        return _log(np.where(ok, U, 0.0).max(axis=1))

    def chunk(self, lo: int, hi: int, kb: np.ndarray) -> None:
        run = self.run
        Y = solve_triangular(self.L, kb.T, lower=True, check_finite=False).T
        top = run.kxx[lo:hi] + run.jitter
        s2 = top - np.einsum("ij,ij->i", Y, Y)
        ok = self.allowed(lo, hi, kb)
        P = self.M[None, :] * s2[:, None]  # r >= a_t σ²(x | S): the lower bound
        if ok.any():
            self.glow = max(self.glow, float(np.log(np.where(ok, P, 0.0).max())))
        keep = ok.any(axis=1)
        if self.use_bound and math.isfinite(self.glow):
            keep &= ~(self.bound(Y, kb, top, ok) + BOUND_MARGIN < self.glow - run.tie)
        rows = np.flatnonzero(keep)
        run.stats["rows_scanned"] += hi - lo
        run.stats["rows_solved"] += len(rows)
        self.pruned += int(ok.any(axis=1).sum()) - len(rows)
        if len(rows):
            A = solve_triangular(self.L, Y[rows].T, lower=True, trans="T", check_finite=False)
            a = A.T[:, self.cols]
            lg = _log(np.where(ok[rows], P[rows] + a * a, 0.0))
            self.keep(run.lo + lo + rows, lg)  # global indices

    def keep(self, x: np.ndarray, lg: np.ndarray) -> None:
        """Keep the rows that may hold a swap within the window of the best."""
        top = lg.max(axis=1)
        self.best = max(self.best, float(top.max()))
        near = top >= self.best - self.run.tie
        self.kept.append((x[near], lg[near]))
        self.n_kept += int(near.sum())
        if self.n_kept > 4096:  # the best rose: drop what fell out of the window
            self.kept = [self.window(xs, g, self.best) for xs, g in self.kept]
            self.n_kept = sum(len(xs) for xs, _ in self.kept)

    def window(self, xs: np.ndarray, g: np.ndarray, best: float):
        near = g.max(axis=1) >= best - self.run.tie
        return xs[near], g[near]

    def pick(self, best: float) -> tuple[int, int, float]:
        """This rank's lowest (out, in) among its swaps within the window of ``best``:
        (key = out * n + in, or n² for none; its gain)."""
        n, key, gain = self.run.n, self.run.n**2, -math.inf
        for xs, g in self.kept:
            hit = g >= best - self.run.tie
            for i in np.flatnonzero(hit.any(axis=1)):
                j = int(np.argmax(hit[i]))  # the lowest t (columns in pool order)
                k = int(self.tpool[j]) * n + int(xs[i])
                if k < key:
                    key, gain = k, float(g[i, j])
        return key, gain


def _maxent_step(run: _Run):
    """The best maxent swap ``(t, x, gain)``, or None when none gains enough."""
    scan = _MaxEntScan(run)
    for lo, hi, kb in run.cand.chunks():
        scan.chunk(lo, hi, kb)
    if scan.use_bound:
        run.prune_frac = scan.pruned / max(1, run.o.n)
    c = run.c
    best = float(c.max(scan.best))
    if not best > max(run.tol, run.tie):
        return None
    key, gain = scan.pick(best)
    top = int(c.min(key))
    t, x = divmod(top, run.n)
    return t, x, float(c.max(gain if key == top else -math.inf))


def _maxent_finish(run: _Run) -> tuple[float, np.ndarray]:
    """log det(K_SS + λI) and each design point's leave-one-out σ²."""
    L, M = _factor(run.f.K, run.jitter)
    return float(2.0 * np.log(np.diag(L)).sum()), 1.0 / M[run.G :]


# ---------------------------------------------------------------------------- max-min


def _pairs(run: _Run) -> np.ndarray:
    """D² between S's points, with +inf where a pair does not count (itself; both given)."""
    D = run.f.d2()
    given = np.arange(run.f.m) < run.G
    D[given[:, None] & given[None, :]] = np.inf
    np.fill_diagonal(D, np.inf)
    return D


def _without(D: np.ndarray, j: int) -> float:
    keep = np.delete(np.arange(len(D)), j)
    return float(D[np.ix_(keep, keep)].min()) if len(keep) > 1 else math.inf


class _Nearest:
    """Ψ (D² to S) and the nearest point's position of this rank's candidates, exact."""

    def __init__(self, run: _Run) -> None:
        self.psi = np.full(run.o.n, np.inf)
        self.near = np.zeros(run.o.n, dtype=np.int64)
        for lo, hi, kb in run.cand.chunks():
            d = np.maximum(run.kxx[lo:hi, None] + run.f.kxx[None, :] - 2.0 * kb, 0.0)
            self.near[lo:hi] = np.argmin(d, axis=1)
            self.psi[lo:hi] = d[np.arange(hi - lo), self.near[lo:hi]]

    def update(self, run: _Run, pos: int, col: np.ndarray, t: int) -> None:
        """After the swap that put a point with kernel column ``col`` in the place of
        ``t`` (position ``pos``): t's cell (and t) recomputed, the others compared."""
        d = np.maximum(run.kxx + run.f.kxx[pos] - 2.0 * col, 0.0)
        cell = self.near == pos
        if run.mine(t):
            cell[t - run.lo] = True
        better = ~cell & (d < self.psi)
        self.psi[better], self.near[better] = d[better], pos
        redo = np.flatnonzero(cell)
        run.stats["rows_recomputed"] += len(redo)
        if len(redo):
            d = run.d2_rows(redo)
            self.near[redo] = np.argmin(d, axis=1)
            self.psi[redo] = d[np.arange(len(redo)), self.near[redo]]


def _psi_without(run: _Run, near, j: int, nn: float, cap: float, plain) -> np.ndarray:
    """Ψ(x | S∖t) of this rank's candidates admissible for t = S's point ``j`` (-inf
    elsewhere; candidates that provably cannot reach ``min(best, cap)`` less the window,
    too). ``nn``: t's nearest D² in S; ``cap``: m_t."""
    tp = np.array([run.f.points[j]])
    ok = run.same_stratum(0, run.o.n, tp)[:, 0]
    if near is None:  # every candidate from its row: the nearest and the second nearest
        m1, a1, m2 = plain
        return np.where(ok, np.where(a1 == j, m2, m1), -np.inf)
    vals = np.where(ok & (near.near != j), near.psi, -np.inf)
    best = min(float(vals.max()) if len(vals) else -math.inf, cap)
    cell = np.flatnonzero(ok & (near.near == j))
    e = run.eps
    ub = (np.sqrt(near.psi[cell] + e) + math.sqrt(nn + e)) ** 2 + e
    need = cell[ub >= best - run.tie]
    run.stats["rows_recomputed"] += len(need)
    if len(need):
        d = run.d2_rows(need)
        d[:, j] = np.inf
        vals[need] = d.min(axis=1)
    return vals


def _plain_rows(run: _Run):
    """Every candidate's nearest D², its position and the second nearest D² (plain path)."""
    n = run.o.n
    m1, m2 = np.full(n, np.inf), np.full(n, np.inf)
    a1 = np.zeros(n, dtype=np.int64)
    for lo, hi, kb in run.cand.chunks():
        d = np.maximum(run.kxx[lo:hi, None] + run.f.kxx[None, :] - 2.0 * kb, 0.0)
        a1[lo:hi] = np.argmin(d, axis=1)
        r = np.arange(hi - lo)
        m1[lo:hi] = d[r, a1[lo:hi]]
        d[r, a1[lo:hi]] = np.inf
        m2[lo:hi] = d.min(axis=1) if d.shape[1] else np.inf
    return m1, a1, m2


def _outgoing(run: _Run, D: np.ndarray, delta: float, bounded: bool) -> dict:
    """The design points to try as t, with m_t (the objective without t): with the bound
    only the closest pair's design points, and only if m_t - δ can pass the threshold."""
    thr = max(run.tol, run.tie)
    if bounded:
        a, b = np.unravel_index(int(np.argmin(D)), D.shape)
        out = sorted({int(a), int(b)} - set(range(run.G)))
    else:
        out = list(range(run.G, run.f.m))
    m = {j: _without(D, j) for j in out}
    return {j: v for j, v in m.items() if not bounded or v - delta > thr - run.tie}


def _maxmin_step(run: _Run, near: _Nearest | None):
    """The best max-min swap ``(t, x, gain)``, or None."""
    D = _pairs(run)
    delta = float(D.min()) if D.size else math.inf
    if not math.isfinite(delta):
        return None
    out = _outgoing(run, D, delta, near is not None)
    plain = _plain_rows(run) if near is None else None
    tried = {}
    for j, m_t in out.items():
        vals = _psi_without(run, near, j, float(D[j].min()), m_t, plain)
        top = float(run.c.max(float(vals.max()) if len(vals) else -math.inf))
        if top > -math.inf:
            tried[j] = (min(m_t, top) - delta, vals if near is not None else None)
    run.stats["outgoing_tried"] = run.stats.get("outgoing_tried", 0) + len(tried)
    if not tried:
        return None
    best = max(g for g, _ in tried.values())
    if not best > max(run.tol, run.tie):
        return None
    j = min((j for j, (g, _) in tried.items() if g >= best - run.tie), key=run.f.points.__getitem__)
    vals = tried[j][1]
    if vals is None:
        vals = _psi_without(run, near, j, float(D[j].min()), out[j], plain)
    x = run.lowest(vals, best + delta - run.tie)  # the lowest x within the window
    psi = float(run.c.max(float(vals[x - run.lo]) if run.mine(x) else -math.inf))
    return run.f.points[j], x, min(out[j], psi) - delta


def _maxmin_finish(run: _Run) -> tuple[float, np.ndarray]:
    D = _pairs(run)
    return float(D.min()) if D.size else math.inf, D.min(axis=1)[run.G :]


# ---------------------------------------------------------------------------- the loop


def exchange_space(
    space,
    index,
    method: str = "maxent",
    *,
    jitter: float = DEFAULT_JITTER,
    tol: float = 0.0,
    max_swaps: int = 1000,
    strata=None,
    allowed=None,
    bounds: bool = True,
    cache_bytes: int | None = None,
    progress=None,
) -> Exchange:
    """Fedorov exchange of the design ``index`` (pool positions) over an engine space
    (module docstring); ``space.given`` is the fixed given set. ``strata``: a label per
    candidate; ``allowed``: a mask of the candidates that may come in (default all);
    ``bounds=False``: every pair evaluated (the same swaps); ``cache_bytes``: the most
    bytes of candidate-by-S kernel values kept (None: no limit; 0: recomputed in blocks);
    ``progress``: ``update(1)`` per swap. Every call is collective under MPI."""
    index = _check(space.n, index, method, tol, max_swaps, jitter)
    opts = dict(bounds=bounds, cache_bytes=cache_bytes, strata=strata, allowed=allowed)
    run = _Run(space, method, index, {**opts, "tol": tol, "jitter": jitter})
    finish = _maxent_finish if method == "maxent" else _maxmin_finish
    before = finish(run)[0]
    near = _Nearest(run) if (method == "maxmin" and bounds) else None
    swaps = []
    while len(swaps) < max_swaps:
        run.stats["steps"] += 1
        step = _maxent_step(run) if method == "maxent" else _maxmin_step(run, near)
        if step is None:
            break
        t, x, gain = step
        pos, col = run.swap(t, x)
        if near is not None:
            near.update(run, pos, col, t)
        swaps.append((t, x, gain))
        if progress is not None:
            progress.update(1)
    after, per_point = finish(run)
    stats = dict(run.stats, swaps=len(swaps), cached=run.cand.cached, tie=run.tie)
    stats["kernel_values"] = int(run.c.sum(run.cand.values))
    key = "rows_solved" if method == "maxent" else "rows_recomputed"
    stats["candidates_evaluated"] = int(run.c.sum(run.stats[key]))
    D = run.f.d2()
    np.fill_diagonal(D, np.inf)
    return Exchange(
        np.array(run.design, dtype=np.int64),
        swaps,
        before,
        after,
        method,
        stats,
        psi=D.min(axis=1)[run.G :],
        var=per_point if method == "maxent" else None,
        tol=float(tol),
        max_swaps=int(max_swaps),
    )


def exchange(
    kd: KernelData, index, method: str = "maxent", *, given: KernelData | None = None, **kw
) -> Exchange:
    """:func:`exchange_space` on a KernelData in memory (and a given set)."""
    return exchange_space(memory_space(kd, given), index, method, **kw)


# ---------------------------------------------------------------------------- reference


def _objective(method: str, K: np.ndarray, D: np.ndarray, S: list[int], g: int, lam: float):
    if method == "maxent":
        sign, ld = np.linalg.slogdet(K[np.ix_(S, S)] + lam * np.eye(len(S)))
        return float(ld) if sign > 0 else -math.inf
    sub = D[np.ix_(S, S)].copy()
    sub[:g, :g] = np.inf
    np.fill_diagonal(sub, np.inf)
    return float(sub.min()) if sub.size else math.inf


def _pick(gains: np.ndarray, outs: np.ndarray, ins: np.ndarray, tie: float):
    """(gain, out, in) of the best swap: gains within ``tie`` of the largest tie, the
    lowest (out, in) wins."""
    top = float(gains.max())
    hit = np.flatnonzero(gains >= top - tie)
    j = hit[np.lexsort((ins[hit], outs[hit]))[0]]
    return float(gains[j]), int(outs[j]), int(ins[j])


def exchange_bruteforce(
    kd: KernelData,
    index,
    method: str = "maxent",
    *,
    given: KernelData | None = None,
    jitter: float = DEFAULT_JITTER,
    tol: float = 0.0,
    max_swaps: int = 1000,
    strata=None,
    allowed=None,
) -> Exchange:
    """The reference: every possible swap's objective recomputed from scratch, from the
    kernel matrix of the whole pool and given set (small pools only)."""
    design = _check(kd.n, index, method, tol, max_swaps, jitter)
    oracle = KernelOracle(kd, given)
    g = given.n if given is not None else 0
    pts = [-1 - j for j in range(g)] + list(range(kd.n))
    K = oracle.tt(pts)
    d = np.diag(K)
    D = np.maximum(0.0, d[:, None] + d[None, :] - 2.0 * K)
    codes = _codes(strata, kd.n)
    codes = np.zeros(kd.n, dtype=np.int64) if codes is None else codes
    ok = np.ones(kd.n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    eps = pool_eps(kd, given)
    tie = tie_window(eps, kd.terms[0].rows.dtype)
    tie = maxent_tie(tie, jitter) if method == "maxent" else tie
    S = lambda des: list(range(g)) + [g + int(p) for p in des]  # noqa: E731
    obj = before = _objective(method, K, D, S(design), g, jitter)
    swaps = []
    while len(swaps) < max_swaps:
        gains, outs, ins = [], [], []
        for c, t in enumerate(design):
            for x in np.flatnonzero(ok & (codes == codes[t])):
                if x in design:
                    continue
                trial = design.copy()
                trial[c] = x
                rest = [p for p in S(trial) if p != g + x]
                if method == "maxent" and D[g + x, rest].min() <= eps:
                    continue  # a duplicate of a point of S∖t
                gains.append(_objective(method, K, D, S(trial), g, jitter) - obj)
                outs.append(int(t))
                ins.append(int(x))
        if not gains:
            break
        gain, out, inn = _pick(np.array(gains), np.array(outs), np.array(ins), tie)
        if not gain > max(tol, tie):
            break
        design[int(np.flatnonzero(design == out)[0])] = inn
        obj = _objective(method, K, D, S(design), g, jitter)
        swaps.append((out, inn, gain))
    return Exchange(design, swaps, before, obj, method, {}, tol=float(tol), max_swaps=max_swaps)


__all__ = [
    "LOGDET_TIE",
    "METHODS",
    "Exchange",
    "check_refine",
    "exchange",
    "exchange_bruteforce",
    "exchange_space",
]
