"""Greedy conditional max-min design on the kernel distance (paper fig. 2, appendix B).

Psi_i is the min squared kernel distance D² of candidate i to the design (and to a given
set); each step picks argmax Psi (ties: :func:`mlpdesign.select.engine.tie_argmax`, Psi
within 2 eps of the largest, lowest index) and lowers Psi with the distances to the new
point. Any prefix of the result is itself a max-min design.

* :func:`maxmin_reference`: the textbook loop of appendix B, one full kernel row per pick,
  kept deliberately plain as the reference the engine is tested against.
* :func:`maxmin` and :func:`select_random`: the library calls for a KernelData in memory;
  both run :func:`mlpdesign.select.engine.greedy` (the loop, written once) with the
  :class:`~mlpdesign.select.engine.MaxMin` or :class:`~mlpdesign.select.engine.Random`
  criterion. The exact bounds that skip rows are in :mod:`mlpdesign.kernels.nearest`.
* :func:`given_kernel`, :func:`strata_labels`, :func:`selection_attrs`: the store side of
  ``select`` (:func:`mlpdesign.select.run` is the stage's front door).

``first``: ``None`` (the candidate farthest from candidate 0, one kernel row),
an index (0-based position in the pool), or ``"random"`` (drawn with ``seed``).
``given``: a :class:`~mlpdesign.kernels.core.KernelData` of an existing training set made with
the same kernel (``StoreKernel(given_store, like=pool_kd)``).
"""

from __future__ import annotations

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.selection import Selection, load_selection  # noqa: F401  (re-exported)
from mlpdesign.kernels.core import KernelData
from mlpdesign.kernels.nearest import PICKED, MaxMinState, pool_eps  # noqa: F401
from mlpdesign.select.engine import (  # noqa: F401  (re-exported)
    Design,
    MaxMin,
    Random,
    Strata,
    first_pick,
    greedy,
    left_msg,
    make_strata,
    memory_space,
    strata_stats,
    tie_argmax,
    tie_window,
    warn_stopped,
)

# ---------------------------------------------------------------------------- reference


def _reference_next(psi: np.ndarray, tie: float, eps: float, quota: Strata | None):
    if quota is None:
        s = tie_argmax(psi, tie)
        return s if psi[s] > eps else None
    for h in quota.order():
        m = quota.members[h]
        j = tie_argmax(psi[m], tie)
        if psi[m[j]] > eps:
            return int(m[j])
        quota.open[h] = False
    return None


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

    One full kernel row per pick; kept as the reference the engine is tested against.
    ``strata``: a label per candidate for a stratified design (:class:`Strata`).
    """
    if not 1 <= n <= kd.n:
        raise MlpdesignError(f"-n {n} is outside 1..{kd.n}")
    eps = pool_eps(kd, given)
    tie = tie_window(eps, kd.terms[0].rows.dtype)
    psi = np.full(kd.n, np.inf)
    for j in range(given.n if given is not None else 0):
        psi = np.minimum(psi, kd.d2_range(given.query(j), 0, kd.n))
    if given is not None and n > int(np.count_nonzero(psi > eps)):
        raise MlpdesignError(left_msg(n, kd.n, int(np.count_nonzero(psi > eps))))
    quota = make_strata(strata, kd.n)
    S, P, how = [], [], "conditional"
    while len(S) < n:
        if not S and (given is None or first is not None):
            s, how = first_pick(kd.n, lambda: tie_argmax(kd.d2_row(0), tie), first, seed)
        else:
            s = _reference_next(psi, tie, eps, quota)
            if s is None:
                warn_stopped(len(S), n)
                break
        S.append(s)
        P.append(psi[s])
        if quota is not None:
            quota.take(s)
        psi = np.minimum(psi, kd.d2_row(s))
        psi[S] = PICKED
    evaluated = kd.n * (len(S) + (given.n if given is not None else 0))
    idx, P = np.array(S, dtype=np.int64), np.array(P, dtype=np.float64)
    return Design(idx, P, len(S) < n, n, evaluated, kd.n, how, strata_stats({}, quota))


# ---------------------------------------------------------------------------- library calls


def maxmin(kd: KernelData, n: int, *, progress=None, **options) -> Design:
    """Greedy max-min on a KernelData in memory: the picks of :func:`maxmin_reference`.

    ``options``: ``first``, ``seed``, ``given`` and ``strata`` as for the reference (a label
    per candidate for a stratified design, :class:`Strata`). ``progress``: an object with
    ``update(k)`` and ``set_postfix_str(s)`` (see :func:`mlpdesign.progress.progress`).
    """
    space = memory_space(kd, options.pop("given", None))
    return greedy(space, MaxMin(), n, progress=progress, **options)


def select_random(
    kd: KernelData, n: int, *, seed: int = 1, given: KernelData | None = None, progress=None
) -> Design:
    """The 'representative' baseline: candidates in a seeded random order (any prefix is
    the same draw), skipping duplicates of the given set; Psi is recorded as for max-min."""
    return greedy(memory_space(kd, given), Random(seed), n, seed=seed, progress=progress)


# ---------------------------------------------------------------------------- stores


def select_store(store_path, n: int, output, *, method: str = "maxmin", **kw):
    """:func:`mlpdesign.select.run` in memory, with ``method`` the criterion's name."""
    from mlpdesign.select.stage import run

    return run(store_path, n, output, criterion=method, **kw)
