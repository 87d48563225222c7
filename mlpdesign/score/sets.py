"""The sets of ``score``: the training set as one KernelData, the configurations to score
as select's engine space over the store's block grid (a
:class:`~mlpdesign.select.engine.ShardSpace` of a
:class:`~mlpdesign.kernels.blocks.PoolShard`: every block held, or cached up to a memory
limit and spilled, or split over MPI ranks), and σ² of every local candidate given the
training set, block by block against its Cholesky factor.

* :func:`training_set`: a selection of the pool (its picks' rows, read from the store),
  or a store / frames of any format ASE reads (several files and globs: one set,
  described with the pool's gap string; :func:`mlpdesign.select.stage.given_store`).
  Built on rank 0 and sent to every rank.
* :func:`candidate_space`: the pool, or the ``--test`` configurations (a store, or frames
  described once on rank 0 into a directory every rank reads), as a space whose given set
  is the training set: ``condition()`` makes Ψ (the min D² to the set) with max-min's
  exact nearest-point bound. The limit counts what score holds beside the blocks
  (:func:`score_bytes`).
* :func:`training_factor` and :func:`variances`: the factor L of ``K_TT + λI`` (every rank
  the same), then for each block of candidates one kernel block against the training
  points and one triangular solve, ``σ² = k(x,x) + λ − |L⁻¹ k_Tx|²``: temporaries bounded
  by :data:`CHUNK` values and :data:`PAIRS` descriptor-row products, never an N×N or N×|T|
  matrix. Blocks of candidates are cut inside each grid block by a rule that depends only
  on that block, with one BLAS thread, so σ² is bitwise the same for any number of ranks
  and any memory limit (and Ψ is, as for select).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import file_sha256
from mlpdesign.io.frames import expand_inputs
from mlpdesign.io.selection import FORMAT as SELECTION_FORMAT
from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels.blocks import (
    BLOCK_ROWS,
    Comm,
    DesignPoints,
    PoolShard,
    blas_one_thread,
    kernel_bytes,
)
from mlpdesign.kernels.core import KernelData, StoreKernel
from mlpdesign.kernels.kblock import Rows, k_block
from mlpdesign.select.engine import ShardSpace
from mlpdesign.select.maxent import Factor, KernelOracle, one_blas_thread, self_kernel
from mlpdesign.select.stage import given_kernel, given_store, stands_alone

#: kernel values per block of σ² (candidates × training points)
CHUNK = 1 << 18
#: descriptor-row products per kernel block and term (its temporaries)
PAIRS = 1 << 18
#: training-set descriptor rows per term in one kernel block
COL_ROWS = 1 << 14


@dataclass
class TrainingSet:
    """The training configurations as one KernelData (like the pool's kernel), their ids
    (candidate_id for a selection, else position in the files or store) and provenance."""

    kd: KernelData
    ident: np.ndarray
    info: dict


def is_selection(p: Path) -> bool:
    """A selection file (any of its formats), else a store or frames."""
    with open(p, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\x89HDF"):
        import h5py

        with h5py.File(p, "r") as h:
            fmt = h.attrs.get("format", "")
        return (fmt.decode() if isinstance(fmt, bytes) else str(fmt)) == SELECTION_FORMAT
    text = head.decode(errors="replace").lstrip()
    return text.startswith("{") or text.startswith("# format: " + SELECTION_FORMAT)


def as_paths(paths) -> list:
    """``paths`` (one path or glob, or several) as a list; None and empty: []."""
    if paths is None:
        return []
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def pool_configs(store, idx, kd: KernelData) -> KernelData:
    """Configs ``idx`` of ``store`` (in that order) as one KernelData like ``kd`` (the
    pool's kernel or its one-config template), read from the store in runs of consecutive
    positions (never the whole store; the same bits in memory and streamed)."""
    idx = np.asarray(idx, dtype=np.int64)
    order = np.unique(idx)
    cuts = np.flatnonzero(np.diff(order) > 1) + 1
    got = {}
    parts = []  # the queries are views into their part: keep the parts until built
    for run in np.split(order, cuts):
        part = StoreKernel(store, configs=(int(run[0]), int(run[-1]) + 1), like=kd, **kd.options)
        parts.append(part)
        got.update({int(i): part.query(int(i - run[0])) for i in run})
    return DesignPoints(kd).build([got[int(i)] for i in idx])


def _from_selection(p: Path, store, kd: KernelData) -> TrainingSet:
    sel = load_selection(p)
    if sel.pool_sha256 != store.pool_sha256:
        raise MlpdesignError(
            f"{p} was made for another pool than {store.path} (pool checksums differ)"
        )
    cids = np.asarray(store.candidate_id, dtype=np.int64)
    idx = sel.index
    if idx is None:  # txt: positions from the candidate ids
        pos = {int(c): i for i, c in enumerate(cids)}
        missing = [int(c) for c in sel.candidate_id if int(c) not in pos]
        if missing:
            raise MlpdesignError(f"{p}: candidate {missing[0]} is not in {store.path}")
        idx = np.array([pos[int(c)] for c in sel.candidate_id], dtype=np.int64)
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        raise MlpdesignError(f"{p}: the selection holds no picks (an empty training set)")
    if idx.min() < 0 or idx.max() >= store.n_configs:
        raise MlpdesignError(f"{p}: a pick lies outside {store.path} (0..{store.n_configs - 1})")
    info = {"path": str(p), "kind": "selection", "sha256": file_sha256(p)}
    return TrainingSet(pool_configs(store, idx, kd), cids[idx], {**info, "n_configs": len(idx)})


def training_set(c: Comm, train, store, kd: KernelData) -> TrainingSet:
    """The training set (module docstring), built on rank 0 and sent to every rank."""

    def build():
        if c.rank != 0:
            return None
        files = expand_inputs(as_paths(train), "training set")
        sel = [p for p in files if is_selection(p)]
        stands_alone(files, sel, "selection", "training set", "give it alone")
        if sel:
            return _from_selection(sel[0], store, kd)
        with tempfile.TemporaryDirectory(prefix="mlpdesign-train-") as tmp:
            one = train if isinstance(train, (str, os.PathLike)) else list(train)
            gk, info = given_kernel(one, store, kd, tmp, what="training set")
        return TrainingSet(gk, np.arange(gk.n, dtype=np.int64), info)

    return c.bcast(c.agree(build), root=0)


def score_bytes(gk: KernelData, cstore) -> int:
    """What score holds beside a shard's blocks of ``cstore``: the training set's kernel
    matrix, factor and inverse (six |T|² at peak), its rows twice, one block's
    temporaries (at most :data:`CHUNK` values and :data:`PAIRS` row products, fewer on a
    small problem), and the gathered per-candidate results (Ψ, σ², rank and their sort)."""
    m, n = gk.n, cstore.n_configs
    pairs = 0
    for k, t in enumerate(gk.terms):
        rows_a = max(n, int(cstore.offsets(k)[-1]))  # a pair term: one row per config
        pairs = max(pairs, min(PAIRS, rows_a * int(t.offsets[-1])))
    chunk = min(CHUNK, n * m)
    return int(48 * m * m + 2 * kernel_bytes(gk) + 32 * chunk + 48 * pairs + 56 * n)


def _test_store(stack, c: Comm, test, store):
    """The ``--test`` configurations as an open store on every rank: a store as given, or
    frames described on rank 0 into a directory every rank reads ($MLPDESIGN_SCRATCH,
    else the temporary directory; removed at the end)."""

    def describe_test():
        if c.rank != 0:
            return None
        where = os.environ.get("MLPDESIGN_SCRATCH") or None
        tmp = tempfile.mkdtemp(prefix="mlpdesign-test-", dir=where)
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        gstore, info = given_store(test, store, tmp, what="test set")
        gstore.close()
        return str(gstore.path), info

    path, info = c.bcast(c.agree(describe_test), root=0)
    return stack.enter_context(c.agree(open_store, path)), info


@dataclass
class Candidates:
    """The configurations to score: this rank's shard as an engine space whose given set
    is the training set, their ids, and what was scored (``"pool"`` or ``{"test":
    provenance}``)."""

    space: ShardSpace
    ids: np.ndarray
    scored: object


def candidate_space(stack, c: Comm, store, kd, ts: TrainingSet, test, opts: dict, engine):
    """The pool or the ``--test`` configurations (:class:`Candidates`) as the store's
    block grid: every block held when ``engine`` sets no limit, else cached up to the
    limit and spilled; this rank's run of blocks under MPI."""
    test = as_paths(test) or None
    if test is not None and len(test) == 1:
        test = test[0]  # recorded as given
    cstore, scored = store, "pool"
    if test is not None:
        cstore, info = _test_store(stack, c, test, store)
        scored = {"test": info}
    shard = PoolShard(
        cstore,
        opts,
        memory_limit=engine["limit"],
        comm=engine["comm"],
        block_rows=engine["block_rows"] or BLOCK_ROWS,
        n_design=ts.kd.n,
        given=ts.kd,
        what="score",
        ref=kd,
        extra_bytes=score_bytes(ts.kd, cstore),
    )
    stack.enter_context(contextlib.closing(shard))
    stack.enter_context(blas_one_thread())
    ids = np.asarray(store.candidate_id) if test is None else np.arange(cstore.n_configs)
    return Candidates(ShardSpace(shard, shard.global_eps(ts.kd), ts.kd), ids, scored)


@one_blas_thread
def training_factor(kd: KernelData, gk: KernelData, jitter: float) -> Factor:
    """The Cholesky factor of ``K_TT + λI`` of the training set ``gk`` (kernel of ``kd``)
    and the training rows stacked for kernel blocks; one BLAS thread, so the same bits in
    every mode."""
    f = Factor(float(jitter), KernelOracle(kd, gk), cap=max(1, gk.n))
    try:
        f.start([-1 - j for j in range(gk.n)])
    except MlpdesignError:
        raise MlpdesignError(
            f"the training set's kernel matrix plus --jitter {jitter:g} is not positive "
            "definite; use a larger --jitter"
        ) from None
    return f


def _cuts(offsets: list[np.ndarray], n: int, limits: list[int], most: int) -> list[tuple]:
    """Consecutive ranges of ``n`` configs with at most ``limits[t]`` rows of term t (by
    its row ``offsets``) and ``most`` configs each; at least one config each."""
    out, c = [], 0
    while c < n:
        hi = min(n, c + most)
        for off, lim in zip(offsets, limits, strict=True):
            j = int(np.searchsorted(off, off[c] + lim, side="right")) - 1
            hi = min(hi, max(j, c + 1))
        out.append((c, hi))
        c = hi
    return out


@one_blas_thread
def variances(cands: Candidates, factor: Factor, jitter: float) -> np.ndarray:
    """σ²(x | T) of every local candidate given the training points of ``factor``, one
    bounded block at a time, cut inside each grid block by a rule of that block alone
    (module docstring): the same bits for any memory limit and number of ranks."""
    m, pts = factor.m, factor.rows
    cols = _cuts([o[: m + 1] for o in pts.offsets], m, [COL_ROWS] * pts.n_terms, m)
    brows = [max(int(o[b] - o[a]) for a, b in cols) for o in pts.offsets[: pts.n_terms]]
    limits = [max(1, PAIRS // max(1, r)) for r in brows]
    sh = cands.space.shard
    out = np.empty(sh.local_n)
    for i in range(len(sh.blocks)):
        kdp, at = sh.block(i), sh.local_range(i)[0]
        kxx = self_kernel(kdp)
        offs = [t.offsets for t in kdp.terms]
        for c0, c1 in _cuts(offs, kdp.n, limits, max(1, CHUNK // max(1, m))):
            A = Rows.range(kdp, c0, c1)
            kb = np.concatenate([k_block(kdp, A, pts.rows(j0, j1)) for j0, j1 in cols], axis=1)
            Y = factor.extend(np.zeros((c1 - c0, 0)), kb, 0)
            out[at + c0 : at + c1] = kxx[c0:c1] + jitter - np.einsum("ij,ij->i", Y, Y)
    return out


def gather(c: Comm, local: np.ndarray) -> np.ndarray:
    """The per-candidate arrays of every rank, in pool order, on every rank."""
    parts = c.allgather(np.asarray(local))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
