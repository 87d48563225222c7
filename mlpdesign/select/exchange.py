"""Fedorov exchange from a greedy design (``select --refine exchange``).

Starting from a design T (and a fixed given set G), each step makes the best swap, a
design point t out and a pool candidate x in, while the objective improves by more than
``tol``, up to ``max_swaps`` swaps:

* **maxent**: ``log det(K_SS + λI)``, S = G ∪ T. With ``A = K_SS + λI``, ``a = diag(A⁻¹)``,
  ``w = A⁻¹ k_Sx`` and ``σ²(x | S) = k(x,x) + λ - k_xS w``, removing t and adding x
  changes the log det by exactly (rank-one down- and update)::

      gain(t, x) = log σ²(x | S \\ t) − log σ²(t | S \\ t) = log(a_t σ²(x | S) + w_t²)

  Bound: σ²(x | S \\ t) <= σ²(x | {p}) = k(x,x) + λ − k_xp² / (k(p,p) + λ) for any p in
  S \\ t, and S \\ t holds every given point and all design points but one, so
  ``gain(t, x) <= log(u_x) + log(max_t a_t)`` with u_x the smallest σ²(x | {p}) over the
  given points and the design less x's best one. Candidates whose bound is below the
  best gain found minus a rounding margin are not evaluated (their w, O(|S|²), not
  computed); the rest are evaluated in blocks, largest bounds first.
* **maxmin**: the smallest D² over the pairs of S with a design point in them. A swap
  can only raise it if t is in every closest pair, i.e. t is one of the (at most two)
  design points of one closest pair (exact: every other t leaves that pair in place);
  for those t the new objective is ``min(m_t, Ψ(x | S \\ t))``, m_t the smallest pair
  without t and Ψ(x | S \\ t) x's nearest or, when that is t, second-nearest D².

Ties: gains within ``tie`` of the best are equal and the lowest (out, in) pool index
wins (``2 eps`` for maxmin; :data:`LOGDET_TIE` for maxent). ``strata``: a swap keeps
within a stratum (x's label equals t's). In memory: the kernel (maxent) or D² (maxmin)
of every candidate against S is kept, N × |S| floats, one column replaced per swap (one
kernel row of the pool); never an N × N matrix.

:func:`exchange_bruteforce` is the reference: the objective recomputed from scratch
(``numpy.linalg.slogdet``; all pairwise D²) for every possible swap.

Library API::

    exchange(kd, index, method, *, given=None, jitter=1e-6, tol=0.0, max_swaps=1000,
             strata=None, allowed=None, bounds=True) -> Exchange
    exchange_bruteforce(kd, index, method, ...same...) -> Exchange
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import cho_solve

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.core import KernelData
from mlpdesign.select.engine import tie_window
from mlpdesign.select.maxent import DEFAULT_JITTER, KernelOracle, check_jitter, one_blas_thread

#: gains of log det within this are ties, and a gain must exceed it: the two exact paths
#: (rank-one formula, slogdet from scratch) differ by up to ~1e-8 on the Zr test store
#: with λ = 1e-4, a normalised kernel and |S| = 18
LOGDET_TIE = 1e-7
#: candidates evaluated together (maxent): a (BLOCK × |S|) product
BLOCK = 1024
METHODS = ("maxent", "maxmin")


@dataclass
class Exchange:
    """The refined set ``index`` (pool positions; the design's order, each swap in the
    place of the point it replaced), the swaps ``(out, in, gain)`` in pool positions,
    the objective before and after, and counts."""

    index: np.ndarray
    swaps: list = field(default_factory=list)
    before: float = 0.0
    after: float = 0.0
    method: str = "maxent"
    stats: dict = field(default_factory=dict)


def _check(kd: KernelData, index, method: str, tol, max_swaps, jitter) -> np.ndarray:
    if method not in METHODS:
        raise MlpdesignError(f"--refine exchange works on maxent or maxmin designs, not {method!r}")
    if method == "maxent":
        check_jitter(jitter)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise MlpdesignError(f"--tol must be a number >= 0, got {tol}")
    if int(max_swaps) < 0:
        raise MlpdesignError(f"--max-swaps must be >= 0, got {max_swaps}")
    idx = np.asarray(index, dtype=np.int64).copy()
    if len(np.unique(idx)) != len(idx) or (len(idx) and (idx.min() < 0 or idx.max() >= kd.n)):
        raise MlpdesignError("the design to refine has repeated or out-of-pool positions")
    return idx


def _codes(strata, n: int) -> np.ndarray:
    if strata is None:
        return np.zeros(n, dtype=np.int64)
    labels = np.asarray(strata)
    if len(labels) != n:
        raise MlpdesignError(f"{len(labels)} stratum labels for a pool of {n} candidates")
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _pick(gains: np.ndarray, outs: np.ndarray, ins: np.ndarray, tie: float):
    """(gain, out, in) of the best swap: gains within ``tie`` of the largest tie, the
    lowest (out, in) wins."""
    top = float(gains.max())
    hit = np.flatnonzero(gains >= top - tie)
    j = hit[np.lexsort((ins[hit], outs[hit]))[0]]
    return float(gains[j]), int(outs[j]), int(ins[j])


# ---------------------------------------------------------------------------- maxent


class _Columns:
    """The kernel (or D²) of every pool candidate against the points of S = G ∪ T, one
    column per point; given points first (``-1 - j``), then the design."""

    def __init__(self, oracle: KernelOracle, points: list[int], what: str) -> None:
        self.oracle, self.what = oracle, what
        self.all = np.arange(oracle.n)
        self.M = np.empty((oracle.n, len(points)))
        for c, p in enumerate(points):
            self.set(c, p)

    def set(self, c: int, p: int) -> None:
        q = self.oracle.query(p)
        kd = self.oracle.kd
        self.M[:, c] = kd.k_subset(q, self.all) if self.what == "k" else kd.d2_range(q)


def _given_block(oracle: KernelOracle, g: int, what: str) -> np.ndarray:
    """k (or D²) among the given points."""
    if g == 0:
        return np.zeros((0, 0))
    pts = [-1 - j for j in range(g)]
    K = oracle.tt(pts)
    if what == "k":
        return K
    d = np.diag(K)
    return np.maximum(0.0, d[:, None] + d[None, :] - 2.0 * K)


def _square(cols: _Columns, design: np.ndarray, GG: np.ndarray, diag) -> np.ndarray:
    """The |S| × |S| matrix of S from the cached columns (symmetrised)."""
    g = len(GG)
    M = np.empty((g + len(design), g + len(design)))
    M[:g, :g] = GG
    M[g:, :] = cols.M[design]
    M[:g, g:] = M[g:, :g].T
    M[g:, g:] = 0.5 * (M[g:, g:] + M[g:, g:].T)
    np.fill_diagonal(M, diag)
    return M


def _bound_u(K: np.ndarray, kxx, kss, lam: float, g: int) -> np.ndarray:
    """u_x: the smallest σ²(x | {p}) over the given points and the design less its best."""
    r = K * K / (kss + lam)[None, :]
    keep = r[:, :g].max(axis=1) if g else np.zeros(len(K))
    d = r[:, g:]
    if d.shape[1] >= 2:
        second = -np.partition(-d, 1, axis=1)[:, 1]
        keep = np.maximum(keep, second)
    return kxx + lam - keep


def _maxent_step(st: dict, design, allowed, codes, tie: float, bounds: bool):
    """The best swap (gain, out, in) of this design, or None; counts in ``st``."""
    oracle, cols, lam, g = st["oracle"], st["cols"], st["jitter"], st["g"]
    pts_k = np.concatenate([oracle.kxx_given, oracle.kxx[design]])
    A = _square(cols, design, st["GG"], pts_k) + lam * np.eye(g + len(design))
    try:
        L = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        raise MlpdesignError(
            "the design's kernel matrix plus jitter is not positive definite"
        ) from None
    Linv = np.linalg.inv(L)
    Ainv = Linv.T @ Linv
    a = np.diag(Ainv)[g:]
    logdet = 2.0 * float(np.log(np.diag(L)).sum())
    cand = np.flatnonzero(allowed)
    cand = cand[~np.isin(cand, design)]
    amax = np.full(codes.max() + 1, -np.inf)
    np.maximum.at(amax, codes[design], a)
    cand = cand[np.isfinite(amax[codes[cand]])]  # strata with a design point
    ub = np.full(len(cand), np.inf)
    if bounds and len(cand):
        u = _bound_u(cols.M[cand], oracle.kxx[cand], pts_k, lam, g)
        ub = np.log(np.maximum(u, 1e-300) * (1 + 1e-9) + 1e-12) + np.log(amax[codes[cand]])
        order = np.argsort(-ub, kind="stable")
        cand, ub = cand[order], ub[order]
    best, keep, done = -np.inf, [], 0
    for b0 in range(0, len(cand), BLOCK):
        if ub[b0] < max(best, st["tol"]) - tie - 1e-9:
            break
        X = cand[b0 : b0 + BLOCK]
        W = cho_solve((L, True), cols.M[X].T, check_finite=False).T
        s2 = oracle.kxx[X] + lam - np.einsum("ij,ij->i", cols.M[X], W)
        G = np.log(np.maximum(a[None, :] * s2[:, None] + W[:, g:] ** 2, 1e-300))
        G[codes[X][:, None] != codes[design][None, :]] = -np.inf
        done += len(X)
        best = max(best, float(G.max()))
        xi, ti = np.nonzero(G >= best - tie)
        keep.append((G[xi, ti], design[ti], X[xi]))
    st["evaluated"] += done
    st["logdet"] = logdet
    if not keep:
        return None
    return _pick(*(np.concatenate(z) for z in zip(*keep, strict=True)), tie)


def _maxent(kd, design, given, jitter, tol, max_swaps, codes, allowed, bounds) -> Exchange:
    oracle = KernelOracle(kd, given)
    g = given.n if given is not None else 0
    cols = _Columns(oracle, [-1 - j for j in range(g)] + [int(p) for p in design], "k")
    st = dict(oracle=oracle, cols=cols, jitter=float(jitter), g=g, tol=float(tol), evaluated=0)
    st["GG"] = _given_block(oracle, g, "k")
    tie = LOGDET_TIE
    swaps, before = [], None
    while True:
        found = _maxent_step(st, design, allowed, codes, tie, bounds)
        before = st["logdet"] if before is None else before
        if len(swaps) >= max_swaps or found is None or not found[0] > max(tol, tie):
            break
        gain, out, inn = found
        c = int(np.flatnonzero(design == out)[0])
        design[c] = inn
        cols.set(g + c, inn)
        swaps.append((out, inn, gain))
    stats = {"candidates_evaluated": st["evaluated"], "steps": len(swaps) + 1}
    return Exchange(design, swaps, before, st["logdet"], "maxent", stats)


# ---------------------------------------------------------------------------- maxmin


def _pairs_min(D: np.ndarray, g: int, drop: int | None = None) -> float:
    """Smallest D² over the pairs of S with a design point (position >= g), without
    position ``drop``."""
    m = len(D)
    keep = np.ones(m, dtype=bool)
    if drop is not None:
        keep[drop] = False
    M = D.copy()
    M[:g, :g] = np.inf
    np.fill_diagonal(M, np.inf)
    M = M[np.ix_(keep, keep)]
    return float(M.min()) if M.size else math.inf


def _maxmin_step(st: dict, design, allowed, codes, tie: float):
    cols, g = st["cols"], st["g"]
    D = _square(cols, design, st["GG"], 0.0)
    obj = _pairs_min(D, g)
    st["obj"] = obj
    M = D.copy()
    M[:g, :g] = np.inf
    np.fill_diagonal(M, np.inf)
    a, b = np.unravel_index(int(np.argmin(M)), M.shape)
    outs = [int(p) for p in (a, b) if p >= g]  # design points of one closest pair
    cand = np.flatnonzero(allowed)
    cand = cand[~np.isin(cand, design)]
    if not outs or not len(cand):
        return None
    C = cols.M[cand]
    near = np.argmin(C, axis=1)
    psi1 = C[np.arange(len(cand)), near]
    gains, o_all, i_all = [], [], []
    for p in outs:
        m_t = _pairs_min(D, g, drop=p)
        Cp = np.delete(C, p, axis=1)
        psi = np.where(near == p, Cp.min(axis=1) if Cp.shape[1] else math.inf, psi1)
        gain = np.minimum(m_t, psi) - obj
        gain[codes[cand] != codes[design[p - g]]] = -np.inf
        gains.append(gain)
        o_all.append(np.full(len(cand), design[p - g]))
        i_all.append(cand)
    st["evaluated"] += len(cand) * len(outs)
    return _pick(np.concatenate(gains), np.concatenate(o_all), np.concatenate(i_all), tie)


def _maxmin(kd, design, given, tol, max_swaps, codes, allowed) -> Exchange:
    oracle = KernelOracle(kd, given)
    g = given.n if given is not None else 0
    cols = _Columns(oracle, [-1 - j for j in range(g)] + [int(p) for p in design], "d2")
    st = dict(cols=cols, g=g, evaluated=0, GG=_given_block(oracle, g, "d2"))
    tie = tie_window(oracle.eps, kd.terms[0].rows.dtype)
    swaps, before = [], None
    while True:
        found = _maxmin_step(st, design, allowed, codes, tie)
        before = st["obj"] if before is None else before
        if len(swaps) >= max_swaps or found is None or not found[0] > max(tol, tie):
            break
        gain, out, inn = found
        c = int(np.flatnonzero(design == out)[0])
        design[c] = inn
        cols.set(g + c, inn)
        swaps.append((out, inn, gain))
    stats = {"candidates_evaluated": st["evaluated"], "steps": len(swaps) + 1}
    return Exchange(design, swaps, before, st["obj"], "maxmin", stats)


@one_blas_thread
def exchange(
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
    bounds: bool = True,
) -> Exchange:
    """Fedorov exchange of design ``index`` (module docstring). ``allowed``: a mask of the
    pool candidates that may be swapped in (default all); ``bounds=False``: evaluate
    every candidate (the benchmark's baseline; the same swaps)."""
    design = _check(kd, index, method, tol, max_swaps, jitter)
    if given is not None:
        kd.compatible(given)
    codes = _codes(strata, kd.n)
    ok = np.ones(kd.n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    if method == "maxent":
        return _maxent(kd, design, given, jitter, tol, max_swaps, codes, ok, bounds)
    return _maxmin(kd, design, given, tol, max_swaps, codes, ok)


# ---------------------------------------------------------------------------- reference


def _objective(method: str, K: np.ndarray, D: np.ndarray, S: list[int], g: int, lam: float):
    if method == "maxent":
        sign, ld = np.linalg.slogdet(K[np.ix_(S, S)] + lam * np.eye(len(S)))
        return float(ld) if sign > 0 else -math.inf
    sub = D[np.ix_(S, S)].copy()
    sub[:g, :g] = np.inf
    np.fill_diagonal(sub, np.inf)
    return float(sub.min()) if sub.size else math.inf


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
    design = _check(kd, index, method, tol, max_swaps, jitter)
    oracle = KernelOracle(kd, given)
    g = given.n if given is not None else 0
    pts = [-1 - j for j in range(g)] + list(range(kd.n))
    K = oracle.tt(pts)
    d = np.diag(K)
    D = np.maximum(0.0, d[:, None] + d[None, :] - 2.0 * K)
    codes = _codes(strata, kd.n)
    ok = np.ones(kd.n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    tie = LOGDET_TIE if method == "maxent" else tie_window(oracle.eps, kd.terms[0].rows.dtype)
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
    return Exchange(design, swaps, before, obj, method, {})


__all__ = ["BLOCK", "LOGDET_TIE", "METHODS", "Exchange", "exchange", "exchange_bruteforce"]
