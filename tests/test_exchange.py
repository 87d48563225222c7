"""Fedorov exchange (``select --refine exchange``): the bounded exchange makes the same
swaps and ends at the same set as the brute force (objective recomputed from scratch for
every possible swap), on toy pools and the small Zr store, with a given set and strata."""

from __future__ import annotations

import numpy as np
import pytest

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels import core as K
from mlpdesign.select import maxent as M
from mlpdesign.select.exchange import exchange, exchange_bruteforce
from mlpdesign.select.greedy import maxmin


def _given_like(kd: K.KernelData, rows: np.ndarray) -> K.KernelData:
    return K.KernelData([kd.terms[0].like(rows)], np.ones(len(rows)), normalize=kd.normalize)


def _toys():
    rng = np.random.default_rng(11)
    yield "gauss2d", K.gaussian(rng.normal(0, 0.5, (45, 2)), 1.0), rng.normal(0.5, 0.5, (4, 2))
    yield "linear5", K.linear(rng.normal(size=(40, 5)) + 1.0), rng.normal(size=(3, 5)) + 1.0
    yield "poly3", K.polynomial(rng.normal(size=(35, 4)) + 0.5, zeta=3), rng.normal(size=(3, 4))


def _same(kd, start, method, **kw):
    a = exchange(kd, start, method, **kw)
    b = exchange_bruteforce(kd, start, method, **kw)
    assert [s[:2] for s in a.swaps] == [s[:2] for s in b.swaps]
    assert np.array_equal(a.index, b.index)
    assert np.allclose([s[2] for s in a.swaps], [s[2] for s in b.swaps], rtol=1e-6, atol=1e-7)
    assert np.isclose(a.before, b.before, atol=1e-8) and np.isclose(a.after, b.after, atol=1e-8)
    assert all(s[2] > 0 for s in a.swaps) and a.after >= a.before
    c = exchange(kd, start, method, bounds=False, **kw)
    assert c.swaps == a.swaps  # the bound only skips work
    return a


@pytest.mark.parametrize("name,kd,g", list(_toys()), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("method", ["maxent", "maxmin"])
def test_exchange_equals_bruteforce_on_toy_pools(name, kd, g, method):
    jit = 1e-3
    start = (M.maxent_lazy(kd, 7, jitter=jit) if method == "maxent" else maxmin(kd, 7)).index
    a = _same(kd, start, method, jitter=jit)
    assert len(a.swaps) >= 1 or name != "gauss2d"
    gk = _given_like(kd, g)
    _same(kd, start, method, jitter=jit, given=gk)
    labels = np.random.default_rng(2).choice(np.array(["a", "b"]), kd.n, p=[0.7, 0.3])
    s = _same(kd, start, method, jitter=jit, given=gk, strata=labels)
    assert sorted(labels[s.index].tolist()) == sorted(labels[start].tolist())  # per stratum
    m = _same(kd, start, method, jitter=jit, max_swaps=1)
    assert len(m.swaps) <= 1
    allowed = np.arange(kd.n) % 3 != 0
    x = _same(kd, start, method, jitter=jit, allowed=allowed)
    assert all(allowed[i] for _, i, _ in x.swaps)


def test_tol_stops_small_gains():
    rng = np.random.default_rng(4)
    kd = K.gaussian(rng.normal(0, 0.6, (40, 2)), 1.0)
    start = M.maxent_lazy(kd, 6, jitter=1e-3).index
    full = exchange(kd, start, "maxent", jitter=1e-3)
    cut = float(np.median([s[2] for s in full.swaps])) if full.swaps else 1.0
    a = _same(kd, start, "maxent", jitter=1e-3, tol=cut)
    assert all(s[2] > cut for s in a.swaps)


def test_gain_is_the_log_det_difference():
    rng = np.random.default_rng(9)
    kd = K.gaussian(rng.normal(0, 0.7, (50, 3)), 1.0)
    start = M.maxent_lazy(kd, 8, jitter=1e-4).index
    a = exchange(kd, start, "maxent", jitter=1e-4)
    Kall = kd.k_block(np.arange(kd.n), np.arange(kd.n)) + 1e-4 * np.eye(kd.n)
    cur = start.copy()
    for out, inn, gain in a.swaps:
        before = np.linalg.slogdet(Kall[np.ix_(cur, cur)])[1]
        cur[cur == out] = inn
        assert np.isclose(np.linalg.slogdet(Kall[np.ix_(cur, cur)])[1] - before, gain, atol=1e-9)
    assert np.array_equal(cur, a.index)


def test_bound_skips_candidates_with_the_same_swaps():
    rng = np.random.default_rng(1)
    kd = K.gaussian(rng.normal(0, 1.0, (3000, 2)), 0.3)
    start = M.maxent_lazy(kd, 40, jitter=1e-6).index
    a = exchange(kd, start, "maxent", jitter=1e-6, max_swaps=5)
    b = exchange(kd, start, "maxent", jitter=1e-6, max_swaps=5, bounds=False)
    assert a.swaps == b.swaps and np.array_equal(a.index, b.index)
    assert a.stats["candidates_evaluated"] < b.stats["candidates_evaluated"]


@pytest.fixture(scope="module")
def zr_kernels(small_store):
    from mlpdesign.io.store import open_store

    out = {}
    with open_store(small_store) as st:
        for mode in ("normalized", "raw"):
            opts = {} if mode == "normalized" else {"normalize": False, "per_atom": True}
            pool = K.StoreKernel(st, configs=(0, 30), **opts)
            given = K.StoreKernel(st, configs=(30, 40), like=pool, **opts)
            out[mode] = (pool, given)
        labels = np.asarray(st.structure)[:30]
    return out, labels


@pytest.mark.parametrize("mode", ["normalized", "raw"])
@pytest.mark.parametrize("method", ["maxent", "maxmin"])
def test_exchange_equals_bruteforce_on_zr_store(zr_kernels, mode, method):
    kernels, labels = zr_kernels
    pool, given = kernels[mode]
    jit = 1e-4
    for gk, strata in ((None, None), (given, None), (given, labels), (None, labels)):
        if method == "maxent":
            start = M.maxent_lazy(pool, 8, jitter=jit, given=gk, strata=strata).index
        else:
            start = maxmin(pool, 8, given=gk, strata=strata).index
        _same(pool, start, method, jitter=jit, given=gk, strata=strata)


def test_bad_input():
    kd = K.gaussian(np.random.default_rng(0).normal(size=(10, 2)), 1.0)
    for kw, msg in (
        (dict(method="random"), "maxent or maxmin"),
        (dict(method="maxent", jitter=0.0), "--jitter"),
        (dict(method="maxent", tol=-1.0), "--tol"),
        (dict(method="maxent", max_swaps=-1), "--max-swaps"),
    ):
        with pytest.raises(MlpdesignError, match=msg):
            exchange(kd, [0, 1, 2], **kw)
    with pytest.raises(MlpdesignError, match="repeated"):
        exchange(kd, [0, 0, 2], "maxmin")
