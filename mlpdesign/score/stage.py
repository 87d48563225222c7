"""``mlpdesign score``: how informative each candidate of a pool is given a training set, and
how redundant each training configuration is, before any reference energy is computed.

Per candidate x of the pool: Ψ (the smallest D² to the training set, max-min's measure),
σ²(x | T) = k(x,x) + λ − k_xT (K_TT + λI)⁻¹ k_Tx (MaxEnt's: how much adding x would raise
log det(K + λI), ``log σ²``), and its rank by σ² (0: the most informative; ties: lowest
index; duplicates of the training set, Ψ <= eps, rank last, as ``select`` never picks
them). Per training configuration t: its leave-one-out σ² given the others,
``1 / [(K_TT + λI)⁻¹]_tt`` (the "swap" value: small = redundant) and its nearest neighbour
in the set (position and D²). For the set: log det(K_TT + λI), the largest σ² in the pool
("can this set cover the pool?") and the fraction of candidates with σ² above a threshold.

The training set is an extxyz (described here with the pool's gap string), a store
described with the same gap string, or a selection of this pool (its picks). ``test``:
score the configurations of another file (an MD trajectory, say; an extxyz or a store with
the pool's gap string) instead of the pool's. In memory.

Library API::

    run(pool_store, train, output=None, *, jitter=1e-6, threshold=0.01, fmt=None,
        figure=None, force=False, normalize=True, per_atom=False, balance=False,
        dtype="float64", test=None, command="") -> Scores
    write_scores(path, scores, fmt=None, force=False)    # h5 (default), json, or xyz (--test)
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_path, check_output, file_sha256, require_file
from mlpdesign.io.selection import FORMAT as SELECTION_FORMAT
from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels.blocks import DesignPoints
from mlpdesign.kernels.core import KernelData, StoreKernel
from mlpdesign.kernels.nearest import MaxMinState
from mlpdesign.select.maxent import (
    DEFAULT_JITTER,
    KernelOracle,
    check_jitter,
    log_det_set,
    loo_variances,
    variances_given,
)
from mlpdesign.select.stage import given_kernel

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


def _is_selection(p: Path) -> bool:
    """A selection file (any of its formats), else a store or an extxyz."""
    with open(p, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\x89HDF"):
        import h5py

        with h5py.File(p, "r") as h:
            fmt = h.attrs.get("format", "")
        return (fmt.decode() if isinstance(fmt, bytes) else str(fmt)) == SELECTION_FORMAT
    text = head.decode(errors="replace").lstrip()
    return text.startswith("{") or text.startswith("# format: " + SELECTION_FORMAT)


def _training(train, store, kd: KernelData) -> tuple[list[int], KernelData | None, dict]:
    """Design points of the training set (pool positions, or ``-1 - j`` of a given
    KernelData), that KernelData, and the set's provenance."""
    p = require_file(train, "training set")
    if _is_selection(p):
        sel = load_selection(p)
        if sel.pool_sha256 != store.pool_sha256:
            raise MlpdesignError(
                f"{p} was made for another pool than {store.path} (pool checksums differ)"
            )
        idx = sel.index
        if idx is None:  # txt: positions from the candidate ids
            pos = {int(c): i for i, c in enumerate(np.asarray(store.candidate_id))}
            idx = np.array([pos[int(c)] for c in sel.candidate_id], dtype=np.int64)
        info = {"path": str(train), "kind": "selection", "sha256": file_sha256(p)}
        return [int(i) for i in idx], None, {**info, "n_configs": len(idx)}
    with tempfile.TemporaryDirectory(prefix="mlpdesign-train-") as tmp:
        gk, info = given_kernel(p, store, kd, tmp)
    return [-1 - j for j in range(gk.n)], gk, info


def _nearest(kd: KernelData, gk: KernelData | None, points: list[int]):
    """Nearest other training configuration of each, and its D²."""
    m = len(points)
    if gk is None:
        D = kd.d2_block(points, points)
    else:
        D = gk.d2_block(np.arange(gk.n), np.arange(gk.n))
    D = np.array(D, dtype=np.float64).reshape(m, m)
    np.fill_diagonal(D, np.inf)
    if m < 2:
        return np.full(m, -1, dtype=np.int64), np.full(m, np.inf)
    j = np.argmin(D, axis=1)
    return j.astype(np.int64), D[np.arange(m), j]


def _psi(kd: KernelData, gk: KernelData | None, points: list[int]) -> np.ndarray:
    st = MaxMinState(kd, gk)
    for p in points:
        if p >= 0:
            st.add_pool(p, exclude=False)
        else:
            st.add_given(-1 - p)
    return st.psi.copy()


def _candidates(store, kd: KernelData, test, points, gk):
    """The configurations to score (the pool, or ``test`` described like it), their ids,
    and the training set as design points of a KernelData when the candidates are not
    the pool (a selection's picks, rebuilt from the pool's rows)."""
    if test is None:
        return kd, np.asarray(store.candidate_id, dtype=np.int64), points, gk, None
    if gk is None:
        gk = DesignPoints(kd).build([kd.query(int(i)) for i in points])
        points = [-1 - j for j in range(len(points))]
    with tempfile.TemporaryDirectory(prefix="mlpdesign-test-") as tmp:
        cand, tinfo = given_kernel(require_file(test, "test set"), store, kd, tmp)
    return cand, np.arange(cand.n, dtype=np.int64), points, gk, tinfo


def compute(store, kd: KernelData, train, jitter: float, threshold: float, test=None) -> Scores:
    """The scores of ``store``'s pool (its KernelData ``kd``), or of the configurations
    of ``test``, given ``train``."""
    points, gk, info = _training(train, store, kd)
    cids_pool = np.asarray(store.candidate_id, dtype=np.int64)
    train_id = cids_pool[points] if gk is None else np.arange(len(points), dtype=np.int64)
    nearest, nearest_d2 = _nearest(kd, gk, points)
    cand, cids, points, gk, tinfo = _candidates(store, kd, test, points, gk)
    oracle = KernelOracle(cand, gk)
    var = variances_given(oracle, points, jitter)
    psi = _psi(cand, gk, points)
    dup = psi <= oracle.eps  # in the training set already: last, as select never picks them
    rank = np.empty(cand.n, dtype=np.int64)
    rank[np.lexsort((np.arange(cand.n), -var, dup))] = np.arange(cand.n)
    attrs = {
        "pool_sha256": store.pool_sha256,
        "store_path": str(store.path),
        "gap": store.gap,
        "kernel": kd.options,
        "train": info,
        "scored": "pool" if tinfo is None else {"test": tinfo},
        "jitter": float(jitter),
        "threshold": float(threshold),
        "logdet": log_det_set(oracle, points, jitter),
        "max_var": float(var.max()),
        "frac_above": float(np.mean(var > threshold)),
        "n_pool": int(cand.n),
        "n_train": len(points),
    }
    return Scores(
        cids,
        psi,
        var,
        rank,
        train_id,
        loo_variances(oracle, points, jitter),
        nearest,
        nearest_d2,
        attrs,
    )


def scores_format(path, fmt: str | None, test=None) -> str:
    """``h5``, ``json`` or ``xyz`` (the test set's frames with ``score_*`` info keys), from
    ``fmt`` or the suffix of ``path``; ``xyz`` needs a ``test`` file that is not a store."""
    suffix = Path(path).suffix.lower()
    fmt = fmt or {".json": "json", ".xyz": "xyz", ".extxyz": "xyz"}.get(suffix, "h5")
    if fmt not in ("h5", "json", "xyz"):
        raise MlpdesignError(f"unknown scores format {fmt!r} (h5, json or xyz)")
    if fmt == "xyz":
        if test is None:
            raise MlpdesignError(
                "xyz output writes the --test configurations with score_* keys; "
                "give --test FILE, or write h5/json for the pool"
            )
        with open(require_file(test, "test set"), "rb") as f:
            if f.read(4) == b"\x89HDF":
                raise MlpdesignError(f"{test}: a store has no frames to write; use h5 or json")
    return fmt


def _write_xyz(tmp: Path, sc: Scores) -> None:
    from ase.io import read, write

    frames = read(sc.attrs["scored"]["test"]["path"], ":")
    for i, atoms in enumerate(frames):
        atoms.info["score_psi"] = float(sc.psi[i])
        atoms.info["score_var"] = float(sc.var[i])
        atoms.info["score_rank"] = int(sc.rank[i])
    write(tmp, frames, format="extxyz")


def write_scores(path, sc: Scores, fmt: str | None = None, force: bool = False) -> Path:
    """Write ``sc`` atomically as HDF5 (default), JSON or, for a test set, its extxyz with
    ``score_psi``, ``score_var``, ``score_rank`` info keys (``fmt`` or the suffix)."""
    p = Path(path)
    test = sc.attrs.get("scored")
    fmt = scores_format(p, fmt, test["test"]["path"] if isinstance(test, dict) else None)
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
) -> Scores:
    """Score ``pool_store``'s candidates (or, with ``test``, the configurations of that
    extxyz or store, described like the pool) given ``train`` (module docstring); write the
    scores to ``output`` (None: nothing written) and the histogram to ``figure``."""
    check_jitter(jitter)
    if not (math.isfinite(threshold) and threshold >= 0):
        raise MlpdesignError(f"--threshold must be a number >= 0, got {threshold}")
    for out in (output, figure):
        if out is not None:
            check_output(out, force)
    if output is not None:
        scores_format(output, fmt, test)
    with open_store(pool_store) as store:
        kd = StoreKernel(
            store, normalize=normalize, per_atom=per_atom, balance=balance, dtype=dtype
        )
        sc = compute(store, kd, train, float(jitter), float(threshold), test)
    sc.attrs["command"] = command
    if output is not None:
        write_scores(output, sc, fmt, force)
    if figure is not None:
        histogram(figure, sc, force)
    return sc
