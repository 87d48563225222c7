"""Greedy MaxEnt: lazy = full-row = brute force (picks and σ²), on toy pools and a Zr store,
with and without a given set and strata; set functions against slogdet; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from clihelpers import one_line_error, run
from test_scale import _mpi_missing, mpi_selection

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.selection import load_selection
from mlpdesign.kernels import core as K
from mlpdesign.select import maxent as M


def _given_like(kd: K.KernelData, rows: np.ndarray) -> K.KernelData:
    return K.KernelData([kd.terms[0].like(rows)], np.ones(len(rows)), normalize=kd.normalize)


def _toys():
    rng = np.random.default_rng(5)
    g2 = rng.normal(0, 0.5, (70, 2))
    yield "gauss2d", K.gaussian(g2, 1.0), rng.normal(0.5, 0.5, (6, 2))
    l6 = rng.normal(size=(60, 6)) + 1.0
    yield "linear6", K.linear(l6), rng.normal(size=(4, 6)) + 1.0
    p4 = rng.normal(size=(50, 4)) + 0.5
    yield "poly3", K.polynomial(p4, zeta=3), rng.normal(size=(5, 4)) + 0.5


def _check_same(kd, n, **kw):
    """The three implementations agree; returns the lazy design."""
    a = M.maxent_lazy(kd, n, **kw)
    b = M.maxent_full(kd, n, **kw)
    c = M.maxent_bruteforce(kd, n, **kw)
    assert np.array_equal(a.index, b.index) and np.array_equal(a.index, c.index)
    assert len(set(a.index.tolist())) == len(a.index) == n
    assert np.allclose(a.var, c.var, rtol=1e-8, atol=1e-10)
    assert np.allclose(a.var, b.var, rtol=1e-9, atol=1e-12)
    # each σ² agrees to rtol 1e-8 (above), so the sum of their logs (and the given set's
    # log det) to (n + 1) 1e-8: a raw kernel's σ² near the jitter rounds at ~1e-9 relative
    assert np.isclose(a.logdet(), c.logdet(), rtol=0, atol=1e-8 * (n + 1))
    return a


@pytest.mark.parametrize("name,kd,g", list(_toys()), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("jitter", [1e-6, 1e-2])
def test_lazy_full_bruteforce_agree_on_toy_pools(name, kd, g, jitter):
    a = _check_same(kd, 18, jitter=jitter)
    assert np.all(np.diff(a.var) <= 2 * kd.eps)  # σ² at pick time never increases
    assert a.var[0] == 1 + jitter  # k(x,x) = 1: the first pick (farthest from 0) has 1 + λ
    assert a.stats["evaluations"] < 18 * kd.n  # lazy: not every candidate at every pick
    short = M.maxent_lazy(kd, 7, jitter=jitter)
    assert np.array_equal(short.index, a.index[:7])  # every prefix is the greedy design
    gk = _given_like(kd, g)
    c = _check_same(kd, 12, jitter=jitter, given=gk)
    assert np.all(np.diff(c.var) <= 2 * kd.eps)
    assert c.var[0] < 1 + jitter  # conditioned on the given set
    labels = np.random.default_rng(1).choice(np.array(["a", "b", "c"]), kd.n, p=[0.6, 0.3, 0.1])
    s = _check_same(kd, 15, jitter=jitter, given=gk, strata=labels)
    share = {x: np.mean(labels == x) * 15 for x in "abc"}
    assert all(abs(s.stats["strata"][x] - share[x]) <= 1 for x in "abc")


def test_each_pick_maximises_the_log_det():
    """Pick k is the argmax over candidates of σ²(x | T) computed by solving directly."""
    rng = np.random.default_rng(3)
    kd = K.gaussian(rng.normal(0, 0.7, (80, 3)), 1.0)
    d = M.maxent_lazy(kd, 10, jitter=1e-4)
    Kall = kd.k_block(np.arange(kd.n), np.arange(kd.n))
    for k in range(1, 10):
        T = d.index[:k]
        A = Kall[np.ix_(T, T)] + 1e-4 * np.eye(k)
        var = 1 + 1e-4 - np.einsum("ij,ji->i", Kall[:, T], np.linalg.solve(A, Kall[T, :]))
        var[T] = -np.inf
        assert int(np.argmax(var)) == d.index[k]
        assert np.isclose(var[d.index[k]], d.var[k], rtol=0, atol=1e-10)


def test_ties_lowest_index_and_tolerance():
    X = np.array([[0.0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])
    kd = K.gaussian(X, 1.0)
    d = M.maxent_lazy(kd, 5, jitter=1e-6)
    # first: farthest from candidate 0, the four unit points tie (lowest: 1); then its
    # opposite; then 3 and 4 (mirror images about the x axis) tie: lowest index
    assert d.index.tolist()[:3] == [1, 2, 3]
    assert np.array_equal(d.index, M.maxent_bruteforce(kd, 5, jitter=1e-6).index)
    wide = M.maxent_lazy(kd, 3, jitter=1e-6, tol=1.0)  # everything ties: lowest index
    assert wide.index.tolist() == [1, 0, 2]
    assert np.array_equal(wide.index, M.maxent_full(kd, 3, jitter=1e-6, tol=1.0).index)


def test_cache_eviction_and_pieces_keep_the_picks():
    rng = np.random.default_rng(4)
    kd = K.gaussian(rng.normal(0, 0.5, (600, 2)), 0.7)
    a = M.maxent_lazy(kd, 40)
    b = M.maxent_lazy(kd, 40, cache_bytes=8 * 3000)
    assert b.stats["evictions"] > 0 and a.stats["evictions"] == 0
    assert np.array_equal(a.index, b.index)
    assert np.array_equal(a.index, M.maxent_full(kd, 40).index)
    assert np.allclose(a.var, b.var, rtol=0, atol=1e-12)
    big = K.gaussian(rng.normal(0, 0.5, (2 * K.PIECE + 5, 2)), 0.7)  # rows in pieces
    c, f = M.maxent_lazy(big, 25), M.maxent_full(big, 25)
    assert np.array_equal(c.index, f.index)
    assert c.stats["evaluations"] < 25 * big.n / 2


def test_first_pick_forced():
    rng = np.random.default_rng(6)
    kd = K.gaussian(rng.normal(0, 0.5, (40, 2)), 1.0)
    a = M.maxent_lazy(kd, 8, first=17)
    assert a.index[0] == 17
    assert np.array_equal(a.index, M.maxent_bruteforce(kd, 8, first=17).index)
    assert np.array_equal(a.index, M.maxent_full(kd, 8, first=17).index)


@pytest.mark.parametrize("mode", ["normalized", "raw"])
def test_lazy_full_bruteforce_agree_on_zr_store(zr_kernels, mode):
    kernels, labels = zr_kernels
    pool, given = kernels[mode]
    assert len(np.unique(labels)) >= 2
    a = _check_same(pool, 14)
    assert np.all(np.diff(a.var) <= 2 * pool.eps)
    _check_same(pool, 10, given=given)
    _check_same(pool, 12, given=given, strata=labels, jitter=1e-4)
    _check_same(pool, 12, strata=labels)


def test_set_functions_against_slogdet():
    rng = np.random.default_rng(7)
    kd = K.gaussian(rng.normal(0, 0.6, (50, 2)), 1.0)
    gk = _given_like(kd, rng.normal(0, 0.6, (5, 2)))
    orc = M.KernelOracle(kd, gk)
    lam = 1e-3
    pts = [-1, -3, 4, 9, 20, 33]
    A = orc.tt(pts) + lam * np.eye(len(pts))
    ld = np.linalg.slogdet(A)[1]
    assert np.isclose(M.log_det_set(orc, pts, lam), ld, rtol=0, atol=1e-10)
    loo = M.loo_variances(orc, pts, lam)
    for t in range(len(pts)):
        rest = [p for i, p in enumerate(pts) if i != t]
        ref = np.exp(ld - np.linalg.slogdet(orc.tt(rest) + lam * np.eye(len(rest)))[1])
        assert np.isclose(loo[t], ref, rtol=1e-9, atol=0)
    var = M.variances_given(orc, pts, lam, block=7)
    for x in (0, 4, 11, 49):
        ref = np.exp(np.linalg.slogdet(orc.tt(pts + [x]) + lam * np.eye(7))[1] - ld)
        assert np.isclose(var[x], ref, rtol=0, atol=1e-10)
    assert var[4] < 2.1 * lam  # a member: only the jitter is left
    d = M.maxent_lazy(kd, 6, jitter=lam, given=gk)
    allg = [-1 - j for j in range(5)]
    assert np.isclose(
        d.logdet(), M.log_det_set(orc, allg + d.index.tolist(), lam), rtol=0, atol=1e-9
    )
    last = M.variances_given(orc, allg + d.index[:5].tolist(), lam)
    assert np.isclose(last[d.index[5]], d.var[5], rtol=0, atol=1e-12)
    assert M.loo_variances(orc, [], lam).shape == (0,)


def test_bad_input():
    kd = K.gaussian(np.random.default_rng(0).normal(size=(10, 2)), 1.0)
    for fn in (M.maxent_lazy, M.maxent_full, M.maxent_bruteforce):
        with pytest.raises(MlpdesignError, match="jitter must be a positive"):
            fn(kd, 3, jitter=0.0)
        with pytest.raises(MlpdesignError, match="jitter must be a positive"):
            fn(kd, 3, jitter=-1e-6)
        with pytest.raises(MlpdesignError, match="larger than the pool"):
            fn(kd, 11)
        with pytest.raises(MlpdesignError, match="at least 1"):
            fn(kd, 0)
        with pytest.raises(MlpdesignError, match="outside the pool"):
            fn(kd, 3, first=10)
        with pytest.raises(MlpdesignError, match="jitter must be a positive"):
            fn(kd, 3, jitter=float("nan"))
    other = K.linear(np.random.default_rng(0).normal(size=(4, 2)))
    with pytest.raises(MlpdesignError, match="another kernel"):
        M.maxent_lazy(kd, 3, given=other)
    with pytest.raises(MlpdesignError, match="jitter must be a positive"):
        M.log_det_set(M.KernelOracle(kd), [0, 1], 0.0)


# ---------------------------------------------------------------- the criterion on a store


def _select(store, out, n, *args):
    res = run("select", store, "-n", n, "--criterion", "maxent", *args, "-o", out, "-q")
    assert res.exit_code == 0, (res.output, res.stderr)
    return load_selection(out)


def test_cli_maxent_memory_streamed_mpi_reference(small_store, tmp_path):
    """Same picks in memory, streamed and under mpiexec -n 3, equal to the brute force
    (stratified by structure, as select defaults to on this pool); σ² and jitter stored."""
    from mlpdesign.io.store import open_store
    from mlpdesign.select.stage import strata_labels

    mem = _select(small_store, tmp_path / "mem.h5", 14)
    streamed = _select(
        small_store, tmp_path / "str.json", 14, "--memory-limit", "3M", "--block-rows", 8
    )
    assert mem.method == "maxent" and float(mem.attrs["jitter"]) == 1e-6
    assert np.array_equal(streamed.index, mem.index)
    assert np.allclose(streamed.var, mem.var, rtol=0, atol=1e-12)
    with open_store(small_store) as st:
        kd = K.StoreKernel(st)
        labels = strata_labels(st, small_store)
    assert labels is not None
    ref = M.maxent_bruteforce(kd, 14, strata=labels)
    assert np.array_equal(ref.index, mem.index)
    assert np.allclose(ref.var, mem.var, rtol=0, atol=1e-10)
    assert mem.var[0] == 1 + 1e-6 and np.isinf(mem.psi[0])  # Psi column stays Psi
    D = kd.d2_block(mem.index, mem.index)
    psi = [D[k, :k].min() for k in range(1, 14)]
    assert np.allclose(mem.psi[1:], psi, rtol=0, atol=4 * kd.eps)
    if _mpi_missing() is None:
        args = ["-n", 14, "--criterion", "maxent"]
        res, mpi = mpi_selection(3, small_store, tmp_path / "mpi.h5", *args, cwd=tmp_path)
        assert np.array_equal(mpi.index, mem.index), res.stderr
        assert np.allclose(mpi.var, mem.var, rtol=0, atol=1e-12)


def test_cli_maxent_plain_given_continue_and_formats(small_pool, small_store, tmp_path):
    from ase.io import read, write

    from mlpdesign.io.store import open_store

    _select(small_store, tmp_path / "a.h5", 6, "--no-stratify", "--jitter", 1e-4)
    res = run(
        "select", small_store, "-n", 13, "--continue", tmp_path / "a.h5", "-o", tmp_path / "b.txt"
    )
    assert res.exit_code == 0, res.stderr
    assert "last var" in res.stderr
    b = load_selection(tmp_path / "b.txt")
    c = _select(small_store, tmp_path / "c.h5", 13, "--no-stratify", "--jitter", 1e-4)
    assert np.array_equal(b.candidate_id, c.candidate_id)
    assert np.allclose(b.var, c.var, rtol=0, atol=1e-12)  # txt keeps var too
    assert float(b.attrs["jitter"]) == 1e-4 and b.method == "maxent"
    with open_store(small_store) as st:
        kd = K.StoreKernel(st)
    assert np.array_equal(M.maxent_bruteforce(kd, 13, jitter=1e-4).index, c.index)
    # conditional on a given set: the pool's first 8 configs, as an extxyz
    write(tmp_path / "given.xyz", read(small_pool, ":8"))
    g = _select(
        small_store, tmp_path / "g.h5", 5, "--no-stratify", "--given", tmp_path / "given.xyz"
    )
    assert not set(g.index.tolist()) & set(range(8))  # duplicates of the given set: never
    with open_store(small_store) as st:
        gk = K.StoreKernel(st, configs=(0, 8), like=kd)
    ref = M.maxent_bruteforce(kd, 5, given=gk)
    assert np.array_equal(ref.index, g.index)
    assert np.allclose(ref.var, g.var, rtol=0, atol=1e-9)
    assert g.var[0] < 1  # conditioned


def test_cli_maxent_bad_input(small_store, tmp_path):
    out = tmp_path / "x.h5"
    for args in (["--jitter", 0], ["--jitter", -1e-6], ["--jitter", "nan"]):
        res = run("select", small_store, "-n", 5, "--criterion", "maxent", *args, "-o", out)
        assert "jitter" in one_line_error(res)
        assert not out.exists()
    res = run("select", small_store, "-n", 5, "--jitter", 1e-4, "-o", out)
    assert "--jitter is for --criterion maxent" in one_line_error(res)
    _select(small_store, tmp_path / "a.h5", 4)
    res = run(
        "select",
        small_store,
        "-n",
        6,
        "--continue",
        tmp_path / "a.h5",
        "--jitter",
        1e-3,
        "-o",
        out,
    )
    assert "jitter" in one_line_error(res)
    assert not out.exists()
    old = run("select", small_store, "-n", 4, "-o", tmp_path / "mm.h5", "-q")
    assert old.exit_code == 0 and load_selection(tmp_path / "mm.h5").var is None
