"""``mlpdesign score``: how informative each candidate of a pool is given a training set, and
how redundant each training configuration is, before any reference energy is computed.

Per candidate x of the pool: Ψ (the smallest D² to the training set, max-min's measure),
σ²(x | T) = k(x,x) + λ − k_xT (K_TT + λI)⁻¹ k_Tx (MaxEnt's: how much adding x would raise
log det(K + λI), ``log σ²``), and its rank by σ² (0: the most informative; select's tie
rule: σ² within 2 eps of the largest left count as equal, the lowest index first;
duplicates of the training set, Ψ <= eps, rank last, as ``select`` never picks them).
Per training configuration t: its leave-one-out σ² given the others,
``1 / [(K_TT + λI)⁻¹]_tt`` (the "swap" value: small = redundant) and its nearest
neighbour in the set (position and D²). For the set: log det(K_TT + λI), the largest σ² in the pool
("can this set cover the pool?") and the fraction of candidates with σ² above a threshold.

The training set is frames of any format ASE reads (several files and globs: one set,
described here with the pool's gap string), a store described with the same gap string,
or a selection of this pool (its picks). ``test``: score the configurations of other files
(an MD trajectory, say; frames or a store, as for the training set) instead of the pool's.

The candidates (the pool, or the test set described into a temporary store) are select's
engine space over the store's fixed grid of blocks (:mod:`mlpdesign.score.sets`): every
block held in memory by default; with ``memory_limit`` those that fit stay cached and the
others are spilled and re-read; with ``comm`` each MPI rank scores its run of blocks and
rank 0 writes. Ψ is max-min's exact nearest-point tracking, σ² one kernel block and
triangular solve per block of candidates against the training set's Cholesky factor: no
N×N matrix, and bitwise the same scores for any memory limit and any number of ranks.

Library API::

    run(pool_store, train, output=None, *, jitter=1e-6, threshold=0.01, fmt=None,
        figure=None, force=False, normalize=True, per_atom=False, balance=False,
        dtype="float64", test=None, command="", memory_limit=None, comm=None,
        block_rows=None) -> Scores          # train, test: a path, a glob, or a list
    write_scores(path, scores, fmt=None, force=False)    # h5 (default), json, or xyz (--test)
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_path, check_output
from mlpdesign.io.frames import expand_inputs
from mlpdesign.io.store import open_store
from mlpdesign.kernels.blocks import Comm, parse_memory, reference_kernel
from mlpdesign.kernels.core import KernelData, all_cpus
from mlpdesign.kernels.linalg import solve_triangular
from mlpdesign.score.sets import (
    as_paths,
    candidate_space,
    gather,
    training_factor,
    training_set,
    variances,
)
from mlpdesign.select.maxent import DEFAULT_JITTER, check_jitter, one_blas_thread
from mlpdesign.select.stage import is_store

FORMAT = "mlpdesign-scores"
FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.01


@dataclass
class Scores:
    """Per candidate (pool order), per training configuration, and for the set."""

    candidate_id: np.ndarray
    psi: np.ndarray
    var: np.ndarray
    rank: np.ndarray
    train_id: np.ndarray  # candidate_id (a selection) or position in the file / store
    loo_var: np.ndarray
    nearest: np.ndarray  # position of the nearest other training configuration (-1: none)
    nearest_d2: np.ndarray
    attrs: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # blocks, bytes read, ... (not written)

    def top(self, n: int) -> np.ndarray:
        """Pool positions of the ``n`` most informative candidates (rank order)."""
        return np.argsort(self.rank, kind="stable")[:n]

    def summary(self) -> str:
        a = self.attrs
        return (
            f"training set of {a['n_train']}: log det(K + {a['jitter']:g} I) = "
            f"{a['logdet']:.6g}; largest σ² in the pool {a['max_var']:.4g}; "
            f"{100 * a['frac_above']:.1f}% of {a['n_pool']} candidates above σ² "
            f"{a['threshold']:g}"
        )


def _nearest(gk: KernelData) -> tuple[np.ndarray, np.ndarray]:
    """Nearest other training configuration of each, and its D²."""
    m = gk.n
    D = np.array(gk.d2_block(np.arange(m), np.arange(m)), dtype=np.float64).reshape(m, m)
    np.fill_diagonal(D, np.inf)
    if m < 2:
        return np.full(m, -1, dtype=np.int64), np.full(m, np.inf)
    j = np.argmin(D, axis=1)
    return j.astype(np.int64), D[np.arange(m), j]


@one_blas_thread
def _loo(factor) -> np.ndarray:
    """Leave-one-out σ² of each training configuration, ``1 / [(K+λI)⁻¹]_tt``, from the
    factor L of ``K + λI`` (as :func:`mlpdesign.select.maxent.loo_variances`)."""
    m = factor.m
    inv = solve_triangular(factor.L[:m, :m], np.eye(m), lower=True, check_finite=False)
    return 1.0 / np.einsum("ij,ij->j", inv, inv)


def tie_ranks(var: np.ndarray, dup: np.ndarray, tie: float) -> np.ndarray:
    """Rank of each candidate by σ² under select's tie rule: rank k goes to the lowest
    index among the candidates left whose σ² is within ``tie`` of the largest left (so
    rank 0 is the next ``select --criterion maxent`` pick); ``dup`` candidates (members
    of the training set) after all others, by the same rule."""
    import heapq

    n = len(var)
    rank = np.empty(n, dtype=np.int64)
    k = 0
    for group in (np.flatnonzero(~dup), np.flatnonzero(dup)):
        order = group[np.argsort(-var[group], kind="stable")]
        v = var[order]
        taken = np.zeros(len(order), dtype=bool)
        heap: list[tuple[int, int]] = []  # (index, sorted position) inside the window
        top = nxt = 0
        while k < n and top < len(order):
            while nxt < len(order) and v[nxt] >= v[top] - tie:  # the window only grows
                heapq.heappush(heap, (int(order[nxt]), nxt))
                nxt += 1
            i, j = heapq.heappop(heap)
            rank[i], taken[j] = k, True
            k += 1
            while top < len(order) and taken[top]:
                top += 1
    return rank


def compute(
    stack, store, train, opts: dict, jitter: float, threshold: float, test, engine: dict
) -> Scores:
    """The scores of ``store``'s pool, or of the configurations of ``test``, given
    ``train`` (the module docstring); ``engine``: ``limit``, ``comm``, ``block_rows`` as
    for select (all None: in memory). Collective under MPI; every rank gets the scores."""
    c = Comm(engine["comm"])
    kd = reference_kernel(store, opts, c)  # the whole store's centring and pair grid
    ts = training_set(c, train, store, kd)
    cands = c.agree(candidate_space, stack, c, store, kd, ts, test, opts, engine)
    space, cids, scored = cands.space, cands.ids, cands.scored
    if engine["comm"] is None:  # serial: D² on every CPU (one per MPI rank)
        stack.enter_context(all_cpus())
    c.agree(space.condition)  # Ψ: min D² to the training set, max-min's exact bounds
    psi = gather(c, space.psi.copy())
    factor = c.agree(training_factor, kd, ts.kd, jitter)
    var = gather(c, c.agree(variances, cands, factor, jitter))
    stats = space.stats()
    n = len(var)
    rank = tie_ranks(var, psi <= space.eps, space.tie)
    nearest, nearest_d2 = _nearest(ts.kd)
    attrs = {
        "pool_sha256": store.pool_sha256,
        "store_path": str(store.path),
        "gap": store.gap,
        "kernel": kd.options,
        "train": ts.info,
        "scored": scored,
        "jitter": float(jitter),
        "threshold": float(threshold),
        "logdet": factor.logdet(),
        "max_var": float(var.max()),
        "frac_above": float(np.mean(var > threshold)),
        "n_pool": int(n),
        "n_train": int(ts.kd.n),
    }
    loo = _loo(factor)
    return Scores(cids, psi, var, rank, ts.ident, loo, nearest, nearest_d2, attrs, stats)


def scores_format(path, fmt: str | None, test=None) -> str:
    """``h5``, ``json`` or ``xyz`` (the test set's frames with ``score_*`` info keys), from
    ``fmt`` or the suffix of ``path``; ``xyz`` needs ``test`` frames, not a store."""
    suffix = Path(path).suffix.lower()
    fmt = fmt or {".json": "json", ".xyz": "xyz", ".extxyz": "xyz"}.get(suffix, "h5")
    if fmt not in ("h5", "json", "xyz"):
        raise MlpdesignError(f"unknown scores format {fmt!r} (h5, json or xyz)")
    if fmt == "xyz":
        if not as_paths(test):
            raise MlpdesignError(
                "xyz output writes the --test configurations with score_* keys; "
                "give --test FILE, or write h5/json for the pool"
            )
        for p in expand_inputs(as_paths(test), "test set"):
            if is_store(p):
                raise MlpdesignError(f"{p}: a store has no frames to write; use h5 or json")
    return fmt


def _test_files(sc: Scores) -> list[str] | None:
    """The test set's input files (None: the pool was scored)."""
    scored = sc.attrs.get("scored")
    if not isinstance(scored, dict):
        return None
    info = scored["test"]
    return [f["path"] for f in info.get("files", [])] or [info["path"]]


def _write_xyz(tmp: Path, sc: Scores, batch: int = 1024) -> None:
    """The test frames (every input, in order, as read back) with ``score_*`` info keys,
    written a batch at a time."""
    from ase.io import write

    from mlpdesign.io.frames import open_pool

    pool = open_pool(_test_files(sc), species=False, what="test set", unique_ids=False)
    if pool.n_configs != len(sc.psi):
        raise MlpdesignError(
            f"{pool.path}: {pool.n_configs} frames, but {len(sc.psi)} were scored "
            "(did the files change?)"
        )
    with open(tmp, "w") as f:
        for c0 in range(0, pool.n_configs, batch):
            frames = pool.atoms(range(c0, min(pool.n_configs, c0 + batch)))
            for i, atoms in enumerate(frames, start=c0):
                atoms.info["score_psi"] = float(sc.psi[i])
                atoms.info["score_var"] = float(sc.var[i])
                atoms.info["score_rank"] = int(sc.rank[i])
            write(f, frames, format="extxyz")


def write_scores(path, sc: Scores, fmt: str | None = None, force: bool = False) -> Path:
    """Write ``sc`` atomically as HDF5 (default), JSON or, for a test set, its extxyz with
    ``score_psi``, ``score_var``, ``score_rank`` info keys (``fmt`` or the suffix)."""
    p = Path(path)
    fmt = scores_format(p, fmt, _test_files(sc))
    attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, **sc.attrs}
    pool = {"candidate_id": sc.candidate_id, "psi": sc.psi, "var": sc.var, "rank": sc.rank}
    train = {
        "id": sc.train_id,
        "loo_var": sc.loo_var,
        "nearest": sc.nearest,
        "nearest_d2": sc.nearest_d2,
    }
    with atomic_path(p, force) as tmp:
        if fmt == "xyz":
            _write_xyz(tmp, sc)
        elif fmt == "h5":
            import h5py

            with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
                for k, v in attrs.items():
                    f.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
                for group, arrays in (("pool", pool), ("train", train)):
                    g = f.create_group(group)
                    for k, v in arrays.items():
                        g.create_dataset(k, data=v)
        else:

            def lst(a):
                return [x if not isinstance(x, float) or math.isfinite(x) else None for x in a]

            doc = {**attrs, "pool": {k: lst(v.tolist()) for k, v in pool.items()}}
            doc["train"] = {k: lst(v.tolist()) for k, v in train.items()}
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return p


def histogram(path, sc: Scores, force: bool = False) -> Path:
    """σ² of the pool's candidates and leave-one-out σ² of the training set (log axis)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    lam = sc.attrs["jitter"]
    lo = math.log10(lam)
    hi = math.log10(max(float(sc.var.max()), float(sc.loo_var.max(initial=lam)), 10 * lam))
    bins = np.logspace(lo, hi + 1e-9, 41)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.hist(np.maximum(sc.var, lam), bins=bins, color="0.6", label="pool: σ² given the set")
    if len(sc.loo_var):
        ax.hist(
            np.maximum(sc.loo_var, lam),
            bins=bins,
            color="C0",
            alpha=0.8,
            label="training set: leave-one-out σ²",
        )
    ax.axvline(sc.attrs["threshold"], color="C3", ls="--", lw=1, label="--threshold")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"σ² (jitter λ = {lam:g})")
    ax.set_ylabel("configurations")
    ax.set_title(sc.summary().split(";")[0], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path), force) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def _check_args(jitter, threshold, output, figure, force: bool, fmt, test) -> None:
    """Refuse bad options and existing outputs before any work."""
    check_jitter(jitter)
    if not (math.isfinite(threshold) and threshold >= 0):
        raise MlpdesignError(f"--threshold must be a number >= 0, got {threshold}")
    for out in (output, figure):
        if out is not None:
            check_output(out, force)
    if output is not None:
        scores_format(output, fmt, test)


def run(
    pool_store,
    train,
    output=None,
    *,
    jitter: float = DEFAULT_JITTER,
    threshold: float = DEFAULT_THRESHOLD,
    fmt: str | None = None,
    figure=None,
    force: bool = False,
    normalize: bool = True,
    per_atom: bool = False,
    balance: bool = False,
    dtype: str = "float64",
    test=None,
    command: str = "",
    memory_limit=None,
    comm=None,
    block_rows: int | None = None,
) -> Scores:
    """Score ``pool_store``'s candidates (or, with ``test``, the configurations of those
    files or that store, described like the pool) given ``train`` (module docstring);
    write the scores to ``output`` (None: nothing written) and the histogram to
    ``figure``. ``memory_limit`` (bytes or ``"4G"``), ``comm`` (mpi4py) or ``block_rows``:
    streamed blocks over ranks, the same scores; every rank returns them, rank 0 writes."""
    c = Comm(comm)
    limit = c.agree(parse_memory, memory_limit)
    test = as_paths(test) or None
    c.agree(_check_args, jitter, threshold, output, figure, force, fmt, test)
    opts = dict(normalize=normalize, per_atom=per_atom, balance=balance, dtype=dtype)
    engine = dict(limit=limit, comm=comm, block_rows=block_rows)
    with c.agree(open_store, pool_store) as store, contextlib.ExitStack() as stack:
        sc = compute(stack, store, train, opts, float(jitter), float(threshold), test, engine)
    sc.attrs["command"] = command

    def write() -> None:
        if c.rank != 0:
            return
        if output is not None:
            write_scores(output, sc, fmt, force)
        if figure is not None:
            histogram(figure, sc, force)

    c.agree(write)
    return sc
