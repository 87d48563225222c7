"""Greedy conditional max-min design on the kernel distance (paper fig. 2, appendix B).

Psi_i is the min squared kernel distance D² of candidate i to the design (and to a given
set); each step picks argmax Psi (ties: lowest index) and lowers Psi with the distances to
the new point. Any prefix of the result is itself a max-min design. Two implementations:

* :func:`maxmin_reference`: the textbook loop of appendix B, one full kernel row per pick.
* :func:`maxmin` (fast, exact): :class:`MaxMinState` keeps, for every candidate, its
  nearest design point ``n_i`` (``Psi_i = D²(i, n_i)``). D is a metric (the RKHS distance
  of a positive-definite kernel), so ``D(s, i) >= D(s, n_i) - D(n_i, i)``: a new point s
  cannot lower Psi_i when ``D²(s, n_i) >= 4 Psi_i + 5 eps``, with ``eps`` a provable bound
  on the rounding error of any computed D² (:attr:`mlpdesign.kernels.core.KernelData.eps`).
  Such candidates are skipped without evaluating their rows; a skipped row provably would
  not have changed Psi, so the picks are those of the full loop. Two more exact bounds cut
  the rest: whole cells (the candidates nearest to one design point) are ruled out from
  a table of lower bounds on the distances between design points, so D² from the new
  point to most design points is never computed; and for the candidates left, the cheap
  pair term is computed first and SOAP's term bounded by Cauchy-Schwarz
  (:meth:`mlpdesign.kernels.core.KernelData.d2_below`), so SOAP rows are read only where D²
  may come below Psi. D² is computed in fixed pieces on a thread pool
  (``MLPDESIGN_THREADS``), with the same bits for any number of threads.

Library API::

    maxmin(kd, n, *, first=None, seed=1, given=None, progress=None) -> Design
    maxmin_reference(kd, n, *, first=None, seed=1, given=None) -> Design
    select_random(kd, n, *, seed=1, given=None, progress=None) -> Design
    MaxMinState(kd, given=None): .psi, .add_pool(i), .add_given(j), .evaluated
    select_store(store_path, n, *, method, ..., output, ...) -> Selection   # the CLI's work
    load_selection(path) -> Selection      (re-exported from mlpdesign.io.selection)

``first``: ``None`` (the candidate farthest from candidate 0, one kernel row),
an index (0-based position in the pool), or ``"random"`` (drawn with ``seed``).
``given``: a :class:`~mlpdesign.kernels.core.KernelData` of an existing training set made with
the same kernel (``StoreKernel(given_store, like=pool_kd)``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.selection import Selection, load_selection  # noqa: F401  (re-exported)
from mlpdesign.kernels.core import KernelData

PICKED = -1.0
#: above this fraction of the pool, evaluate every row in place rather than gather the
#: candidates' rows (a gather copies them)
FULL_PASS = 0.3
#: design points with a table of lower bounds between them (CELL_CAP² float32 at most)
CELL_CAP = 4096
#: additions between recomputations of the cells' Psi bounds
REFRESH = 32


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


# ---------------------------------------------------------------------------- helpers


def _check(kd: KernelData, n: int, given: KernelData | None) -> None:
    if kd.n == 0:
        raise MlpdesignError("the pool is empty")
    if n < 1:
        raise MlpdesignError(f"-n must be at least 1, got {n}")
    if n > kd.n:
        raise MlpdesignError(f"-n {n} is larger than the pool ({kd.n} candidates)")
    if given is not None:
        kd.compatible(given)


def _eps(kd: KernelData, given: KernelData | None) -> float:
    return max(kd.eps, kd.eps_with(given)) if given is not None else kd.eps


def _first_index(kd: KernelData, first, seed: int) -> tuple[int, str]:
    """The first pick of an unconditional design, and how it was chosen."""
    if first is None or first == "extreme":
        d = kd.d2_row(0)
        return int(np.argmax(d)), "extreme"
    if first == "random":
        return int(np.random.default_rng(seed).integers(kd.n)), "random"
    i = int(first)
    if not 0 <= i < kd.n:
        raise MlpdesignError(f"first candidate {i} is outside the pool (0..{kd.n - 1})")
    return i, str(i)


def left_msg(n: int, n_pool: int, left: int) -> str:
    return (
        f"-n {n} is larger than the pool less the given set ({left} of {n_pool} "
        f"candidates are not duplicates of the given set)"
    )


def _check_left(st: MaxMinState, n: int) -> None:
    left = int(np.count_nonzero(st.psi > st.eps))
    if n > left:
        raise MlpdesignError(left_msg(n, st.kd.n, left))


def _warn_stop(k: int, n: int) -> None:
    warnings.warn(
        f"stopped after {k} of {n} picks: every remaining candidate duplicates "
        "the design (Psi = 0)",
        RuntimeWarning,
        stacklevel=3,
    )


class Strata:
    """Quotas of a stratified (sliced) max-min design: one label per candidate.

    Pick k goes to the stratum furthest behind its share of the pool (largest
    ``(k + 1) * pool_h - picks_h * N``, exact integers; ties: the first label in sorted
    order), and within it to the candidate of largest Psi. Psi still counts every design
    point, so distances across strata condition the design as before. Every prefix keeps
    each stratum within one pick of its share. A stratum with no candidate left above eps
    is dropped. The first pick of an unconditional design is not constrained; it counts.
    """

    def __init__(self, labels) -> None:
        labels = np.asarray(labels)
        self.names, code = np.unique(labels, return_inverse=True)
        self.code = code.astype(np.int64)
        self.members = [np.flatnonzero(self.code == h) for h in range(len(self.names))]
        self.pool = np.array([len(m) for m in self.members], dtype=np.int64)
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


def _argmax_psi(psi: np.ndarray, eps: float, strata: Strata | None) -> int | None:
    """The next max-min pick: argmax Psi (ties: lowest index), within the stratum whose
    turn it is; None when no candidate is left above eps."""
    if strata is None:
        s = int(np.argmax(psi))
        return s if psi[s] > eps else None
    for h in strata.order():
        m = strata.members[h]
        j = int(np.argmax(psi[m]))
        if psi[m[j]] > eps:
            return int(m[j])
        strata.open[h] = False
    return None


# ---------------------------------------------------------------------------- reference


def maxmin_reference(
    kd: KernelData,
    n: int,
    *,
    first=None,
    seed: int = 1,
    given: KernelData | None = None,
    strata=None,
) -> Design:
    """The textbook loop (appendix B): Psi = min(Psi, D²(new, all)); pick argmax Psi.

    One full kernel row per pick; kept as the reference the fast path is tested against.
    ``strata``: a label per candidate for a stratified design (:class:`Strata`).
    """
    _check(kd, n, given)
    eps = _eps(kd, given)
    psi = np.full(kd.n, np.inf)
    if given is not None:
        for j in range(given.n):
            psi = np.minimum(psi, kd.d2_range(given.query(j), 0, kd.n))
        left = int(np.count_nonzero(psi > eps))
        if n > left:
            raise MlpdesignError(left_msg(n, kd.n, left))
    quota = make_strata(strata, kd.n)
    S, P = [], []
    how = "conditional"
    stopped = False
    while len(S) < n:
        if not S and (given is None or first is not None):
            s, how = _first_index(kd, first, seed)
            if given is not None and psi[s] <= eps:
                raise MlpdesignError(f"first candidate {s} duplicates the given set")
        else:
            s = _argmax_psi(psi, eps, quota)
            if s is None:
                stopped = True
                _warn_stop(len(S), n)
                break
        S.append(s)
        P.append(psi[s])
        if quota is not None:
            quota.take(s)
        psi = np.minimum(psi, kd.d2_row(s))
        psi[S] = PICKED
    return Design(
        np.array(S, dtype=np.int64),
        np.array(P, dtype=np.float64),
        stopped,
        n,
        kd.n * (len(S) + (given.n if given is not None else 0)),
        kd.n,
        how,
        strata_stats({}, quota),
    )


def make_strata(labels, n: int) -> Strata | None:
    if labels is None:
        return None
    if len(labels) != n:
        raise MlpdesignError(f"{len(labels)} stratum labels for a pool of {n} candidates")
    return Strata(labels)


def strata_stats(stats: dict, st: Strata | None) -> dict:
    if st is not None:
        stats["strata"] = st.counts()
    return stats


# ---------------------------------------------------------------------------- fast path


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
        self.eps = _eps(kd, given)
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


def maxmin(
    kd: KernelData,
    n: int,
    *,
    first=None,
    seed: int = 1,
    given: KernelData | None = None,
    strata=None,
    progress=None,
) -> Design:
    """Fast exact greedy max-min: the picks of :func:`maxmin_reference`.

    ``strata``: a label per candidate for a stratified design (:class:`Strata`).

    ``progress``: an object with ``update(k)`` and ``set_postfix_str(s)`` (see
    :func:`mlpdesign.progress.progress`).
    """
    _check(kd, n, given)
    costly0 = kd.costly_evaluated
    st = MaxMinState(kd, given)
    if given is not None:
        for j in range(given.n):
            st.add_given(j)
        _check_left(st, n)
    quota = make_strata(strata, kd.n)
    S, P = [], []
    how = "conditional"
    stopped = False
    while len(S) < n:
        if not S and (given is None or first is not None):
            s, how = _first_index(kd, first, seed)
            if given is not None and st.psi[s] <= st.eps:
                raise MlpdesignError(f"first candidate {s} duplicates the given set")
        else:
            s = _argmax_psi(st.psi, st.eps, quota)
            if s is None:
                stopped = True
                _warn_stop(len(S), n)
                break
        S.append(s)
        P.append(float(st.psi[s]))
        if quota is not None:
            quota.take(s)
        st.add_pool(s)
        if progress is not None:
            progress.set_postfix_str(f"psi={P[-1]:.4g}", refresh=False)
            progress.update(1)
    return Design(
        np.array(S, dtype=np.int64),
        np.array(P, dtype=np.float64),
        stopped,
        n,
        st.evaluated,
        kd.n,
        how,
        strata_stats(
            {
                "adds": st.adds,
                "eps": st.eps,
                "centres_evaluated": st.centres_evaluated,
                "costly_evaluated": kd.costly_evaluated - costly0,
            },
            quota,
        ),
    )


def select_random(
    kd: KernelData, n: int, *, seed: int = 1, given: KernelData | None = None, progress=None
) -> Design:
    """The 'representative' baseline: candidates in a seeded random order (any prefix is
    the same draw), skipping duplicates of the given set; Psi is recorded as for max-min."""
    _check(kd, n, given)
    st = MaxMinState(kd, given)
    if given is not None:
        for j in range(given.n):
            st.add_given(j)
        _check_left(st, n)
    order = np.random.default_rng(seed).permutation(kd.n)
    S, P = [], []
    stopped = False
    for s in order:
        if len(S) == n:
            break
        s = int(s)
        if given is not None and st.psi[s] <= st.eps:
            continue
        S.append(s)
        P.append(float(st.psi[s]))
        st.add_pool(s)
        if progress is not None:
            progress.update(1)
    if len(S) < n:
        stopped = True
        _warn_stop(len(S), n)
    return Design(
        np.array(S, dtype=np.int64),
        np.array(P, dtype=np.float64),
        stopped,
        n,
        st.evaluated,
        kd.n,
        "random",
        {"adds": st.adds, "eps": st.eps},
    )


# ---------------------------------------------------------------------------- stores


def _same_kernel_specs(a, b) -> bool:
    return [(s.name, s.descriptor, s.kernel) for s in a] == [
        (s.name, s.descriptor, s.kernel) for s in b
    ]


def given_kernel(path, store, kd: KernelData, tmpdir: str, progress_factory=None):
    """A KernelData for ``--given``: a store (same gap string) or an extxyz described now."""
    from pathlib import Path

    from mlpdesign.io.atomic import file_sha256, require_file
    from mlpdesign.io.store import open_store
    from mlpdesign.kernels.core import StoreKernel

    p = require_file(path, "given set")
    with open(p, "rb") as f:
        is_h5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
    if is_h5:
        gstore = open_store(p)
    else:
        from mlpdesign.describe.runner import describe

        out = Path(tmpdir) / "given.h5"
        describe(p, out, gap=store.gap, progress=progress_factory)
        gstore = open_store(out)
    with gstore:
        if not _same_kernel_specs(gstore.descriptors, store.descriptors):
            raise MlpdesignError(
                f"{p}: described with another gap string than the pool store "
                f"({gstore.gap!r} vs {store.gap!r}); describe it with the "
                "pool's --gap, or pass the extxyz"
            )
        if gstore.n_configs == 0:
            raise MlpdesignError(f"{p}: the given set holds no configurations")
        gk = StoreKernel(gstore, **{k: v for k, v in kd.options.items()}, like=kd)
    info = {
        "path": str(path),
        "sha256": file_sha256(p),
        "n_configs": gk.n,
        "kind": "store" if is_h5 else "extxyz",
    }
    return gk, info


def select_store(
    store_path,
    n: int,
    output,
    *,
    method: str = "maxmin",
    given=None,
    continue_from=None,
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
    progress_factory=None,
) -> tuple[Selection, Design]:
    """Select ``n`` candidates of a descriptor store and write the selection file.

    ``method``: ``"maxmin"`` or ``"random"``. ``given``: path of an existing training set
    (a store described with the same gap string, or an extxyz described here).
    ``continue_from``: a saved selection of this store; the run is extended to ``n``
    picks with its method, options and seed, and must reproduce it as its prefix.
    ``first``: None (extreme), a candidate_id, or ``"random"``. ``stratify``: a stratified
    max-min design over the pool's ``structure`` labels (:class:`Strata`; max-min only);
    None (default): stratified when the pool has two or more labels.
    ``progress_factory(total, desc)`` makes a progress object. Returns (Selection, Design).
    """
    import tempfile

    from mlpdesign.io.atomic import check_output
    from mlpdesign.io.selection import write_selection
    from mlpdesign.io.store import open_store
    from mlpdesign.kernels.core import StoreKernel

    check_output(output, force)
    if method not in ("maxmin", "random"):
        raise MlpdesignError(f"unknown method {method!r} (maxmin or random)")
    prev = None
    if continue_from is not None:
        prev = load_selection(continue_from)
        kern = prev.attrs.get("kernel") or "{}"
        try:
            kern = json.loads(kern) if isinstance(kern, str) else dict(kern)
        except json.JSONDecodeError:
            raise MlpdesignError(f"{continue_from}: unreadable kernel attribute") from None
        method = prev.method or method
        seed = int(prev.attrs.get("seed", seed))
        f = str(prev.attrs.get("first", ""))
        first = (
            None
            if f in ("", "extreme", "conditional")
            else ("random" if f == "random" else int(f.split(":")[-1]))
        )
        normalize = bool(kern.get("normalize", normalize))
        per_atom = bool(kern.get("per_atom", per_atom))
        balance = bool(kern.get("balance", balance))
        dtype = str(kern.get("dtype", dtype))
        stratify = bool(prev.attrs.get("stratify", ""))  # files without it: plain
        if n < prev.n:
            raise MlpdesignError(
                f"-n {n} is smaller than the {prev.n} picks of "
                f"{continue_from}; take a prefix instead"
            )
    with open_store(store_path) as store:
        if store.n_configs == 0:
            raise MlpdesignError(f"{store_path}: the pool is empty")
        if prev is not None and prev.pool_sha256 != store.pool_sha256:
            raise MlpdesignError(
                f"{continue_from} was made for another pool than "
                f"{store_path} (pool checksums differ)"
            )
        if prev is not None and prev.attrs.get("gap", store.gap) != store.gap:
            raise MlpdesignError(f"{continue_from} was made with another gap string")
        if n > store.n_configs:
            raise MlpdesignError(f"-n {n} is larger than the pool ({store.n_configs} candidates)")
        cids = np.asarray(store.candidate_id)
        first_idx = first
        if first not in (None, "random"):
            hit = np.flatnonzero(cids == int(first))
            if len(hit) == 0:
                raise MlpdesignError(
                    f"--first {first}: no candidate with that candidate_id in {store_path}"
                )
            first_idx = int(hit[0])
        labels = strata_labels(store, store_path, stratify) if method == "maxmin" else None
        kd = StoreKernel(
            store, normalize=normalize, per_atom=per_atom, balance=balance, dtype=dtype
        )
        given_info = []
        gk = None
        with tempfile.TemporaryDirectory(prefix="mlpdesign-given-") as tmpdir:
            if given is not None:
                gk, info = given_kernel(given, store, kd, tmpdir)
                given_info.append(info)
        if prev is not None:
            saved = json.loads(prev.attrs.get("given") or "[]")
            if [g.get("sha256") for g in saved] != [g["sha256"] for g in given_info]:
                raise MlpdesignError(
                    f"{continue_from} was made with --given "
                    f"{[g.get('path') for g in saved] or 'nothing'}; pass the "
                    "same --given to continue it"
                )
        bar = progress_factory(n, "select") if progress_factory is not None else None
        try:
            if method == "random":
                design = select_random(kd, n, seed=seed, given=gk, progress=bar)
            else:
                design = maxmin(
                    kd, n, first=first_idx, seed=seed, given=gk, strata=labels, progress=bar
                )
        finally:
            if bar is not None:
                bar.close()
        if prev is not None:
            k = min(prev.n, len(design.index))
            if not np.array_equal(cids[design.index[:k]], prev.candidate_id[:k]) or k < prev.n:
                raise MlpdesignError(
                    f"{continue_from} is not reproduced by this store and "
                    "options (was it made from another store?)"
                )
        attrs = selection_attrs(
            store,
            store_path,
            kd,
            design,
            method=method,
            first=first,
            seed=seed,
            n=n,
            given=given_info,
            command=command,
            stratify=labels is not None,
        )
        sel = Selection(cids[design.index], design.index, design.psi, attrs)
    write_selection(output, sel, fmt, force)
    return sel, design


def strata_labels(store, store_path, stratify: bool | None = None) -> np.ndarray | None:
    """The pool's ``structure`` labels, the strata of ``select --stratify``, or None for a
    plain design (``stratify`` False; or None and fewer than two distinct labels)."""
    if stratify is False:
        return None
    labels = np.asarray(store.structure)
    named = labels[labels != labels[:0].dtype.type()]
    if stratify is None:
        return labels if len(np.unique(named)) >= 2 else None
    if len(named) == 0:
        raise MlpdesignError(
            f"{store_path}: the pool has no structure labels to stratify by "
            "(extxyz info key 'structure', as generate writes)"
        )
    return labels


def selection_attrs(
    store,
    store_path,
    kd: KernelData,
    design: Design,
    *,
    method,
    first,
    seed,
    n,
    given,
    command,
    stratify: bool = False,
) -> dict:
    """The attributes a selection file records: method, pool checksum, gap string, kernel
    (options and terms), seed, first pick, request, given sets, strata and command line."""
    how = design.first
    if first not in (None, "random") and method == "maxmin":
        how = f"candidate_id:{int(first)}"
    terms = [
        {
            "name": t.name,
            "kind": t.kind,
            "delta": t.delta,
            "zeta": t.zeta,
            "length": t.length,
            **({"embedding": t.meta} if t.meta else {}),
        }
        for t in kd.terms
    ]
    return {
        "method": method,
        "pool_sha256": store.pool_sha256,
        "store_path": str(store_path),
        "gap": store.gap,
        "kernel": {**kd.options, "terms": terms},
        "seed": int(seed),
        "first": how,
        "n_requested": int(n),
        "stopped_early": bool(design.stopped_early),
        "given": given,
        "distance": "D2",
        "command": command,
        **({"stratify": "structure", "strata": design.stats.get("strata", {})} if stratify else {}),
    }
