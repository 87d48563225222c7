"""Exact nearest-design-point tracking: Psi_i = min D²(i, design), lowered one design
point at a time without evaluating the rows that provably cannot change.

D is a metric (the RKHS distance of a positive-definite kernel), so
``D(s, i) >= D(s, n_i) - D(n_i, i)``: a new point s cannot lower Psi_i when
``D²(s, n_i) >= 4 Psi_i + 5 eps``, with ``eps`` a proven bound on the rounding error of
any computed D² (:attr:`mlpdesign.kernels.core.KernelData.eps`). Such candidates are
skipped; a skipped row provably would not have changed Psi, so every consumer (the greedy
criteria, report's covering radii, score) sees the Psi of the full computation.

* :class:`MaxMinState`: the pool as one KernelData in memory, with two more exact bounds
  (cells of design points ruled out from a table of lower bounds between them; SOAP
  bounded by Cauchy-Schwarz in :meth:`~mlpdesign.kernels.core.KernelData.d2_below`).
* :class:`StreamedState`: this rank's blocks of a :class:`~mlpdesign.kernels.blocks.PoolShard`
  (in memory, spilled, or read from the store per pick), the design points added on
  every rank alike; per block, the candidates left by the triangle inequality go through
  the Cauchy-Schwarz bound of ``d2_below`` / ``d2_below_range`` (a block's rule depends
  only on the state, so Psi stays bitwise the same for any memory limit and rank count).
"""

from __future__ import annotations

import numpy as np

from mlpdesign.kernels.blocks import DesignPoints, PoolShard
from mlpdesign.kernels.core import KernelData

#: Psi of a picked candidate: below any D², so it is never picked again
PICKED = -1.0
#: above this fraction of the pool, evaluate every row in place rather than gather the
#: candidates' rows (a gather copies them)
FULL_PASS = 0.3
#: design points with a table of lower bounds between them (CELL_CAP² float32 at most)
CELL_CAP = 4096
#: additions between recomputations of the cells' Psi bounds
REFRESH = 32


def pool_eps(kd: KernelData, given: KernelData | None = None) -> float:
    """The rounding bound of D² within the pool and between the pool and ``given``."""
    return max(kd.eps, kd.eps_with(given)) if given is not None else kd.eps


class MaxMinState:
    """Psi, nearest design point and the design points so far; O(N) memory.

    :meth:`add_pool` / :meth:`add_given` add a design point (a pool candidate or a config
    of the given set) and lower Psi, evaluating only the candidates that the triangle
    inequality cannot rule out (see the module docstring).

    The candidates nearest to one design point form its cell, with an upper bound on their
    Psi (the largest Psi given to a member when the cell was made, refreshed every
    :data:`REFRESH` additions: Psi only ever decreases, so a stale bound stays valid). A
    new point s whose own nearest design point is n_s is at least
    ``L_j = D(n_s, n_j) - D(s, n_s)`` from design point n_j; when ``L_j² >= 4 max Psi_j``
    (with rounding margins) no member of cell j can change and D(s, n_j) is not computed.
    ``D(n_s, n_j)`` comes from a table of certified lower bounds on the distances between
    design points (float32, rounded down; at most :data:`CELL_CAP` points).
    """

    def __init__(self, kd: KernelData, given: KernelData | None = None) -> None:
        self.kd, self.given = kd, given
        self.eps = pool_eps(kd, given)
        self._sqeps = float(np.sqrt(self.eps))
        self.psi = np.full(kd.n, np.inf)
        self.nearest = np.zeros(kd.n, dtype=np.int64)
        self._src = np.zeros(0, dtype=np.int64)  # per design point: pool or given index
        self._is_pool = np.zeros(0, dtype=bool)
        self._cell_max = np.zeros(0)  # per design point: upper bound of its cell's Psi
        self._lower = np.zeros((0, 0), dtype=np.float32)  # lower bounds of D between them
        self.n_centres = 0
        self.evaluated = 0
        self.centres_evaluated = 0
        self.adds = 0

    def _grow(self) -> None:
        k = self.n_centres
        if k < len(self._src):
            return
        cap = max(16, 2 * k)
        for name in ("_src", "_is_pool", "_cell_max"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[:k] = old[:k]
            setattr(self, name, new)
        if k < CELL_CAP:
            m = min(cap, CELL_CAP)
            low = np.zeros((m, m), dtype=np.float32)
            low[:k, :k] = self._lower[:k, :k]
            self._lower = low

    def _centre_d2(self, q, near: int | None, psi_q: float) -> np.ndarray:
        """D² from ``q`` to every design point whose cell it may change (+inf for the
        others), and the new point's row of the lower-bound table."""
        k = self.n_centres
        need = np.ones(k, dtype=bool)
        bound = None
        if near is not None and k <= CELL_CAP:
            bound = self._lower[near, :k] - (np.sqrt(max(psi_q, 0.0)) + self._sqeps)
            skip = (bound >= 0) & (bound * bound >= 4.0 * self._cell_max[:k] + 6.0 * self.eps)
            skip[near] = False
            need = ~skip
        dc = np.full(k, np.inf)
        for pool, kd in ((True, self.kd), (False, self.given)):
            ids = np.flatnonzero(need & (self._is_pool[:k] == pool))
            if len(ids):
                lim = 4.0 * self._cell_max[ids] + 5.0 * self.eps  # below: a bound only
                dc[ids] = kd.d2_below(q, self._src[ids], lim)
        self.centres_evaluated += int(need.sum())
        if k < CELL_CAP:
            low = np.sqrt(np.where(need, dc, 0.0)) - self._sqeps
            if bound is not None:
                low = np.where(need, low, bound)
            low = np.maximum(low, 0.0)
            low32 = low.astype(np.float32)
            low32 = np.where(low32 > low, np.nextafter(low32, np.float32(0)), low32)
            self._lower[k, :k] = low32
            self._lower[:k, k] = low32
        return dc

    def _add(self, q, near: int | None = None, psi_q: float = np.inf) -> None:
        psi = self.psi
        if self.n_centres == 0:
            cand = np.flatnonzero(psi >= 0)
        else:
            dc = self._centre_d2(q, near, psi_q)
            cand = np.flatnonzero(dc[self.nearest] < 4.0 * psi + 5.0 * self.eps)
        if len(cand) > FULL_PASS * self.kd.n:  # most of the pool: one contiguous pass
            d2 = self.kd.d2_range(q, 0, self.kd.n)[cand]
        else:
            d2 = self.kd.d2_below(q, cand, psi[cand])
        upd = d2 < psi[cand]
        hit = cand[upd]
        psi[hit] = d2[upd]
        self.nearest[hit] = self.n_centres
        self._cell_max[self.n_centres] = float(d2[upd].max(initial=0.0))
        self.evaluated += len(cand)
        self.adds += 1
        if self.adds % REFRESH == 0:  # tighten the stale cell bounds: one O(N) pass
            live = psi >= 0
            cm = np.zeros(len(self._cell_max))
            np.maximum.at(cm, self.nearest[live], psi[live])
            self._cell_max = cm

    def _added(self, src: int, pool: bool) -> None:
        self._src[self.n_centres] = src
        self._is_pool[self.n_centres] = pool
        self.n_centres += 1

    def add_pool(self, i: int, exclude: bool = True) -> None:
        """Add pool candidate ``i`` to the design (``exclude``: never pick it again)."""
        self._grow()
        live = self.n_centres and 0 <= self.psi[i] < np.inf
        near = int(self.nearest[i]) if live else None
        psi_q = float(self.psi[i])
        if exclude:
            self.psi[i] = PICKED
        self._add(self.kd.query(i), near, psi_q)
        self._added(i, True)

    def add_given(self, j: int) -> None:
        """Add config ``j`` of the given set as a design point."""
        self._grow()
        self._add(self.given.query(j))
        self._added(j, False)


class StreamedState:
    """:class:`MaxMinState` over a :class:`PoolShard`: Psi and the nearest
    design point of this rank's candidates; design points added on every rank alike."""

    def __init__(self, shard: PoolShard, eps: float) -> None:
        self.shard, self.eps = shard, eps
        self.psi = np.full(shard.local_n, np.inf)
        self.nearest = np.zeros(shard.local_n, dtype=np.int64)
        self.design = DesignPoints(shard.ref)
        self.evaluated = 0
        self.costly = 0  # candidates whose costly terms (SOAP) were computed
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
            costly0 = kd.costly_evaluated
            if len(cand) > FULL_PASS * kd.n:  # in place, the others not wanted (-inf)
                want = np.full(kd.n, -np.inf)
                want[cand] = psi[cand]
                d2 = kd.d2_below_range(q, 0, kd.n, want, self.eps)[cand]
            else:
                d2 = kd.d2_below(q, cand, psi[cand], self.eps)
            self.costly += kd.costly_evaluated - costly0
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


def min_d2_to(kd: KernelData, idx) -> np.ndarray:
    """Min D² from every config of ``kd`` to the configs ``idx`` (e.g. a design: the
    covering radius is the max of this), with the exact bounds of :class:`MaxMinState`."""
    st = MaxMinState(kd)
    for i in idx:
        st.add_pool(int(i), exclude=False)
    return st.psi.copy()
