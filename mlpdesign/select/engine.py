"""The greedy loop, written once, and the protocol of the criteria it hosts.

A design is built one pick at a time by :func:`greedy`. *Where* the candidates live is a
**space**; *what* makes a candidate the best next pick is a **criterion** (as
scikit-matter's ``GreedySelector`` hosts FPS and CUR). The loop owns everything else,
once: the first pick, conditioning on a given set, strata, the duplicate stop, progress.

Space (:class:`MemorySpace`: the pool as one KernelData; :class:`ShardSpace`: the blocks of
this MPI rank's shard, cached, spilled or streamed from the store). It holds, for its local
candidates (global indices ``lo .. hi-1``):

* ``psi``: min D² to the design and the given set so far (``PICKED`` once picked), exact,
  kept by :mod:`mlpdesign.kernels.nearest` with its bounds; ``eps``: the proven bound on
  the rounding of any computed D²; ``n``: the whole pool; ``n_atoms``: per local candidate.
* ``condition()`` adds the given set; ``pick(s)`` adds candidate ``s`` to the design on
  every rank and returns its Psi before; ``psi_of(s)``: Psi of ``s`` on every rank.
* ``best(values, tie, floor, members)``: the next pick by the tie rule below;
  ``count_above(values, x)``; ``extreme()``: the candidate farthest from candidate 0.
* the kernel-block API for criteria: ``query(s)`` (candidate ``s``'s rows, on every rank),
  ``d2_local(q, idx)`` and ``k_local(q, idx)`` (D² and k between ``q`` and local
  candidates ``idx``, 0-based from ``lo``).

Criterion (:class:`Criterion`; :class:`MaxMin`, :class:`Random`):

* what it keeps per candidate: set up in ``start(space)`` (after the given set is in);
* how it picks: ``values(space)`` (local scores, maximised; ``floor``: a candidate whose
  value is not above it is a duplicate, never picked; ``tie``) through ``next(space,
  strata)`` (default: the best value, stratum by stratum), or its own ``next``;
* how it updates on a pick: ``update(space, s)``, after ``s`` joined the space's design;
* what exact bound lets it skip work: max-min's three bounds live in the space's Psi
  tracker; a criterion with its own per-candidate values may keep upper bounds of them
  and re-evaluate only candidates whose bound can still win (a lazy greedy).

**Ties.** Values within ``tie`` of the largest are equal; the lowest index wins. For Psi,
``tie = 2 eps`` (:func:`tie_window`): every computed Psi is within ``eps`` of its exact
value, so two computed values closer than ``2 eps`` cannot be ordered, and different exact
paths (the textbook loop, the bounded one, blocks, ranks) sum in different orders. With
this rule they agree. With float32 rows the window is that of float64 arithmetic.
Under MPI: one allreduce for the maximum, one for the lowest index within the tie.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.blocks import Comm, PoolShard
from mlpdesign.kernels.core import KernelData, Query
from mlpdesign.kernels.nearest import PICKED, MaxMinState, StreamedState, pool_eps


@dataclass
class Design:
    """An ordered design: pool positions ``index``, Psi at pick time, and run statistics."""

    index: np.ndarray
    psi: np.ndarray
    stopped_early: bool = False
    n_requested: int = 0
    evaluated: int = 0  # configs whose D² to a new point was computed
    n_pool: int = 0
    first: str = ""
    stats: dict = field(default_factory=dict)

    @property
    def rows_per_pick(self) -> float:
        """Average fraction of the pool evaluated per added design point."""
        adds = max(1, self.stats.get("adds", len(self.index)))
        return self.evaluated / adds / max(1, self.n_pool)


def tie_window(eps: float, dtype) -> float:
    """Values closer than this are ties: ``2 eps``, with ``eps`` scaled to float64 rounding
    when the rows are float32 (whose proven bound, ~1e-5, would tie distinct candidates)."""
    return 2.0 * eps * float(np.finfo(np.float64).eps / np.finfo(dtype).eps)


def tie_argmax(values: np.ndarray, tie: float) -> int:
    """Position of the first value within ``tie`` of the largest (the tie rule)."""
    m = values[int(np.argmax(values))]
    return int(np.argmax(values >= m - tie))


# ---------------------------------------------------------------------------- strata


class Strata:
    """Quotas of a stratified (sliced) design: one label per candidate.

    Pick k goes to the stratum furthest behind its share of the pool (largest
    ``(k + 1) * pool_h - picks_h * N``, exact integers; ties: the first label in sorted
    order; ``share="equal"``: every stratum the same share), and within it to the
    criterion's best candidate. Psi still counts every
    design point, so distances across strata condition the design as before. Every prefix
    keeps each stratum within one pick of its share. A stratum with no candidate left
    above the floor is dropped. The first pick of an unconditional design is not
    constrained; it counts.
    """

    def __init__(self, labels, share: str = "pool") -> None:
        if share not in ("pool", "equal"):
            raise MlpdesignError(f"--strata-share must be pool or equal, got {share!r}")
        labels = np.asarray(labels)
        self.names, code = np.unique(labels, return_inverse=True)
        self.code = code.astype(np.int64)
        self.members = [np.flatnonzero(self.code == h) for h in range(len(self.names))]
        self.pool = np.array([len(m) for m in self.members], dtype=np.int64)
        if share == "equal":  # the same share for every stratum, whatever its size
            self.pool = np.ones(len(self.names), dtype=np.int64)
        self.picks = np.zeros(len(self.names), dtype=np.int64)
        self.open = np.ones(len(self.names), dtype=bool)

    def order(self) -> list[int]:
        """Open strata, the one the next pick should come from first."""
        k, n = int(self.picks.sum()), int(self.pool.sum())
        deficit = (k + 1) * self.pool - self.picks * n
        return [int(h) for h in np.argsort(-deficit, kind="stable") if self.open[h]]

    def take(self, i: int) -> None:
        self.picks[self.code[i]] += 1

    def counts(self) -> dict:
        """Picks per stratum label."""
        return {_label(x): int(c) for x, c in zip(self.names, self.picks, strict=True)}


def _label(x) -> str:
    return (x.decode() if isinstance(x, bytes) else str(x)) or "?"


def make_strata(labels, n: int) -> Strata | None:
    """:class:`Strata` of ``labels`` (None: a plain design)."""
    if labels is None:
        return None
    if len(labels) != n:
        raise MlpdesignError(f"{len(labels)} stratum labels for a pool of {n} candidates")
    return Strata(labels)


def strata_stats(stats: dict, st: Strata | None) -> dict:
    """``stats`` with the picks per stratum, for a stratified design."""
    if st is not None:
        stats["strata"] = st.counts()
    return stats


def warn_stopped(k: int, n: int) -> None:
    """The warning of a design that ran out of candidates above the floor."""
    warnings.warn(
        f"stopped after {k} of {n} picks: every remaining candidate duplicates "
        "the design (Psi = 0)",
        RuntimeWarning,
        stacklevel=3,
    )


def left_msg(n: int, n_pool: int, left: int) -> str:
    return (
        f"-n {n} is larger than the pool less the given set ({left} of {n_pool} "
        f"candidates are not duplicates of the given set)"
    )


# ---------------------------------------------------------------------------- spaces


class MemorySpace:
    """The pool as one :class:`KernelData` in memory (and a given set)."""

    lo = 0

    def __init__(self, kd: KernelData, given: KernelData | None = None) -> None:
        self.kd, self.given = kd, given
        self.st = MaxMinState(kd, given)
        self.n = self.hi = kd.n
        self.eps = self.st.eps
        self.tie = tie_window(self.eps, kd.terms[0].rows.dtype)
        self.psi = self.st.psi
        self.n_atoms = kd.n_atoms
        self._costly0 = kd.costly_evaluated

    def condition(self) -> None:
        for j in range(self.given.n if self.given is not None else 0):
            self.st.add_given(j)

    def psi_of(self, s: int) -> float:
        return float(self.psi[s])

    def pick(self, s: int) -> float:
        psi_s = float(self.psi[s])
        self.st.add_pool(s)
        return psi_s

    def best(self, values, tie: float, floor: float, members=None) -> int | None:
        v = values if members is None else values[members]
        j = tie_argmax(v, tie)
        if not v[j] > floor:
            return None
        return j if members is None else int(members[j])

    def count_above(self, values, x: float) -> int:
        return int(np.count_nonzero(values > x))

    def extreme(self) -> int:
        d = self.kd.d2_row(0)
        d[self.psi < 0] = -np.inf  # left out (--max-atoms)
        return tie_argmax(d, self.tie)

    def forbid(self, mask: np.ndarray) -> None:
        """Leave out the candidates where ``mask`` (whole pool) is set: never picked."""
        self.psi[np.asarray(mask, dtype=bool)] = PICKED

    def query(self, s: int) -> Query:
        return self.kd.query(s)

    def d2_local(self, q: Query, idx) -> np.ndarray:
        return self.kd.d2_subset(q, idx)

    def k_local(self, q: Query, idx) -> np.ndarray:
        return self.kd.k_subset(q, idx)

    def evaluated(self) -> int:
        return self.st.evaluated

    def stats(self) -> dict:
        return {
            "adds": self.st.adds,
            "eps": self.eps,
            "centres_evaluated": self.st.centres_evaluated,
            "costly_evaluated": self.kd.costly_evaluated - self._costly0,
        }


class ShardSpace:
    """This rank's shard of the pool (:class:`PoolShard`); every call is collective."""

    def __init__(self, shard: PoolShard, eps: float, given: KernelData | None = None) -> None:
        self.shard, self.c, self.given = shard, shard.c, given
        self.st = StreamedState(shard, eps)
        self.n, self.lo, self.hi = shard.n, shard.c0, shard.c1
        self.eps = eps
        self.tie = tie_window(eps, shard.ref.terms[0].rows.dtype)
        self.psi = self.st.psi
        self._fetched: tuple | None = None
        self._n_atoms = None

    @property
    def n_atoms(self) -> np.ndarray:
        if self._n_atoms is None:
            sh = self.shard
            parts = [sh.block(i).n_atoms for i in range(len(sh.blocks))]
            self._n_atoms = np.concatenate(parts) if parts else np.zeros(0)
        return self._n_atoms

    def condition(self) -> None:
        for j in range(self.given.n if self.given is not None else 0):
            self.st.add(self.given.query(j))

    def _fetch(self, s: int) -> tuple[float, Query]:
        if self._fetched is None or self._fetched[0] != s:
            self._fetched = (s, *self.st.fetch(s))
        return self._fetched[1], self._fetched[2]

    def psi_of(self, s: int) -> float:
        return self._fetch(s)[0]

    def pick(self, s: int) -> float:
        psi_s, q = self._fetch(s)
        self._fetched = None
        self.st.exclude(s)
        self.st.add(q)
        return psi_s

    def _local(self, members) -> np.ndarray | None:
        if members is None:
            return None
        lo, hi = np.searchsorted(members, [self.lo, self.hi])
        return members[lo:hi] - self.lo

    def best(self, values, tie: float, floor: float, members=None) -> int | None:
        local = self._local(members)
        v = values if local is None else values[local]
        top = float(self.c.max(float(v.max()) if len(v) else -math.inf))
        if not top > floor:
            return None
        hit = np.flatnonzero(v >= top - tie)
        mine = self.n
        if len(hit):
            mine = self.lo + int(hit[0] if local is None else local[hit[0]])
        return int(self.c.min(mine))

    def count_above(self, values, x: float) -> int:
        return int(self.c.sum(int(np.count_nonzero(values > x))))

    def extreme(self) -> int:
        q0 = self.query(0)
        sh = self.shard
        parts = []
        for i in range(len(sh.blocks)):
            kd = sh.block(i)
            parts.append(kd.d2_range(q0, 0, kd.n))
        d = np.concatenate(parts) if parts else np.zeros(0)
        d[self.psi < 0] = -np.inf  # left out (--max-atoms)
        return int(self.best(d, self.tie, -math.inf))

    def forbid(self, mask: np.ndarray) -> None:
        """Leave out the candidates where ``mask`` (whole pool) is set: never picked."""
        self.psi[np.asarray(mask, dtype=bool)[self.lo : self.hi]] = PICKED

    def query(self, s: int) -> Query:
        return self._fetch(s)[1]

    def _block_of(self, idx) -> list[tuple[KernelData, np.ndarray, np.ndarray]]:
        sh, idx = self.shard, np.asarray(idx, dtype=np.int64)
        out = []
        for i in range(len(sh.blocks)):
            a, b = sh.local_range(i)
            sel = np.flatnonzero((idx >= a) & (idx < b))
            if len(sel):
                out.append((sh.block(i), sel, idx[sel] - a))
        return out

    def _gather(self, fn: str, q: Query, idx) -> np.ndarray:
        out = np.empty(len(idx))
        for kd, sel, rel in self._block_of(idx):
            out[sel] = getattr(kd, fn)(q, rel)
        return out

    def d2_local(self, q: Query, idx) -> np.ndarray:
        return self._gather("d2_subset", q, idx)

    def k_local(self, q: Query, idx) -> np.ndarray:
        return self._gather("k_subset", q, idx)

    def evaluated(self) -> int:
        return int(self.c.sum(self.st.evaluated))

    def stats(self) -> dict:
        sh, c = self.shard, self.c
        stats = dict(sh.stats)
        for key in ("bytes_read", "blocks_read", "cache_hits", "blocks_skipped"):
            stats[key] = int(c.sum(stats[key]))
        stats["peak_cache_bytes"] = int(max(c.allgather(stats["peak_cache_bytes"])))
        stats.update(adds=self.st.adds, eps=self.eps, costly_evaluated=int(c.sum(self.st.costly)))
        return stats


# ---------------------------------------------------------------------------- criteria


class Criterion:
    """A greedy criterion; see the module docstring for the protocol. Subclasses set
    ``name`` and implement ``values`` (or their own ``next``)."""

    name = ""
    #: the first pick of an unconditional design follows ``--first`` (else: ``next``)
    uses_first = True
    #: the design may be stratified
    stratified = True
    floor = 0.0
    tie = 0.0

    @classmethod
    def from_options(cls, seed: int = 1, **options) -> Criterion:
        """An instance from the stage's options (``seed``; ``jitter`` for maxent, ...)."""
        return cls()

    def start(self, space) -> None:
        """Per-candidate state, once the given set is in the space."""
        self.floor, self.tie = space.eps, space.tie

    def values(self, space) -> np.ndarray:
        raise NotImplementedError(f"criterion {self.name!r} defines neither values nor next")

    def next(self, space, strata: Strata | None) -> int | None:
        """The next pick, stratum by stratum; None when every candidate is at the floor."""
        vals = self.values(space)
        if strata is None:
            return space.best(vals, self.tie, self.floor)
        for h in strata.order():
            s = space.best(vals, self.tie, self.floor, strata.members[h])
            if s is not None:
                return s
            strata.open[h] = False
        return None

    def update(self, space, s: int) -> None:
        """After candidate ``s`` joined the space's design."""

    def label(self, psi: float) -> str:
        return f"psi={psi:.4g}"

    #: what a budget (``--until-psi``) is measured in
    budget_name = "psi"

    def budget_value(self, psi: float) -> float:
        """The value of the pick just made that a budget compares (its Psi at pick time)."""
        return psi


class MaxMin(Criterion):
    """Greedy conditional max-min (paper fig. 2): the largest Psi. Its exact bounds are
    those of the space's Psi tracker (:mod:`mlpdesign.kernels.nearest`)."""

    name = "maxmin"

    def values(self, space) -> np.ndarray:
        return space.psi


class Random(Criterion):
    """The 'representative' baseline: candidates in a seeded random order (any prefix is
    the same draw), skipping duplicates of the given set; Psi is recorded as for max-min."""

    name = "random"
    uses_first = False
    stratified = False

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed

    @classmethod
    def from_options(cls, seed: int = 1, **options) -> Random:
        return cls(seed)

    def start(self, space) -> None:
        super().start(space)
        self.order = np.random.default_rng(self.seed).permutation(space.n)
        self.pos = 0
        self.conditional = space.given is not None

    def next(self, space, strata) -> int | None:
        while self.pos < len(self.order):
            s = int(self.order[self.pos])
            self.pos += 1
            psi = space.psi_of(s)
            if psi >= 0 and not (self.conditional and psi <= space.eps):
                return s  # not left out, not a duplicate of the given set
        return None


#: criteria by name; ``maxent`` (:mod:`mlpdesign.select.maxent`) registers itself here
#: when the select package is imported
CRITERIA: dict[str, type] = {"maxmin": MaxMin, "random": Random}


def criterion(name_or_obj, seed: int = 1, **options) -> Criterion:
    """A criterion instance from its name (``maxmin``, ``random``, ``maxent``) or itself;
    ``options`` (e.g. ``jitter``) go to the class's ``from_options``."""
    if isinstance(name_or_obj, Criterion):
        return name_or_obj
    if name_or_obj not in CRITERIA:
        raise MlpdesignError(f"unknown criterion {name_or_obj!r} ({', '.join(sorted(CRITERIA))})")
    return CRITERIA[name_or_obj].from_options(seed=seed, **options)


# ---------------------------------------------------------------------------- the loop


def first_pick(n: int, extreme, first, seed: int) -> tuple[int, str]:
    """The first pick of an unconditional design of a pool of ``n``, and how it was chosen:
    ``first`` None or ``"extreme"`` (``extreme()``: the candidate farthest from candidate
    0), ``"random"`` (drawn with ``seed``), or a position."""
    if first is None or first == "extreme":
        return extreme(), "extreme"
    if first == "random":
        return int(np.random.default_rng(seed).integers(n)), "random"
    i = int(first)
    if not 0 <= i < n:
        raise MlpdesignError(f"first candidate {i} is outside the pool (0..{n - 1})")
    return i, str(i)


def check_design_size(n_pool: int, n: int) -> None:
    """Refuse an empty pool, or a design of ``n`` picks that a pool of ``n_pool`` cannot give."""
    if n_pool == 0:
        raise MlpdesignError("the pool is empty")
    if n < 1:
        raise MlpdesignError(f"-n must be at least 1, got {n}")
    if n > n_pool:
        raise MlpdesignError(f"-n {n} is larger than the pool ({n_pool} candidates)")


def _start(space, crit: Criterion, n: int, left_out=None) -> None:
    check_design_size(space.n, n)
    if left_out is not None:
        left_out = np.asarray(left_out, dtype=bool)
        if n > space.n - int(left_out.sum()):
            raise MlpdesignError(
                f"-n {n} is larger than the {space.n - int(left_out.sum())} candidates "
                "left after --max-atoms"
            )
        space.forbid(left_out)
    space.condition()
    if space.given is not None:
        left = space.count_above(space.psi, space.eps)
        if n > left:
            raise MlpdesignError(left_msg(n, space.n, left))
    crit.start(space)


def greedy(
    space,
    crit: Criterion,
    n: int,
    *,
    first=None,
    seed: int = 1,
    strata=None,
    progress=None,
    until: float | None = None,
    left_out=None,
) -> Design:
    """``n`` picks of criterion ``crit`` over ``space`` (conditional on its given set).

    ``first``: see :func:`first_pick`; ``strata``: a label per candidate, or a
    :class:`Strata`;
    ``progress``: an object with ``update(k)`` and ``set_postfix_str(s)``; ``until``: a
    budget, stop before the first pick whose :meth:`Criterion.budget_value` (Psi; σ² for
    MaxEnt) would fall below it (``n``: the most);
    ``left_out``: a mask over the pool of candidates never to pick (``--max-atoms``).
    """
    _start(space, crit, n, left_out)
    quota = strata if isinstance(strata, Strata) else make_strata(strata, space.n)
    if quota is not None and len(quota.code) != space.n:
        raise MlpdesignError(f"{len(quota.code)} stratum labels for a pool of {space.n}")
    conditional = space.given is not None
    S, P, budget = [], [], False
    how = "conditional" if crit.uses_first else crit.name
    while len(S) < n:
        if not S and crit.uses_first and (not conditional or first is not None):
            s, how = first_pick(space.n, space.extreme, first, seed)
            if left_out is not None and space.psi_of(s) < 0:
                raise MlpdesignError(f"first candidate {s} is left out by --max-atoms")
            if conditional and space.psi_of(s) <= space.eps:
                raise MlpdesignError(f"first candidate {s} duplicates the given set")
        else:
            s = crit.next(space, quota)
            if s is None:
                break
        P.append(space.pick(s))
        S.append(s)
        if quota is not None:
            quota.take(s)
        crit.update(space, s)
        if until is not None and crit.budget_value(P[-1]) < until:  # not taken after all
            budget = True
            S.pop(), P.pop()
            if quota is not None:
                quota.picks[quota.code[s]] -= 1
            break
        if progress is not None:
            progress.set_postfix_str(crit.label(P[-1]), refresh=False)
            progress.update(1)
    if len(S) < n and not budget:
        warn_stopped(len(S), n)
    stats = strata_stats(space.stats(), quota)
    if until is not None:
        stats.update(until=float(until), until_what=crit.budget_name, stopped_by_budget=budget)
    idx, psi = np.array(S, dtype=np.int64), np.array(P, dtype=np.float64)
    return Design(idx, psi, len(S) < n, n, space.evaluated(), space.n, how, stats)


def memory_space(kd: KernelData, given: KernelData | None = None) -> MemorySpace:
    """A :class:`MemorySpace`, after checking that ``given`` uses ``kd``'s kernel."""
    if given is not None:
        kd.compatible(given)
    return MemorySpace(kd, given)


__all__ = [
    "check_design_size",
    "CRITERIA",
    "PICKED",
    "Comm",
    "Criterion",
    "Design",
    "MaxMin",
    "MemorySpace",
    "Random",
    "ShardSpace",
    "Strata",
    "criterion",
    "first_pick",
    "greedy",
    "memory_space",
    "pool_eps",
    "tie_argmax",
]
