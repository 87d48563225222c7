"""Label-free quality of designs (paper, section 1 and figs. 3, 4, 8), before any DFT is run.

Three criteria, all on the squared kernel distance ``D2(p, q) = k(p,p) + k(q,q) - 2 k(p,q)``
(paper eq. 2; in [0, 2] on the normalised kernel) and on the kernel matrix itself:

- max-min: the smallest pairwise ``D2`` inside the design (larger is better);
- covering radius (fill distance): the largest ``D2`` from any pool candidate to its nearest
  design point (smaller is better); streamed over the pool in chunks, O(N) memory;
- MaxEnt (Shewry & Wynn): ``log det (K + jitter I)`` of the design's kernel matrix (larger is
  better), with the jitter stated in the output.

Everything here talks to the pool through a *kernel oracle*: any object with ``n`` (pool size),
``diag()`` (``k(i, i)`` for every candidate) and ``block(rows, cols)`` (the kernel matrix
between two index arrays). A :class:`mlpdesign.kernels.core.KernelData` (a store's kernel, or the
toy kernels ``kernels.linear`` / ``kernels.gaussian``) is accepted wherever an oracle is.

    kd = kernels.gaussian(X, 1.0)
    design = select.maxmin(kd, 100)
    designs = [report.ReportDesign("maxmin", design.index, design.psi)]
    data = report.compute(kd, designs, n_random=20)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels.core import all_cpus, items_map
from mlpdesign.kernels.nearest import MaxMinState

#: Default jitter added to the diagonal of K before log det (K is PSD, often near-singular).
#: Above the rounding noise of a float32 kernel; about a GAP energy noise sigma^2 / delta^2.
DEFAULT_JITTER = 1e-6
#: Default number of histogram bins in the figures.
DEFAULT_BINS = 40
#: Version of the ``metrics.json`` layout; bump it when a key changes meaning or disappears.
METRICS_FORMAT_VERSION = 1
#: Names of the figures written by :func:`report` (those that apply to the data).
FIGURES = (
    "pairwise_distance.png",
    "design_curve.png",
    "logdet.png",
    "strain.png",
    "structure_share.png",
)


class KernelOracle(Protocol):
    """The pool as seen by the metrics: a kernel between candidate indices.

    Optional: ``d2_rows(rows, c0, c1)`` (D2 from candidates ``rows`` to the contiguous range
    ``c0..c1-1``; a faster path for streaming) and ``chunk`` (preferred streaming width).
    """

    @property
    def n(self) -> int: ...

    def diag(self) -> np.ndarray: ...

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray: ...


class KernelDataOracle:
    """A :class:`mlpdesign.kernels.core.KernelData` (a store's or a toy kernel) as an oracle.

    The kernel is the one the selection optimised (normalised, per-atom or balanced as in
    ``kd.options``); ``diag`` is ``k(i, i)`` in that mode (1 when normalised or balanced).
    """

    #: Largest product block (float64 numbers; 64 MiB).
    budget = 1 << 23

    def __init__(self, kd: Any) -> None:
        self.kd = kd
        per_config = max(float(t.offsets[-1]) / max(1, kd.n) for t in kd.terms)
        #: Pool configs per streamed chunk: about 2^16 descriptor rows.
        self.chunk = int(min(8192, max(64, (1 << 16) // max(1, math.ceil(per_config)))))
        self._diag = (
            np.ones(kd.n) if (kd.normalize or kd.balance) else np.asarray(kd.diag, dtype=np.float64)
        )

    @property
    def n(self) -> int:
        return int(self.kd.n)

    def diag(self) -> np.ndarray:
        return self._diag

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.asarray(self.kd.k_block(rows, cols), dtype=np.float64)

    def d2_rows(self, rows: np.ndarray, c0: int, c1: int) -> np.ndarray:
        """D2 from candidates ``rows`` to configs ``c0..c1-1``: one matrix product per term
        for a group of rows (not one pass per row), then the kernel's own combination.

        Groups are sized so one product holds at most :attr:`budget` float64 numbers.
        """
        rows = np.asarray(rows, dtype=np.int64)
        kd = self.kd
        x_rows = max(int(t.offsets[c1] - t.offsets[c0]) for t in kd.terms)
        q_rows = np.max([np.diff(t.offsets)[rows] for t in kd.terms], axis=0)
        cap = max(1, self.budget // max(1, x_rows))
        out = np.empty((len(rows), c1 - c0))
        start = 0
        while start < len(rows):
            cs = np.cumsum(q_rows[start:])
            stop = start + max(1, int(np.searchsorted(cs, cap, side="right")))
            out[start:stop] = self.kd.d2_many(rows[start:stop], c0, c1)
            start = stop
        return out


def as_oracle(obj: Any) -> KernelOracle:
    """``obj`` itself if it is an oracle, else a KernelData wrapped by :class:`KernelDataOracle`."""
    if hasattr(obj, "block") and callable(getattr(obj, "diag", None)):
        return obj
    if hasattr(obj, "k_block") and hasattr(obj, "d2_range"):
        return KernelDataOracle(obj)
    raise MlpdesignError(
        f"cannot measure designs on a {type(obj).__name__}: expected a "
        "kernel (mlpdesign.kernels.core.KernelData) or an oracle"
    )


def store_oracle(store: Any, options: dict | None = None) -> KernelDataOracle:
    """The kernel of a descriptor store with a selection's kernel options (normalize, ...)."""
    from mlpdesign.kernels.core import StoreKernel

    o = dict(options or {})
    known = {"normalize", "per_atom", "balance", "dtype", "terms", "grid_step"}
    unknown = sorted(set(o) - known)
    if unknown:
        raise MlpdesignError(
            f"unknown kernel option {unknown[0]!r} (known: {', '.join(sorted(known - {'terms'}))})"
        )
    kd = StoreKernel(
        store,
        normalize=bool(o.get("normalize", True)),
        per_atom=bool(o.get("per_atom", False)),
        balance=bool(o.get("balance", False)),
        dtype=str(o.get("dtype", "float32")),
        grid_step=o.get("grid_step"),
    )
    return KernelDataOracle(kd)


# --------------------------------------------------------------------------- metrics


def d2_block(
    oracle: Any, rows: np.ndarray, cols: np.ndarray, diag: np.ndarray | None = None
) -> np.ndarray:
    """Squared kernel distances between candidates ``rows`` and ``cols`` (clipped at 0)."""
    oracle = as_oracle(oracle)
    diag = oracle.diag() if diag is None else diag
    k = oracle.block(rows, cols)
    d2 = diag[rows][:, None] + diag[cols][None, :] - 2.0 * k
    np.maximum(d2, 0.0, out=d2)
    d2[np.asarray(rows)[:, None] == np.asarray(cols)[None, :]] = 0.0
    return d2


def pairwise_d2(oracle: Any, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The design's kernel matrix K and its pairwise D2 matrix (both n x n)."""
    oracle = as_oracle(oracle)
    design = np.asarray(design, dtype=np.int64)
    k = np.asarray(oracle.block(design, design), dtype=np.float64)
    k = 0.5 * (k + k.T)
    dg = np.diag(k).copy()
    d2 = dg[:, None] + dg[None, :] - 2.0 * k
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return k, d2


def min_pairwise_curve(d2: np.ndarray) -> np.ndarray:
    """Smallest pairwise D2 of every prefix: entry m-1 is the max-min criterion of the first m.

    The first entry (one point, no pair) is +inf.
    """
    n = len(d2)
    lower = np.where(np.tri(n, k=-1, dtype=bool), d2, np.inf)
    return np.minimum.accumulate(lower.min(axis=1)) if n else np.empty(0)


def upper_pairs(d2: np.ndarray) -> np.ndarray:
    """The n(n-1)/2 distinct pairwise values of a symmetric matrix."""
    return d2[np.triu_indices(len(d2), k=1)]


def log_det(k: np.ndarray, jitter: float = DEFAULT_JITTER) -> float:
    """``log det (K + jitter I)``: the MaxEnt criterion (Shewry & Wynn) with a stated jitter.

    Cholesky first; if K is numerically indefinite beyond the jitter, its eigenvalues are
    clipped at 0 before the jitter is added (same value whenever Cholesky succeeds).
    """
    n = len(k)
    if n == 0:
        return 0.0
    a = k + jitter * np.eye(n)
    try:
        low = np.linalg.cholesky(a)
        return float(2.0 * np.log(np.diag(low)).sum())
    except np.linalg.LinAlgError:
        w = np.linalg.eigvalsh(0.5 * (k + k.T))
        return float(np.log(np.maximum(w, 0.0) + jitter).sum())


def covering_curves(
    oracle: Any,
    designs: Sequence[np.ndarray],
    chunk: int | None = None,
    block: int = 256,
    progress: Any = None,
) -> list[np.ndarray]:
    """Covering radius (in D2) of every prefix of every design, in one pass over the pool.

    Entry m-1 of curve d is ``max_i min_{j < m} D2(i, design_d[j])`` over all pool candidates i:
    the fill distance of the first m points. The pool is streamed in ``chunk`` columns and
    each design in ``block`` rows, so memory is O(N + chunk * block), never N x n.
    ``progress.update(k)`` is called with the number of pool candidates done.
    """
    oracle = as_oracle(oracle)
    if isinstance(oracle, KernelDataOracle):  # the exact bounds of select's Psi tracker
        return tracked_curves(oracle.kd, designs, progress)
    chunk = int(chunk or getattr(oracle, "chunk", 4096))
    diag = oracle.diag()
    n_pool = oracle.n
    fast = getattr(oracle, "d2_rows", None)
    designs = [np.asarray(d, dtype=np.int64) for d in designs]
    curves = [np.full(len(d), -np.inf) for d in designs]
    for c0 in range(0, n_pool, chunk):
        cols = np.arange(c0, min(c0 + chunk, n_pool))
        for d, curve in zip(designs, curves, strict=True):
            run = np.full(len(cols), np.inf)
            for b0 in range(0, len(d), block):
                rows = d[b0 : b0 + block]
                if fast is not None:
                    dd = fast(rows, int(cols[0]), int(cols[-1]) + 1)
                else:
                    dd = d2_block(oracle, rows, cols, diag)
                seg = curve[b0 : b0 + len(rows)]
                for r in range(len(rows)):  # running min row by row (cheaper than accumulate)
                    np.minimum(run, dd[r], out=run)
                    seg[r] = max(seg[r], run.max())
        if progress is not None:
            progress.update(len(cols))
    return curves


def tracked_curves(kd: Any, designs: Sequence[np.ndarray], progress: Any = None) -> list:
    """:func:`covering_curves` of a KernelData in memory: each design's points added one by
    one to a :class:`~mlpdesign.kernels.nearest.MaxMinState`, whose Psi is then the min D²
    of every candidate to the prefix (the values select records); its bounds skip the rows
    a new point cannot change, so a design costs about what selecting it did. The designs
    run side by side on the CPUs (:func:`~mlpdesign.kernels.core.items_map`, same bits)."""
    designs = [np.asarray(d, dtype=np.int64) for d in designs]

    def one(k: int) -> np.ndarray:
        st = MaxMinState(kd)
        curve = np.empty(len(designs[k]))
        for m, j in enumerate(designs[k]):
            st.add_pool(int(j), exclude=False)
            curve[m] = st.psi.max()
        return curve

    def done(k: int) -> None:  # the pool's candidates, shared out over the designs
        if progress is not None:
            progress.update(kd.n * (k + 1) // len(designs) - kd.n * k // len(designs))

    return items_map(one, list(range(len(designs))), done, fork=True)


def strain_magnitude(f: np.ndarray) -> np.ndarray:
    """``||F - I||`` (Frobenius) of deformations given as (n, 9) row-major rows (paper fig. 4b)."""
    f = np.asarray(f, dtype=np.float64).reshape(-1, 9)
    return np.linalg.norm(f - np.eye(3).ravel()[None, :], axis=1)


def structure_shares(labels: Sequence[str]) -> dict[str, float]:
    """Fraction of each structure label, in sorted label order."""
    labels = list(labels)
    if not labels:
        return {}
    names, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    return {str(k): float(c) / len(labels) for k, c in zip(names, counts, strict=True)}


def random_designs(n_pool: int, size: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` random designs of ``size`` candidates without replacement (seeded).

    A prefix of length m of each is itself a uniformly random design of m candidates.
    """
    if size > n_pool:
        raise MlpdesignError(f"cannot draw random designs of {size} from a pool of {n_pool}")
    rng = np.random.default_rng(seed)
    return [rng.choice(n_pool, size=size, replace=False).astype(np.int64) for _ in range(count)]


# --------------------------------------------------------------------------- evaluation


@dataclass
class DesignEval:
    """Everything measured on one design (full length; prefixes are slices of the curves)."""

    index: np.ndarray  # pool row of each point, in design order
    k: np.ndarray  # design kernel matrix
    d2: np.ndarray  # design pairwise D2
    min_pairwise: np.ndarray  # min pairwise D2 of every prefix
    covering: np.ndarray  # covering radius D2 of every prefix

    def logdet(self, size: int, jitter: float) -> float:
        return log_det(self.k[:size, :size], jitter)

    def pairs(self, size: int) -> np.ndarray:
        return upper_pairs(self.d2[:size, :size])


def evaluate(
    oracle: Any, designs: Sequence[np.ndarray], covering: Any = None, **pass_options: Any
) -> list[DesignEval]:
    """Kernel matrix, pairwise D2, max-min and covering curves of each design.

    ``covering(designs) -> curves``: computes the covering curves instead of the in-memory
    pass (``mlpdesign.report.streamed``: streamed / over MPI ranks); ``pass_options``
    (``chunk``, ``block``, ``progress``) are those of :func:`covering_curves`.

    ``oracle``: a :class:`mlpdesign.kernels.core.KernelData` or any :class:`KernelOracle`.
    """
    oracle = as_oracle(oracle)
    designs = [np.asarray(d, dtype=np.int64) for d in designs]
    for d in designs:
        if len(d) and (d.min() < 0 or d.max() >= oracle.n):
            raise MlpdesignError(f"design index out of range for a pool of {oracle.n}")
        if len(np.unique(d)) != len(d):
            raise MlpdesignError("a design repeats a candidate")
    if covering is not None:
        cover = covering(designs)
    else:
        cover = covering_curves(oracle, designs, **pass_options)
    pairwise = items_map(lambda d: pairwise_d2(oracle, d), designs, fork=True)  # side by side
    return [
        DesignEval(d, k, d2, min_pairwise_curve(d2), c)
        for d, (k, d2), c in zip(designs, pairwise, cover, strict=True)
    ]


def _num(x: float) -> float | None:
    """JSON-safe float: non-finite values become null."""
    return float(x) if math.isfinite(x) else None


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "median": _num(np.median(v)),
        "mean": _num(v.mean()),
        "min": _num(v.min()),
        "max": _num(v.max()),
        "q10": _num(np.quantile(v, 0.1)),
        "q90": _num(np.quantile(v, 0.9)),
    }


def size_metrics(ev: DesignEval, size: int, jitter: float) -> dict[str, float | None]:
    """The three criteria (D2 and D = sqrt(D2)) and pair statistics of the first ``size``."""
    mp = float(ev.min_pairwise[size - 1])
    cr = float(ev.covering[size - 1])
    pairs = ev.pairs(size)
    return {
        "min_pairwise_d2": _num(mp),
        "min_pairwise_d": _num(math.sqrt(mp)) if math.isfinite(mp) else None,
        "covering_radius_d2": _num(cr),
        "covering_radius_d": _num(math.sqrt(cr)),
        "logdet_k": _num(ev.logdet(size, jitter)),
        "median_pairwise_d2": _num(np.median(pairs)) if len(pairs) else None,
    }


#: Criteria compared against random designs, and whether larger is better.
CRITERIA = {"min_pairwise_d2": True, "covering_radius_d2": False, "logdet_k": True}


def beaten_fraction(value: float | None, randoms: Sequence[float | None], larger: bool) -> float:
    """Fraction of random designs that ``value`` strictly beats (None counts as the worst)."""
    if not randoms:
        return float("nan")
    worst = -math.inf if larger else math.inf
    v = worst if value is None else value
    r = np.array([worst if x is None else x for x in randoms])
    return float(np.mean(v > r) if larger else np.mean(v < r))


def json_dumps(obj: Any) -> str:
    """Deterministic JSON text (indent 2, no NaN: non-finite numbers are null)."""

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (float, np.floating)):
            return _num(float(o))
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, os.PathLike):
            return str(o)
        return o

    return json.dumps(clean(obj), indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- the report


@dataclass
class ReportDesign:
    """One design to report on: pool rows in design order, and Ψ at pick time if known."""

    name: str
    index: np.ndarray
    psi: np.ndarray | None = None  # D2 to the design (and given set) at pick time
    path: str = ""
    method: str = ""
    conditional: bool = False  # Ψ also counts distances to an existing training set
    ordered: bool = True  # False: a set (select --refine exchange): no prefix is a design
    refine: dict | None = None  # the exchange: objective before/after, swaps, tolerance


#: The old name (tests and scripts use it); ``select`` has its own ``Design``.
Design = ReportDesign


@dataclass
class ReportData:
    """Metrics (the JSON document) plus the arrays the figures are drawn from."""

    metrics: dict
    designs: list[ReportDesign]
    evals: list[DesignEval]
    random_evals: list[DesignEval]
    strain: np.ndarray | None  # ||F - I|| of every pool candidate (None when F unknown)
    structure: np.ndarray | None  # label of every pool candidate (None when not mixed)


def _parse_sizes(sizes: Sequence[int] | None, designs: Sequence[ReportDesign]) -> list[list[int]]:
    out = []
    for d in designs:
        n = len(d.index)
        if not sizes or not d.ordered:  # a set: only its full size is a design
            out.append([n])
            continue
        bad = [s for s in sizes if s < 1 or s > n]
        if bad:
            raise MlpdesignError(
                f"size {bad[0]} is outside 1..{n}, the length of design {d.name!r}"
            )
        out.append(sorted(set(int(s) for s in sizes)))
    return out


#: covering radii (D²) whose design size ``report`` states ("how many DFT runs for this")
DEFAULT_COVER_TARGETS = (0.1, 0.05, 0.02, 0.01)


def design_cost(n_atoms: np.ndarray, exponent: float = 3.0) -> dict:
    """A design's total atoms and relative DFT cost ``sum n ** exponent``."""
    n = np.asarray(n_atoms, dtype=np.float64)
    return {
        "total_atoms": int(n.sum()),
        "dft_cost": float((n**exponent).sum()),
        "cost_exponent": float(exponent),
    }


def cover_sizes(covering: np.ndarray, targets: Sequence[float]) -> dict[str, int | None]:
    """For each target D², the first design size whose covering radius is below it (None:
    not reached by this design)."""
    out: dict[str, int | None] = {}
    for t in targets:
        hit = np.flatnonzero(np.asarray(covering) < float(t))
        out[f"{float(t):g}"] = int(hit[0]) + 1 if len(hit) else None
    return out


def _annotations(n: int, F, structure):
    """Strain magnitudes and structure labels of the pool, where known (else None)."""
    strain = None
    if F is not None:
        F = np.asarray(F, dtype=np.float64).reshape(n, 9)
        if np.isfinite(F).all():
            strain = strain_magnitude(F)
    labels = None
    if structure is not None:
        lab = np.asarray([s.decode() if isinstance(s, bytes) else str(s) for s in structure])
        if len(set(lab.tolist()) - {""}) > 1:
            labels = lab
    return strain, labels


def _random_rows(revals, per_design_sizes, jitter: float):
    """Per size: the random designs' metric statistics, and each random design's metrics."""
    all_sizes = sorted({s for ss in per_design_sizes for s in ss})
    rand_by_size: dict[int, list[dict]] = {
        s: [size_metrics(r, s, jitter) for r in revals] for s in all_sizes
    }
    random_rows = []
    for s in all_sizes:
        row: dict[str, Any] = {"size": s}
        for key in (*CRITERIA, "median_pairwise_d2"):
            vals = [m[key] for m in rand_by_size[s] if m[key] is not None]
            row[key] = _stats(vals) if vals else None
        random_rows.append(row)
    return random_rows, rand_by_size


def _design_doc(d, ev, sizes, rand_by_size, jitter: float, strain, labels) -> dict:
    """One design's entry of metrics.json: its metrics per size against the random ones."""
    rows = []
    for s in sizes:
        m: dict[str, Any] = {"size": s, **size_metrics(ev, s, jitter)}
        m["beats_random"] = {
            key: _num(beaten_fraction(m[key], [r[key] for r in rand_by_size[s]], larger))
            for key, larger in CRITERIA.items()
        }
        rows.append(m)
    psi = None if d.psi is None else np.asarray(d.psi, dtype=np.float64)
    return {
        "name": d.name,
        "path": str(d.path),
        "method": d.method,
        "n": int(len(d.index)),
        "conditional": bool(d.conditional),
        "psi_last_d2": None if psi is None or not len(psi) or not d.ordered else _num(psi[-1]),
        "ordered": bool(d.ordered),
        "refine": d.refine,
        "metrics": rows,
        "strain_norm": None if strain is None else _stats(strain[d.index]),
        "structure_share": None if labels is None else structure_shares(labels[d.index]),
    }


def _random_annotations(revals, strain, labels) -> dict:
    rand_idx = np.concatenate([r.index for r in revals]) if revals else np.empty(0, np.int64)
    return {
        "strain_norm": None if strain is None or not len(rand_idx) else _stats(strain[rand_idx]),
        "structure_share": None
        if labels is None or not len(rand_idx)
        else structure_shares(labels[rand_idx]),
    }


def _document(n, pool, seed, n_random, jitter, design_docs, random_rows, strain, labels) -> dict:
    """The metrics.json document (without the random designs' annotations)."""
    return {
        "format": "mlpdesign-report",
        "format_version": METRICS_FORMAT_VERSION,
        "distance": "D2 = k(p,p) + k(q,q) - 2 k(p,q), the squared kernel distance (paper eq. 2;"
        " in [0, 2] on the normalised kernel); *_d = sqrt(D2); psi is D2 at pick time",
        "criteria": {
            "min_pairwise_d2": "smallest pairwise D2 in the design (max-min; larger is better)",
            "covering_radius_d2": "largest D2 from any pool candidate to its nearest design "
            "point (fill distance; smaller is better)",
            "logdet_k": "log det(K + jitter I) of the design's kernel matrix (MaxEnt; larger "
            "is better)",
            "beats_random": "fraction of the random designs of the same size that the design "
            "strictly beats on each criterion",
        },
        "logdet_jitter": float(jitter),
        "seed": int(seed),
        "n_random": int(n_random),
        "pool": {
            **(pool or {}),
            "n_candidates": int(n),
            "strain_norm": None if strain is None else _stats(strain),
            "structure_share": None if labels is None else structure_shares(labels),
        },
        "designs": design_docs,
        "random": {"metrics": random_rows},
        "figures": [],
    }


def compute(
    oracle: Any,
    designs: Sequence[ReportDesign],
    *,
    sizes: Sequence[int] | None = None,
    n_random: int = 20,
    seed: int = 1,
    jitter: float = DEFAULT_JITTER,
    structure: Sequence[str] | None = None,
    F: np.ndarray | None = None,
    pool: dict | None = None,
    chunk: int | None = None,
    block: int = 256,
    progress: Any = None,
    covering: Any = None,
    cover_targets: Sequence[float] = DEFAULT_COVER_TARGETS,
    n_atoms: Sequence[int] | None = None,
    cost_exponent: float = 3.0,
) -> ReportData:
    """Evaluate ``designs`` and ``n_random`` seeded random designs on the same pool.

    ``n_atoms`` (per candidate): each design's total atoms and relative DFT cost
    ``sum n_atoms ** cost_exponent`` (plane-wave DFT scales about as n^3).

    Random design r is one draw of ``max size`` candidates; its prefixes are the random
    designs of each smaller size, so every size is compared against the same R draws.
    ``structure`` (labels) and ``F`` ((N, 9) deformations) are optional pool annotations
    for the strain and structure-share statistics. ``pool`` is extra provenance for the JSON.
    """
    oracle = as_oracle(oracle)
    if not designs:
        raise MlpdesignError("nothing to report: give at least one design")
    if n_random < 0:
        raise MlpdesignError(f"--random must be >= 0, got {n_random}")
    if not jitter >= 0:
        raise MlpdesignError(f"the jitter must be >= 0, got {jitter}")
    for d in designs:
        if len(d.index) == 0:
            raise MlpdesignError(f"design {d.name!r} is empty")
    per_design_sizes = _parse_sizes(sizes, designs)
    n_max = max(len(d.index) for d in designs)
    randoms = random_designs(oracle.n, n_max, n_random, seed) if n_random else []
    evals = evaluate(
        oracle,
        [d.index for d in designs] + randoms,
        chunk=chunk,
        block=block,
        progress=progress,
        covering=covering,
    )
    evals, revals = evals[: len(designs)], evals[len(designs) :]

    strain, labels = _annotations(oracle.n, F, structure)
    random_rows, rand_by_size = _random_rows(revals, per_design_sizes, jitter)
    design_docs = [
        _design_doc(d, ev, ss, rand_by_size, jitter, strain, labels)
        for d, ev, ss in zip(designs, evals, per_design_sizes, strict=True)
    ]
    for doc, ev in zip(design_docs, evals, strict=True):
        ordered = doc["ordered"]
        doc["cover_targets"] = cover_sizes(ev.covering, cover_targets) if ordered else None
        if n_atoms is not None:
            doc.update(design_cost(np.asarray(n_atoms)[ev.index], cost_exponent))
    doc = _document(
        oracle.n, pool, seed, n_random, jitter, design_docs, random_rows, strain, labels
    )
    doc["random"].update(_random_annotations(revals, strain, labels))
    return ReportData(doc, list(designs), evals, revals, strain, labels)


def format_text(metrics: dict) -> str:
    """A terminal table: one line per design and size, random medians beside."""
    head = (
        f"{'design':<20} {'size':>6} {'min D2':>10} {'rnd med':>10} {'cover D2':>10} "
        f"{'rnd med':>10} {'logdet K':>11} {'rnd med':>11}  beats random (mm/cov/ent)"
    )
    lines = [
        f"pool: {metrics['pool']['n_candidates']} candidates; {metrics['n_random']} random "
        f"designs (seed {metrics['seed']}); logdet jitter {metrics['logdet_jitter']:g}",
        "D2: squared kernel distance (paper eq. 2); min D2 = max-min criterion (larger is "
        "better), cover D2 = covering radius (smaller is better)",
        head,
        "-" * len(head),
    ]
    rnd = {r["size"]: r for r in metrics["random"]["metrics"]}

    def f(x: float | None, w: int, p: str = ".4g") -> str:
        return f"{'-':>{w}}" if x is None else f"{x:>{w}{p}}"

    def med(size: int, key: str) -> float | None:
        st = rnd.get(size, {}).get(key)
        return None if st is None else st["median"]

    for d in metrics["designs"]:
        for m in d["metrics"]:
            s = m["size"]
            b = m["beats_random"]
            beats = "/".join("-" if b[k] is None else f"{100 * b[k]:.0f}%" for k in CRITERIA)
            lines.append(
                f"{d['name'][:20]:<20} {s:>6} {f(m['min_pairwise_d2'], 10)} "
                f"{f(med(s, 'min_pairwise_d2'), 10)} {f(m['covering_radius_d2'], 10)} "
                f"{f(med(s, 'covering_radius_d2'), 10)} {f(m['logdet_k'], 11, '.2f')} "
                f"{f(med(s, 'logdet_k'), 11, '.2f')}  {beats}"
            )
    lines += _refine_lines(metrics["designs"])
    curves = [d for d in metrics["designs"] if d.get("cover_targets")]
    targets = list(curves[0]["cover_targets"]) if curves else []
    if targets:
        lines.append(
            f"design size at which the covering radius D2 first falls below {' / '.join(targets)}"
            " (-: not reached):"
        )
        for d in curves:
            sizes = ["-" if m is None else str(m) for m in d["cover_targets"].values()]
            lines.append(f"  {d['name'][:20]:<20} {' / '.join(sizes)}")
    costed = [d for d in metrics["designs"] if "dft_cost" in d]
    if costed:
        p = costed[0]["cost_exponent"]
        lines.append(f"cost of each design: total atoms, relative DFT cost (sum n_atoms^{p:g}):")
        for d in costed:
            lines.append(f"  {d['name'][:20]:<20} {d['total_atoms']} atoms, {d['dft_cost']:.4g}")
    return "\n".join(lines) + "\n"


def _refine_lines(designs: list[dict]) -> list[str]:
    """The table's lines on refined designs: swaps, objective before and after."""
    out = []
    for d in designs:
        ex = d.get("refine")
        if ex is None and d.get("ordered", True):
            continue
        line = f"  {d['name'][:20]:<20} an unordered set: only its full size is measured"
        if ex:
            b, a = ex.get("objective_before"), ex.get("objective_after")
            f = lambda x: "-" if x is None else f"{x:.6g}"  # noqa: E731
            line += (
                f"; refined by {ex.get('method', 'exchange')}: {ex.get('n_swaps')} swaps, "
                f"{ex.get('objective')} {f(b)} -> {f(a)}"
            )
        out.append(line)
    if out:
        out.insert(0, "sets (select --refine exchange; no prefix is a design, no design curve):")
    return out


def refine_info(attrs: dict) -> dict | None:
    """A selection's exchange (its ``refine`` attributes) for metrics.json, or None."""
    if "refine" not in attrs:
        return None

    def num(k: str):
        v = attrs.get(k)
        try:
            return None if v is None else float(v)
        except (TypeError, ValueError):
            return None

    n = attrs.get("n_swaps")
    return {
        "method": str(attrs.get("refine")),
        "objective": str(attrs.get("objective", "")),
        "objective_before": num("objective_before"),
        "objective_after": num("objective_after"),
        "n_swaps": None if n is None else int(n),
        "tol": num("refine_tol"),
    }


# --------------------------------------------------------------------------- stores


def short_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique names for the selections: file stems, else file names, else paths."""
    for key in (lambda p: p.stem, lambda p: p.name, lambda p: str(p)):
        names = [key(Path(p)) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [f"{n}#{i + 1}" for i, n in enumerate(names)]


def design_from_selection(sel: Any, store: Any, name: str, path: str | os.PathLike) -> ReportDesign:
    """Map a loaded selection onto rows of ``store`` (by candidate id), refusing another pool."""
    if sel.pool_sha256 and store.pool_sha256 and sel.pool_sha256 != store.pool_sha256:
        raise MlpdesignError(
            f"{path} was selected from a different pool (sha256 {sel.pool_sha256[:12]}…) than "
            f"{store.path} describes (sha256 {store.pool_sha256[:12]}…)"
        )
    cid = np.asarray(sel.candidate_id, dtype=np.int64)
    ids = np.asarray(store.candidate_id, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids, cid, sorter=order)
    pos = np.minimum(pos, len(ids) - 1)
    row = order[pos] if len(ids) else pos
    missing = cid[(len(ids) == 0) | (ids[row] != cid)] if len(cid) else cid[:0]
    if len(missing):
        raise MlpdesignError(
            f"{path}: candidate {int(missing[0])} is not in {store.path} "
            f"({len(missing)} of {len(cid)} picks missing)"
        )
    attrs = dict(getattr(sel, "attrs", {}) or {})
    given = attrs.get("given", "[]")
    try:
        given = json.loads(given) if isinstance(given, str) else given
    except json.JSONDecodeError:
        given = [given]
    psi = getattr(sel, "psi", None)
    return ReportDesign(
        name=name,
        index=row.astype(np.int64),
        path=str(path),
        psi=None if psi is None else np.asarray(psi, dtype=np.float64),
        method=str(attrs.get("method", "")),
        conditional=bool(given),
        ordered=attrs.get("ordered", True) is not False,
        refine=refine_info(attrs),
    )


def selection_kernel_options(sel: Any) -> dict:
    """The kernel options a selection was made with (its ``kernel`` attribute), as a dict."""
    k = (getattr(sel, "attrs", {}) or {}).get("kernel", {})
    if isinstance(k, str):
        try:
            k = json.loads(k) if k else {}
        except json.JSONDecodeError:
            raise MlpdesignError(f"unreadable kernel attribute in a selection: {k!r}") from None
    return dict(k)


def report(
    store_path: str | os.PathLike,
    selection_paths: Sequence[str | os.PathLike],
    output: str | os.PathLike | None,
    *,
    n_random: int = 20,
    sizes: Sequence[int] | None = None,
    seed: int = 1,
    jitter: float = DEFAULT_JITTER,
    bins: int = DEFAULT_BINS,
    kernel: dict | None = None,
    force: bool = False,
    show_progress: bool = False,
    cover_targets: Sequence[float] = DEFAULT_COVER_TARGETS,
    cost_exponent: float = 3.0,
) -> ReportData:
    """Measure selections of a store against random designs; write ``metrics.json`` + PNGs.

    ``kernel``: kernel options (as stored in a selection's ``kernel`` attribute); default:
    those the first selection was made with, so the report measures the distance the design
    optimised. The output folder is written atomically (nothing half-written on failure);
    ``output=None`` only computes (no files, no figures).
    """
    from mlpdesign.io.atomic import atomic_dir, check_output_dir
    from mlpdesign.io.selection import load_selection
    from mlpdesign.io.store import open_store
    from mlpdesign.progress import progress
    from mlpdesign.report.figures import write_figures

    if not selection_paths:
        raise MlpdesignError("give at least one selection file")
    if bins < 1:
        raise MlpdesignError(f"--bins must be >= 1, got {bins}")
    if output is not None:
        check_output_dir(output, force)
    sels = [load_selection(p) for p in selection_paths]
    # the kernel's load checks the store's values as it reads them (one read, not two)
    with open_store(store_path, check=False) as store:
        names = short_names(selection_paths)
        designs = [
            design_from_selection(s, store, n, p)
            for s, n, p in zip(sels, names, selection_paths, strict=True)
        ]
        opts = dict(kernel) if kernel is not None else selection_kernel_options(sels[0])
        oracle = store_oracle(store, opts)
        bar = progress(store.n_configs, "report", unit="cand", enabled=show_progress)
        with all_cpus():
            data = compute(
                oracle,
                designs,
                sizes=sizes,
                n_random=n_random,
                seed=seed,
                jitter=jitter,
                structure=store.structure,
                F=store.F,
                progress=bar,
                pool=pool_info(store, store_path, opts),
                cover_targets=cover_targets,
                n_atoms=store.n_atoms,
                cost_exponent=cost_exponent,
            )
        bar.close()
    if output is not None:
        with atomic_dir(output, force) as tmp, all_cpus():
            data.metrics["figures"] = write_figures(data, tmp, bins)
            (tmp / "metrics.json").write_text(json_dumps(data.metrics))
    return data


def pool_info(store, store_path, opts: dict) -> dict:
    """The ``pool`` block of metrics.json: store path, pool checksum, gap string, kernel."""
    return {
        "store": str(store_path),
        "pool_sha256": store.pool_sha256,
        "gap": store.gap,
        "kernel": opts,
    }
