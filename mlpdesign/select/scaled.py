"""Greedy selection over a :class:`mlpdesign.kernels.blocks.PoolShard`: streamed and MPI runs."""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.blocks import (
    BLOCK_ROWS,
    Comm,
    DesignPoints,
    PoolShard,
    blas_one_thread,
    parse_memory,
    reference_kernel,
)
from mlpdesign.select.greedy import FULL_PASS, PICKED

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


def _open_given(c: Comm, ref, given, store):
    """The given set's KernelData (built on rank 0, sent to all) and its provenance."""
    import tempfile

    from mlpdesign.select.greedy import given_kernel

    def build():
        if c.rank != 0:
            return None
        with tempfile.TemporaryDirectory(prefix="mlpdesign-given-") as tmp:
            return given_kernel(given, store, ref, tmp)

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
    from mlpdesign.select.greedy import Design, left_msg, make_strata, strata_stats

    c = Comm(comm)
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
    with blas_one_thread(), contextlib.closing(shard):
        eps = shard.global_eps(gk)
        st = StreamedState(shard, eps)
        if gk is not None:
            for j in range(gk.n):
                st.add(gk.query(j))
            left = st.count_above(eps)
            if n > left:
                raise MlpdesignError(left_msg(n, store.n_configs, left))
        quota = make_strata(strata, store.n_configs)
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
    strata_stats(stats, quota)
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

    c = Comm(comm)
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
