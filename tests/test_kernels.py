"""Kernels: pair embedding vs the brute-force double sum, SOAP dot^zeta, modes, error bound."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels import core as K


def _random_cells(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        nat = int(rng.integers(1, 5))
        cell = np.diag(rng.uniform(3.0, 5.0, 3)) + rng.uniform(-0.5, 0.5, (3, 3))
        out.append(
            Atoms("Zr" * nat, scaled_positions=rng.uniform(0, 1, (nat, 3)), cell=cell, pbc=True)
        )
    return out


def _pairs(cells, cutoff):
    """Ordered pair distances within ``cutoff`` (as QUIP's distance_2b gives them) with
    smooth cutoff weights, in CSR form."""
    rs, ws, counts = [], [], []
    for a in cells:
        d = neighbor_list("d", a, cutoff)
        d = np.sort(d)
        w = np.where(d < cutoff - 0.5, 1.0, 0.5 * (1 + np.cos(np.pi * (d - cutoff + 0.5) / 0.5)))
        rs.append(d)
        ws.append(w)
        counts.append(len(d))
    return np.concatenate(rs), np.concatenate(ws), np.r_[0, np.cumsum(counts)]


def test_pair_embedding_matches_double_sum_on_random_cells():
    cells = _random_cells(12)
    r, w, off = _pairs(cells, 7.0)
    theta, delta = 0.3, 0.8
    kd = K.KernelData([K.pair_term(r, w, off, theta, 7.0, delta)], normalize=False)
    worst = 0.0
    for i in range(len(cells)):
        a = slice(off[i], off[i + 1])
        row = kd.k_block([i], np.arange(len(cells)))[0]
        for j in range(len(cells)):
            b = slice(off[j], off[j + 1])
            ref = delta**2 * K.pair_kernel_bruteforce(r[a], w[a], r[b], w[b], theta)
            worst = max(worst, abs(row[j] - ref) / abs(ref))
    assert off[-1] > 1000  # hundreds of pairs per cell: a real test of the double sum
    assert worst < 1e-8


def test_pair_embedding_same_bits_for_any_block_and_threads(monkeypatch):
    rng = np.random.default_rng(0)
    counts = np.array([5, 1, 300, 2, 0, 7, 400])
    off = np.r_[0, np.cumsum(counts)]
    r = np.concatenate([np.sort(rng.uniform(2, 6, c)) for c in counts])
    w = rng.uniform(0.5, 1, len(r))
    grid = K.pair_grid(7.0, 0.3)
    ref = K.pair_embedding(r, w, off, 0.3, grid)
    for threads in ("1", "2"):
        monkeypatch.setenv("MLPDESIGN_THREADS", threads)
        for block in (1, 3, 299, 301):
            assert np.array_equal(K.pair_embedding(r, w, off, 0.3, grid, block=block), ref)


def test_pair_grid_default_spacing_and_range():
    g = K.pair_grid(7.0, 0.3)
    assert np.allclose(np.diff(g), 0.1)
    assert g[0] <= -2.1 + 1e-12 and g[-1] >= 7.0 + 2.1 - 1e-12
    with pytest.raises(MlpdesignError, match="outside the embedding grid"):
        K.pair_embedding([8.0], [1.0], [0, 1], 0.3, K.pair_grid(5.0, 0.3))


def _soap_like(n_cfg: int, dim: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, n_cfg)
    rows = rng.normal(size=(counts.sum(), dim)) + 2.0
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows, np.r_[0, np.cumsum(counts)]


def test_soap_dot_power_matches_double_loop():
    rows, off = _soap_like(15, 20)
    w = np.random.default_rng(2).uniform(0.5, 1.0, len(rows))
    kd = K.KernelData([K.Term.dot(rows, off, w, zeta=4, delta=0.3)], normalize=False)
    Kmat = kd.k_block(np.arange(15), np.arange(15))
    for i in range(15):
        for j in range(15):
            a, b = slice(off[i], off[i + 1]), slice(off[j], off[j + 1])
            ref = 0.09 * np.sum(np.outer(w[a], w[b]) * (rows[a] @ rows[b].T) ** 4)
            assert Kmat[i, j] == pytest.approx(ref, rel=1e-12)
    assert np.allclose(np.diag(Kmat), kd.diag, rtol=1e-12)


def _two_term(dtype="float64", **mode):
    cells = _random_cells(10, seed=3)
    r, w, off = _pairs(cells, 6.0)
    rows, soff = _soap_like(10, 12, seed=4)
    terms = [
        K.pair_term(r, w, off, 0.3, 6.0, 0.8, dtype=dtype),
        K.Term.dot(rows, soff, None, zeta=2, delta=0.3, dtype=dtype),
    ]
    return K.KernelData(terms, np.diff(soff), **mode)


@pytest.mark.parametrize(
    "mode", [{}, {"balance": True}, {"normalize": False}, {"normalize": False, "per_atom": True}]
)
def test_modes_match_their_formulas(mode):
    kd = _two_term(**mode)
    idx = np.arange(kd.n)
    Kt = [K.KernelData([t], kd.n_atoms, normalize=False).k_block(idx, idx) for t in kd.terms]
    Ksum = Kt[0] + Kt[1]
    if mode.get("balance"):
        w = np.array([0.64, 0.09]) / 0.73
        k = sum(
            wt * Ki / np.sqrt(np.outer(np.diag(Ki), np.diag(Ki)))
            for wt, Ki in zip(w, Kt, strict=True)
        )
    elif mode.get("normalize", True):
        k = Ksum / np.sqrt(np.outer(np.diag(Ksum), np.diag(Ksum)))
    elif mode.get("per_atom"):
        k = Ksum / np.outer(kd.n_atoms, kd.n_atoms)
    else:
        k = Ksum
    d2 = np.diag(k)[:, None] + np.diag(k)[None, :] - 2 * k
    assert np.allclose(kd.k_block(idx, idx), k, rtol=1e-12, atol=1e-14 * np.abs(k).max())
    got = kd.d2_block(idx, idx)
    assert np.allclose(got, np.maximum(d2, 0), rtol=1e-10, atol=4 * kd.eps)
    assert np.all(np.abs(np.diag(got)) <= kd.eps)
    if mode.get("normalize", True):
        assert got.max() <= 2.0


def test_range_subset_and_row_agree():
    kd = _two_term()
    q = kd.query(3)
    full = kd.d2_row(3)
    assert np.allclose(kd.d2_range(q, 2, 7), full[2:7], rtol=0, atol=kd.eps)
    idx = np.array([9, 0, 4])
    assert np.allclose(kd.d2_subset(q, idx), full[idx], rtol=0, atol=kd.eps)


@pytest.mark.parametrize(
    "mode", [{}, {"balance": True}, {"normalize": False}, {"normalize": False, "per_atom": True}]
)
def test_d2_below_is_exact_below_psi_and_a_bound_above(mode):
    kd = _two_term(**mode)
    for i in range(kd.n):
        full = kd.d2_row(i)
        for psi in (np.full(kd.n, np.quantile(full, 0.3)), np.full(kd.n, np.median(full))):
            got = kd.d2_below(kd.query(i), np.arange(kd.n), psi)
            low = full < psi
            assert np.allclose(got[low], full[low], rtol=0, atol=kd.eps)
            assert np.all(got[~low] >= psi[~low]) and np.all(got <= full + kd.eps)


def test_float32_error_is_within_the_bound():
    k64, k32 = _two_term("float64"), _two_term("float32")
    assert k32.eps > k64.eps
    for i in range(k64.n):
        assert np.all(np.abs(k32.d2_row(i) - k64.d2_row(i)) <= k32.eps)


def test_toy_kernels():
    X = np.random.default_rng(0).normal(size=(30, 2))
    g = K.gaussian(X, 0.7)
    d = np.sum((X[:, None] - X[None]) ** 2, axis=-1)
    assert np.allclose(
        g.d2_block(range(30), range(30)), 2 - 2 * np.exp(-d / (2 * 0.49)), atol=1e-12
    )
    lin = K.linear(X + 5.0, normalize=False)
    assert np.allclose(lin.d2_row(0), d[0], atol=1e-10)
    cos = K.linear(X)
    u = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert np.allclose(cos.k_block([0, 1], range(30)), u[[0, 1]] @ u.T, atol=1e-12)
    poly = K.polynomial(X, zeta=3, normalize=False)
    assert np.allclose(poly.k_block([2], range(30))[0], (X[2] @ X.T) ** 3, rtol=1e-12)


def test_min_d2_to_a_set():
    kd = _two_term()
    got = kd.min_d2_to([1, 5])
    ref = np.minimum(kd.d2_row(1), kd.d2_row(5))
    assert np.allclose(got, ref, atol=kd.eps)
    assert got[1] <= kd.eps and got[5] <= kd.eps


def test_bad_inputs():
    with pytest.raises(MlpdesignError, match="NaN"):
        K.linear(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(MlpdesignError, match="zeta"):
        K.Term.dot(np.ones((2, 2)), zeta=1.5)
    with pytest.raises(MlpdesignError, match="zero kernel"):
        K.linear(np.array([[0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(MlpdesignError, match="offsets"):
        K.Term.dot(np.ones((3, 2)), offsets=[0, 2])


def test_store_load_embeds_pairs_block_by_block_with_the_bits_of_one_pass(small_store, monkeypatch):
    """A store's pair term is embedded config block by config block (the distances of one
    block in memory at a time): the same rows, centring and kernel as the embedding of
    all the distances at once, for any block size."""
    from mlpdesign.io.store import open_store

    with open_store(small_store) as s:
        plan = K.term_plans(s.descriptors)[0]
        r, w, off = s.f["descriptors/0/rows"][()], s.weights(0), s.offsets(0)
        for rows in (K.CENTRE_ROWS, 7, 1):  # pieces of the centring (and of the embedding)
            monkeypatch.setattr(K, "CENTRE_ROWS", rows)
            term = K.StoreKernel(s).terms[0]
            ref = K.pair_term(r, w, off, plan["theta"], plan["cutoff"], plan["delta"])
            assert np.array_equal(term.rows, ref.rows) and np.array_equal(term.mu, ref.mu)
            assert np.array_equal(term.aux, ref.aux) and term.meta == ref.meta


def test_items_map_same_results_and_order_on_threads(monkeypatch):
    """items_map runs items side by side (their D² pieces serially) with the results, and
    the calls of ``done``, in the items' order, the bits of one item at a time."""
    rng = np.random.default_rng(3)
    kd = K.linear(rng.normal(size=(5000, 30)))
    rows = [rng.choice(kd.n, 40, replace=False) for _ in range(5)]
    serial = [kd.d2_block(r, np.arange(kd.n)) for r in rows]
    for threads, fork in ((1, False), (2, False), (3, False), (2, True), (3, True)):
        K.set_threads(threads)
        try:
            done = []
            out = K.items_map(
                lambda r: kd.d2_block(r, np.arange(kd.n)), rows, done.append, fork=fork
            )
        finally:
            K.set_threads(None)
        assert all(np.array_equal(a, b) for a, b in zip(out, serial, strict=True))
        assert [id(x) for x in done] == [id(x) for x in rows]


def test_items_map_forked_workers(monkeypatch):
    """fork=True runs the items in other processes (their pids), passes their errors on,
    and falls back to threads where forking is not allowed (an MPI process)."""
    import os

    K.set_threads(2)
    try:
        pids = K.items_map(lambda _: os.getpid(), list(range(4)), fork=True)
        assert os.getpid() not in pids
        with pytest.raises(ValueError, match="item 2"):
            K.items_map(lambda k: _fail_on(k, 2), list(range(4)), fork=True)
        monkeypatch.setattr(K, "can_fork", lambda: False)
        assert K.items_map(lambda _: os.getpid(), list(range(4)), fork=True) == [os.getpid()] * 4
    finally:
        K.set_threads(None)


def _fail_on(k: int, bad: int) -> int:
    if k == bad:
        raise ValueError(f"item {k}")
    return k


def test_one_row_term_values_equal_the_segment_sum_path():
    """A one-row term (the pair embedding) skips the offsets gather and the segment sum:
    the same bits as the general path (the same term with the shortcut switched off)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 12))
    term = K.Term.dot(X, zeta=2, delta=0.7)
    assert term.one_row and not K.Term.dot(X, offsets=[0, 0, 2] + list(range(3, 301))).one_row
    plain = copy.copy(term)
    plain.__dict__["one_row"] = False  # the cached flag: the general path
    idx = rng.choice(300, 77, replace=False)
    q = X[[5]] - term.mu
    qa, qw = term.aux[[5]], term.weights[[5]]
    for t in (term, plain):
        rows, counts = t.rows_of(idx)
        assert np.array_equal(rows, idx) and np.array_equal(counts, np.ones(77))
    got = term.values(q, qa, qw, *term.rows_of(idx))
    assert np.array_equal(got, plain.values(q, qa, qw, *plain.rows_of(idx)))
    sl = slice(40, 140)
    assert np.array_equal(
        term.values(q, qa, qw, sl, np.ones(100, dtype=np.int64)),
        plain.values(q, qa, qw, sl, np.ones(100, dtype=np.int64)),
    )
