"""What ``mlpdesign tune`` measures on the sample, for one setting of the grid.

The sample's descriptor store is the one ``describe`` writes; the kernel is the one
``select`` builds from it (:class:`mlpdesign.kernels.core.StoreKernel`, normalised, with or
without ``balance``), so every D² reported here is a D² that ``select`` would compute. A
setting that differs from its group's store only in kernel keys gets the store's rows with
its own kernel keys (the store's descriptor specs are replaced in memory, nothing is
re-described).

Per setting: the fraction of overlapping pairs (D² < ``overlap``), of orthogonal pairs
(D² > 2 - ``orthogonal``), D² quantiles, and each kernel term's share, both of the
self-kernel K(c,c) and of the distance itself. The normalised D² splits exactly into
non-negative parts, one per term::

    D²_t(p,q) = K_t(p,p)/K(p,p) + K_t(q,q)/K(q,q) - 2 K_t(p,q)/sqrt(K(p,p) K(q,q))

(with ``balance``: ``w_t (2 - 2 K_t(p,q)/sqrt(K_t(p,p) K_t(q,q)))``), each the squared
distance of the two configs' term-t feature vectors; ``d2_share`` is sum D²_t / sum D².
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.frames import Pool

#: D² quantiles reported per setting (percent).
QUANTILES = (1, 10, 50, 90, 99)
#: Histogram bin edges over [0, 2], uniform in D = sqrt(D²) (so that both ends, D² ≈ 0 and
#: D² ≈ 2, get bins of similar width on the figures' square-root axis); counts per setting
#: are stored in summary.json and drawn in histograms.png.
HIST_EDGES = np.linspace(0.0, np.sqrt(2.0), 81) ** 2
HIST_EDGES[-1] = 2.0


def sample_indices(n_pool: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded uniform sample (without replacement) of the pool."""
    if size >= n_pool:
        return np.arange(n_pool, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_pool, size=size, replace=False)).astype(np.int64)


def write_sample(pool: Pool, idx: np.ndarray, dest: str | os.PathLike) -> Path:
    """The pool positions ``idx`` as one extxyz file ``dest``: an extxyz frame that carries
    its ``candidate_id`` is copied byte for byte (so the sample's descriptors are those of the
    pool's own store); any other frame is written by ASE with its pool ``candidate_id``."""
    import ase.io

    dest = Path(dest)
    with open(dest, "wb") as out:
        for c in idx:
            s, k = pool.locate(int(c))
            index = pool.sources[s].index
            if index is not None and index.has_id is not None and index.has_id[k]:
                with open(index.path, "rb") as src:
                    src.seek(int(index.offsets[k]))
                    out.write(src.read(int(index.offsets[k + 1] - index.offsets[k])))
                continue
            atoms = pool.atoms([int(c)])[0]
            atoms.info["candidate_id"] = int(pool.candidate_id[c])
            text = io.StringIO()
            ase.io.write(text, atoms, format="extxyz")
            out.write(text.getvalue().encode())
    return dest


def with_kernels(store, specs) -> None:
    """Give an open store the kernel keys of ``specs`` (same descriptors, other kernel)."""
    if [d.descriptor for d in store.descriptors] != [s.descriptor for s in specs]:
        raise MlpdesignError("internal error: the sample store holds other descriptors")
    store.descriptors = [
        replace(d, kernel=dict(s.kernel)) for d, s in zip(store.descriptors, specs, strict=True)
    ]


def upper(m: np.ndarray) -> np.ndarray:
    """The pairs i < j of a square matrix, row by row."""
    return m[np.triu_indices(m.shape[0], 1)]


def pair_d2(kd) -> np.ndarray:
    """D² of every pair i < j of the kernel's configs, as ``kd.d2_block`` computes them."""
    idx = np.arange(kd.n)
    return upper(kd.d2_block(idx, idx))


def term_parts(kd) -> list[np.ndarray]:
    """Each term's part D²_t of every pair i < j (see the module doc); they sum to D²."""
    from mlpdesign.kernels.core import KernelData

    idx = np.arange(kd.n)
    iu = np.triu_indices(kd.n, 1)
    parts = []
    for t, term in enumerate(kd.terms):
        Kt = KernelData([term], kd.n_atoms, normalize=False).k_block(idx, idx)[iu]
        if kd.balance:
            dt = kd.diag_t[t]
            part = kd.term_weight[t] * (2.0 - 2.0 * Kt / np.sqrt(dt[iu[0]] * dt[iu[1]]))
        else:
            s = kd.diag_t[t] / kd.diag
            part = s[iu[0]] + s[iu[1]] - 2.0 * Kt / np.sqrt(kd.diag[iu[0]] * kd.diag[iu[1]])
        parts.append(part)
    return parts


def floats_per_config(store) -> float:
    """Descriptor numbers per configuration (rows x dimension, all descriptors): the size of
    the store and the work of one kernel evaluation, the cost that breaks ties."""
    total = sum(store.n_rows(k) * d.dim for k, d in enumerate(store.descriptors))
    return float(total) / store.n_configs


def stats(d2: np.ndarray, overlap: float, orthogonal: float) -> dict:
    """Fractions, counts, quantiles and histogram of the pair distances ``d2``."""
    n = len(d2)
    ov = int(np.count_nonzero(d2 < overlap))
    orth = int(np.count_nonzero(d2 > 2.0 - orthogonal))
    q = np.quantile(d2, [p / 100 for p in QUANTILES]) if n else np.full(len(QUANTILES), np.nan)
    counts, _ = np.histogram(np.clip(d2, 0.0, 2.0), bins=HIST_EDGES)
    return {
        "overlap_pairs": ov,
        "orthogonal_pairs": orth,
        "overlap_fraction": ov / n if n else 0.0,
        "orthogonal_fraction": orth / n if n else 0.0,
        "score": (ov + orth) / n if n else 0.0,
        "quantiles": {f"{p}%": float(v) for p, v in zip(QUANTILES, q, strict=True)},
        "min": float(d2.min()) if n else None,
        "max": float(d2.max()) if n else None,
        "histogram": [int(c) for c in counts],
    }


def measure(store, specs, *, balance: bool, overlap: float, orthogonal: float):
    """Everything reported for one setting; returns ``(record, d2)``."""
    from mlpdesign.kernels.core import StoreKernel

    with_kernels(store, specs)
    kd = StoreKernel(store, normalize=True, balance=balance)
    d2 = pair_d2(kd)
    parts = term_parts(kd)
    total = float(d2.sum())
    if balance:
        kshare = [float(w) for w in kd.term_weight]
    else:
        kshare = [float(x) for x in (kd.diag_t / kd.diag).mean(axis=1)]
    terms = [
        {
            "name": term.name,
            "kernel_share": kshare[t],
            "d2_share": float(parts[t].sum()) / total if total > 0 else 0.0,
        }
        for t, term in enumerate(kd.terms)
    ]
    rec = stats(d2, overlap, orthogonal)
    rec.update(terms=terms, eps=float(kd.eps), floats_per_config=floats_per_config(store))
    return rec, d2


def recommend(records: list[dict], n_pairs: int, tie: float) -> tuple[int, list[int]]:
    """The rule: smallest score (overlap + orthogonal fraction); settings within
    ``(1 + tie) * best + 1/n_pairs`` of it tie, and the tie goes to the fewest descriptor
    numbers per config, then the smaller sum of cutoffs, then the fewest keys changed from
    the starting string, then grid order. Returns (the pick, the tied settings)."""
    best = min(r["score"] for r in records)
    limit = (1.0 + tie) * best + 1.0 / max(1, n_pairs)
    tied = [i for i, r in enumerate(records) if r["score"] <= limit]

    def cost(i: int) -> tuple:
        r = records[i]
        return (r["floats_per_config"], r["cutoff_sum"], r["changed"], i)

    return min(tied, key=cost), tied
