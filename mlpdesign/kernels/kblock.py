"""Kernel blocks k(A, B) between many configurations and many design points, as matrix
products (BLAS level 3) instead of one query at a time.

:meth:`mlpdesign.kernels.core.KernelData.k_subset` compares one query config with many
configs: a matrix-vector product that reads every candidate row once per query. Greedy
MaxEnt needs the kernel between a batch of candidates and the design points added since
their last evaluation, so here both sides are blocks of rows: per term one product
``X_A X_B^T`` of the centred rows, the pair function (``dot``: ``(x.y)^zeta``; ``gauss``:
``exp(-|x-y|^2 / 2 l^2)``) on it, the covariance-cutoff weights and a segment sum over the
rows of each config on both sides; then the mode's combination (normalised, balanced, per
atom or raw), as :mod:`mlpdesign.kernels.core` defines it. The values agree with
``k_subset`` to rounding (different summation order).

Library API::

    Rows.gather(kd, idx)        # configs idx of a KernelData, rows copied per term
    Rows.range(kd, c0, c1)      # configs c0..c1-1, views
    Rows.concat([rows, ...])    # several, in order
    Rows.of_queries(queries)    # design points (core.Query objects, pool or given set)
    Points(kd)                  # a growing set of design points: .add(q), .rows(lo, hi)
    k_block(kd, A: Rows, B: Rows, piece=1 << 22) -> (A.n, B.n) kernel matrix
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlpdesign.kernels.core import KernelData, Query


@dataclass
class Rows:
    """Configs as blocks of rows, per term: centred rows, aux, weights, rows per config;
    and per config: per-term self-kernels ``diag_t`` (n_terms, n), ``diag`` and atoms."""

    rows: list[np.ndarray]
    aux: list[np.ndarray]
    weights: list[np.ndarray]
    counts: list[np.ndarray]
    diag_t: np.ndarray
    diag: np.ndarray
    n_atoms: np.ndarray

    @property
    def n(self) -> int:
        return len(self.diag)

    @classmethod
    def gather(cls, kd: KernelData, idx) -> Rows:
        """Configs ``idx`` of ``kd`` (any order)."""
        idx = np.asarray(idx, dtype=np.int64)
        rows, aux, w, counts = [], [], [], []
        for t in kd.terms:
            starts, cnt = t.offsets[idx], t.offsets[idx + 1] - t.offsets[idx]
            first = np.cumsum(cnt) - cnt
            r = np.repeat(starts - first, cnt) + np.arange(int(cnt.sum()), dtype=np.int64)
            rows.append(t.rows[r])
            aux.append(t.aux[r])
            w.append(t.weights[r])
            counts.append(cnt)
        return cls(rows, aux, w, counts, kd.diag_t[:, idx], kd.diag[idx], kd.n_atoms[idx])

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        """The configs of ``parts``, in order."""
        cat = lambda xs: np.concatenate(xs)  # noqa: E731
        nt = len(parts[0].rows)
        return cls(
            [cat([p.rows[t] for p in parts]) for t in range(nt)],
            [cat([p.aux[t] for p in parts]) for t in range(nt)],
            [cat([p.weights[t] for p in parts]) for t in range(nt)],
            [cat([p.counts[t] for p in parts]) for t in range(nt)],
            np.concatenate([p.diag_t for p in parts], axis=1),
            cat([p.diag for p in parts]),
            cat([p.n_atoms for p in parts]),
        )

    @classmethod
    def range(cls, kd: KernelData, c0: int, c1: int) -> Rows:
        """Configs ``c0 .. c1-1`` of ``kd`` (views: no copy)."""
        rows, aux, w, counts = [], [], [], []
        for t in kd.terms:
            r0, r1 = int(t.offsets[c0]), int(t.offsets[c1])
            rows.append(t.rows[r0:r1])
            aux.append(t.aux[r0:r1])
            w.append(t.weights[r0:r1])
            counts.append(np.diff(t.offsets[c0 : c1 + 1]))
        return cls(rows, aux, w, counts, kd.diag_t[:, c0:c1], kd.diag[c0:c1], kd.n_atoms[c0:c1])

    @classmethod
    def of_queries(cls, queries: list[Query], n_terms: int) -> Rows:
        """Configs given as queries (:meth:`KernelData.query` of a pool or given set)."""
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
        rows = [np.concatenate([q.rows[t] for q in queries]) for t in range(n_terms)]
        return cls(
            rows,
            [cat([q.aux[t] for q in queries]) for t in range(n_terms)],
            [cat([q.weights[t] for q in queries]) for t in range(n_terms)],
            [np.array([len(q.rows[t]) for q in queries], dtype=np.int64) for t in range(n_terms)],
            np.array([q.diag_t for q in queries]).T.reshape(n_terms, len(queries)),
            np.array([q.diag for q in queries], dtype=np.float64),
            np.array([q.n_atoms for q in queries], dtype=np.float64),
        )


class Points:
    """A growing set of design points whose rows are kept stacked in buffers that double
    when full, so adding n points copies O(n) rows and any contiguous run ``lo .. hi-1``
    of them is a :class:`Rows` of views."""

    def __init__(self, kd: KernelData) -> None:
        self.n_terms = len(kd.terms)
        self.n = 0
        self.nrows = [0] * self.n_terms
        self.bufs = [
            [np.zeros((16, t.dim), dtype=t.rows.dtype), np.zeros(16), np.zeros(16)]
            for t in kd.terms
        ]
        self.offsets = [np.zeros(17, dtype=np.int64) for _ in kd.terms]
        self.diag_t = np.zeros((self.n_terms, 16))
        self.diag = np.zeros(16)
        self.n_atoms = np.zeros(16)

    def add(self, q: Query) -> None:
        """Append design point ``q`` (a :class:`~mlpdesign.kernels.core.Query`)."""
        k = self.n
        if k + 1 >= len(self.diag):
            grow = lambda a: np.concatenate([a, np.zeros_like(a)], axis=-1)  # noqa: E731
            self.diag_t, self.diag, self.n_atoms = map(grow, (self.diag_t, self.diag, self.n_atoms))
            self.offsets = [np.concatenate([o, np.zeros_like(o)]) for o in self.offsets]
        for t in range(self.n_terms):
            r = len(q.rows[t])
            r0 = self.nrows[t]
            buf = self.bufs[t]
            if r0 + r > len(buf[0]):
                cap = max(2 * len(buf[0]), r0 + r)
                for i, a in enumerate(buf):
                    big = np.zeros((cap,) + a.shape[1:], dtype=a.dtype)
                    big[:r0] = a[:r0]
                    buf[i] = big
            buf[0][r0 : r0 + r] = q.rows[t]
            buf[1][r0 : r0 + r] = q.aux[t]
            buf[2][r0 : r0 + r] = q.weights[t]
            self.nrows[t] = r0 + r
            self.offsets[t][k + 1] = r0 + r
        self.diag_t[:, k] = q.diag_t
        self.diag[k], self.n_atoms[k] = q.diag, q.n_atoms
        self.n = k + 1

    def rows(self, lo: int, hi: int) -> Rows:
        """Design points ``lo .. hi-1`` as :class:`Rows` (views)."""
        out: list[list] = [[], [], [], []]
        for t in range(self.n_terms):
            off = self.offsets[t]
            r0, r1 = int(off[lo]), int(off[hi])
            for i in range(3):
                out[i].append(self.bufs[t][i][r0:r1])
            out[3].append(np.diff(off[lo : hi + 1]))
        return Rows(*out, self.diag_t[:, lo:hi], self.diag[lo:hi], self.n_atoms[lo:hi])


def _ipow(v: np.ndarray, z: int) -> np.ndarray:
    """``v**z`` (positive integer z) by repeated squaring, reusing ``v``'s memory."""
    if z == 1:
        return v
    base, out = v, None
    while z:
        if z & 1:
            out = base.copy() if out is None else out * base
        z >>= 1
        if z:
            base = base * base if base is v else np.multiply(base, base, out=base)
    return out


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nz = np.flatnonzero(counts > 0)
    starts = (np.cumsum(counts) - counts)[nz]
    return nz, starts


def _term_block(term, A: Rows, B: Rows, t: int) -> np.ndarray:
    """K_t between the configs of A and of B (one product of their rows)."""
    out = np.zeros((A.n, B.n))
    Xa, Xb = A.rows[t], B.rows[t]
    if Xa.shape[0] == 0 or Xb.shape[0] == 0:
        return out
    G = (Xa @ Xb.T).astype(np.float64, copy=False)
    if term.kind == "dot":
        v = G + A.aux[t][:, None]
        v += B.aux[t][None, :] - term.mu @ term.mu
        v = _ipow(v, term.zeta)
    else:
        v = A.aux[t][:, None] + B.aux[t][None, :] - 2.0 * G
        np.maximum(v, 0.0, out=v)
        v *= -0.5 / term.length**2
        np.exp(v, out=v)
    v *= A.weights[t][:, None]
    v *= B.weights[t][None, :]
    na, sa = _segments(A.counts[t])
    nb, sb = _segments(B.counts[t])
    s = np.add.reduceat(np.add.reduceat(v, sa, axis=0), sb, axis=1)
    out[np.ix_(na, nb)] = s
    return term.delta**2 * out


def k_block(kd: KernelData, A: Rows, B: Rows) -> np.ndarray:
    """``(A.n, B.n)`` kernel k in ``kd``'s mode (normalised, balanced, per atom or raw)
    between configs A and B (of ``kd`` or of a compatible KernelData)."""
    Kt = [_term_block(term, A, B, t) for t, term in enumerate(kd.terms)]
    if kd.balance:
        return sum(
            kd.term_weight[t] * Kt[t] / np.sqrt(np.outer(A.diag_t[t], B.diag_t[t]))
            for t in range(len(Kt))
        )
    K = sum(Kt)
    if kd.normalize:
        return K / np.sqrt(np.outer(A.diag, B.diag))
    if kd.per_atom:
        return K / np.outer(A.n_atoms, B.n_atoms)
    return K
