"""Fedorov exchange (``select --refine exchange``): the bounded exchange makes the same
swaps and ends at the same set as the brute force (objective recomputed from scratch for
every possible swap), on toy pools and the small Zr store, with a given set and strata;
with the kernel values cached or in blocks, in memory, streamed and under ``mpiexec -n 3``;
the file says it is a set and the commands that need an order refuse it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clihelpers import one_line_error, run
from test_scale import _mpi_missing, mpi_selection

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.selection import Selection, load_selection, write_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels import core as K
from mlpdesign.select import maxent as M
from mlpdesign.select import run as select_run
from mlpdesign.select.exchange import exchange, exchange_bruteforce
from mlpdesign.select.greedy import maxmin
from mlpdesign.select.stage import strata_labels


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


def _toys_random():
    rng = np.random.default_rng(5)
    g2 = rng.normal(0, 0.5, (60, 2))
    yield "gauss2d", K.gaussian(g2, 1.0), g2[:5] * 1.1 + 0.05
    l6 = rng.normal(size=(50, 6)) + 1.0
    yield "linear6", K.linear(l6), l6[:4] * 0.9
    p4 = rng.normal(size=(45, 4)) + 0.5
    yield "poly3", K.polynomial(p4, zeta=3), p4[:5] + 0.1


def _paths(kd, crit, start, **kw):
    """Every fast path (bounds on and off, kernel values cached and in blocks) equals the
    brute force; returns the bounded, cached one."""
    ref = exchange_bruteforce(kd, start, crit, **kw)
    out = None
    for bounds in (True, False):
        for cache in (None, 0):
            f = exchange(kd, start, crit, bounds=bounds, cache_bytes=cache, **kw)
            assert [s[:2] for s in f.swaps] == [s[:2] for s in ref.swaps], (bounds, cache)
            assert np.array_equal(f.index, ref.index)
            gains = np.array([s[2] for s in f.swaps])
            assert np.allclose(gains, [s[2] for s in ref.swaps], rtol=1e-6, atol=1e-9)
            assert np.isclose(f.after, ref.after, rtol=1e-9, atol=1e-9)
            out = out or f
    return out


@pytest.mark.parametrize(
    "name,kd,g", list(_toys_random()), ids=lambda v: v if isinstance(v, str) else ""
)
@pytest.mark.parametrize("crit,jitter", [("maxent", 1e-6), ("maxent", 1e-2), ("maxmin", 1e-6)])
def test_every_path_equals_bruteforce_from_random_designs(name, kd, g, crit, jitter):
    rng = np.random.default_rng(len(name))
    labels = rng.choice(np.array(["a", "b", "c"]), kd.n, p=[0.6, 0.3, 0.1])
    left = rng.random(kd.n) < 0.1
    gk = _given_like(kd, g)
    swapped = 0
    for given in (None, gk):
        for strata in (None, labels):
            start = rng.choice(np.flatnonzero(~left), 10, replace=False)
            kw = dict(given=given, jitter=jitter, max_swaps=25, strata=strata, allowed=~left)
            f = _paths(kd, crit, start, **kw)
            swapped += len(f.swaps)
            out = {t for t, _, _ in f.swaps} - {x for _, x, _ in f.swaps}
            assert out.isdisjoint(f.index.tolist())
            assert not left[f.index].any() or set(f.index[left[f.index]]) <= set(start)
            if strata is not None:  # each stratum keeps its count
                assert sorted(labels[f.index]) == sorted(labels[start])
            assert all(s[2] > 0 for s in f.swaps)
            assert np.isclose(f.after - f.before, sum(s[2] for s in f.swaps), atol=1e-8)
    assert swapped > 0


def test_exchange_of_greedy_designs_and_tolerances():
    rng = np.random.default_rng(2)
    kd = K.polynomial(rng.normal(size=(50, 4)) + 0.5, zeta=3)
    for crit, start in (("maxent", M.maxent_lazy(kd, 10).index), ("maxmin", maxmin(kd, 10).index)):
        f = _paths(kd, crit, start)
        assert f.after >= f.before
        big = exchange(kd, start, crit, tol=10.0)  # nothing gains that much
        assert big.swaps == [] and np.array_equal(big.index, start)
        one = exchange(kd, start, crit, max_swaps=1)
        assert one.swaps == f.swaps[:1]
    f = exchange(kd, start, "maxent", jitter=1e-6)
    direct = M.log_det_set(M.KernelOracle(kd), f.index.tolist(), 1e-6)
    assert np.isclose(f.after, direct, rtol=0, atol=1e-8)
    assert np.allclose(f.var, M.loo_variances(M.KernelOracle(kd), f.index.tolist(), 1e-6))


def test_given_points_stay_and_duplicates_never_come_in():
    X = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5], [0.5, 0.5], [2, 2], [0.1, 0]])
    kd = K.gaussian(X, 0.7)
    for crit in ("maxent", "maxmin"):
        f = _paths(kd, crit, [4, 7, 0], jitter=1e-6)
        assert 5 not in f.index.tolist() or 4 not in f.index.tolist()  # 5 duplicates 4
    gk = _given_like(kd, X[6:7])
    f = _paths(kd, "maxmin", [6, 1], given=gk)  # 6 duplicates the given point: it goes
    assert 6 not in f.index.tolist()


@pytest.mark.parametrize("mode", ["normalized", "raw"])
@pytest.mark.parametrize("crit", ["maxent", "maxmin"])
def test_every_path_equals_bruteforce_on_zr_from_random_designs(zr_kernels, mode, crit):
    kernels, labels = zr_kernels
    pool, given = kernels[mode]
    rng = np.random.default_rng(3)
    swapped = 0
    for g in (None, given):
        for strata in (None, labels):
            start = rng.choice(pool.n, 8, replace=False)
            f = _paths(pool, crit, start, given=g, strata=strata, jitter=1e-4)
            swapped += len(f.swaps)
    assert swapped > 0


# ---------------------------------------------------------------- the command


def _sel(store, out, n, *args):
    res = run("select", store, "-n", n, "--refine", "exchange", *args, "-o", out, "-q")
    assert res.exit_code == 0, (res.output, res.stderr)
    return load_selection(out)


CASES = [("maxent", 10, []), ("maxmin", 10, ["--no-stratify"]), ("maxmin", 16, [])]


@pytest.mark.parametrize("crit,n,args", CASES)
def test_cli_exchange_memory_streamed_mpi_and_reference(small_store, tmp_path, crit, n, args):
    """The greedy design refined: the brute force's swaps and set, in memory, streamed
    (kernel values cached and recomputed in blocks) and under mpiexec -n 3."""
    args = ["--criterion", crit, *args]
    mem = _sel(small_store, tmp_path / "mem.h5", n, *args)
    assert mem.attrs["ordered"] is False and not mem.ordered
    assert mem.attrs["refine"] == "exchange" and mem.attrs["n_swaps"] >= 1
    plain = "--no-stratify" in args
    greedy, _ = select_run(small_store, n, None, criterion=crit, stratify=False if plain else None)
    with open_store(small_store) as st:
        kd = K.StoreKernel(st)
        labels = None if plain else strata_labels(st, small_store)
    ref = exchange_bruteforce(kd, greedy.index, crit, strata=labels)
    swaps = json.loads(mem.attrs["swaps"])
    cid = np.asarray(mem.candidate_id)
    assert [s[:2] for s in swaps] == [[int(t), int(x)] for t, x, _ in ref.swaps]  # ids = rows
    assert np.array_equal(mem.index, ref.index) and np.array_equal(cid, ref.index)
    assert np.isclose(mem.attrs["objective_after"], ref.after, rtol=1e-9, atol=1e-9)
    assert np.isclose(mem.attrs["objective_before"], ref.before, rtol=1e-9, atol=1e-9)
    assert mem.attrs["objective"] == ("logdet" if crit == "maxent" else "min_pairwise_d2")
    if crit == "maxent":
        assert np.allclose(mem.var, M.loo_variances(M.KernelOracle(kd), mem.index, 1e-6))
    D = kd.d2_block(mem.index, mem.index) + np.diag(np.full(n, np.inf))
    assert np.allclose(mem.psi, D.min(axis=1), rtol=0, atol=4 * kd.eps)
    streamed = ["--memory-limit", "3M", "--block-rows", 8]
    for kw in ({}, {"refine_cache": 0}):
        sel, _ = select_run(
            small_store,
            n,
            tmp_path / "s.json",
            force=True,
            criterion=crit,
            refine="exchange",
            stratify=False if plain else None,
            memory_limit="3M",
            block_rows=8,
            **kw,
        )
        assert np.array_equal(sel.index, mem.index)
        assert [s[:2] for s in sel.attrs["swaps"]] == [s[:2] for s in swaps]
    if _mpi_missing() is None:
        ref_args = ["-n", n, "--refine", "exchange", *args, *streamed]
        res, mpi = mpi_selection(3, small_store, tmp_path / "mpi.h5", *ref_args, cwd=tmp_path)
        assert np.array_equal(mpi.index, mem.index), res.stderr
        assert [s[:2] for s in json.loads(mpi.attrs["swaps"])] == [s[:2] for s in swaps]


def test_cli_exchange_given_summary_and_formats(small_pool, small_store, tmp_path):
    from ase.io import read, write

    write(tmp_path / "given.xyz", read(small_pool, ":6"))
    out = tmp_path / "g.txt"
    res = run(
        "select",
        small_store,
        "-n",
        8,
        "--criterion",
        "maxent",
        "--given",
        tmp_path / "given.xyz",
        "--refine",
        "exchange",
        "--tol",
        1e-3,
        "-o",
        out,
    )
    assert res.exit_code == 0, res.stderr
    assert "exchange:" in res.stderr and "an unordered set" in res.stderr
    rates = [ln for ln in res.stderr.splitlines() if ln.startswith("exchange:") and "/s" in ln]
    assert rates and all(" swap/s" in ln for ln in rates)  # the exchange counts swaps
    sel = load_selection(out)
    assert not sel.ordered and sel.attrs["refine_tol"] == 1e-3
    assert not set(sel.index.tolist() if sel.index is not None else []) & set(range(6))
    assert not set(sel.candidate_id.tolist()) & set(range(6))  # never the given configs
    with open_store(small_store) as st:
        kd = K.StoreKernel(st)
        gk = K.StoreKernel(st, configs=(0, 6), like=kd)
        labels = strata_labels(st, small_store)
    greedy, _ = select_run(small_store, 8, None, criterion="maxent", given=tmp_path / "given.xyz")
    ref = exchange_bruteforce(kd, greedy.index, "maxent", given=gk, strata=labels, tol=1e-3)
    assert np.array_equal(sel.candidate_id, ref.index)
    for fmt in ("h5", "json", "txt"):  # the set attributes survive every format
        p = tmp_path / f"x.{fmt}"
        write_selection(p, sel, fmt)
        back = load_selection(p)
        assert back.ordered is False and back.attrs["n_swaps"] == sel.attrs["n_swaps"]
        assert float(back.attrs["objective_after"]) == float(sel.attrs["objective_after"])
    with pytest.raises(MlpdesignError, match="unordered set"):
        sel.prefix(3)
    assert sel.prefix(sel.n).n == sel.n
    assert Selection([1, 2], [1, 2], [0.1, 0.2], {}).ordered


def test_cli_exchange_bad_input(small_store, tmp_path):
    out = tmp_path / "x.h5"
    for args, what in (
        (["--criterion", "random", "--refine", "exchange"], "not --criterion random"),
        (["--random", "--refine", "exchange"], "not --criterion random"),
        (["--refine", "exchange", "--tol", -1], "--tol must be"),
        (["--refine", "exchange", "--tol", "nan"], "--tol must be"),
        (["--refine", "exchange", "--max-swaps", -1], "--max-swaps must be"),
        (["--tol", 0.1], "are for --refine exchange"),
        (["--max-swaps", 3], "are for --refine exchange"),
        (["--criterion", "maxent", "--jitter", 0, "--refine", "exchange"], "jitter"),
        (["--criterion", "maxent", "--jitter", -1e-6], "jitter"),
    ):
        res = run("select", small_store, "-n", 5, *args, "-o", out)
        assert what in one_line_error(res), args
        assert not out.exists()
        # refused before the store is read: the same line for a store that is not there
        res = run("select", tmp_path / "missing.h5", "-n", 5, *args, "-o", out)
        assert what in one_line_error(res), args


def test_unordered_set_refused_by_write_n_and_continue(small_pool, small_store, tmp_path):
    sel_path = tmp_path / "set.h5"
    sel = _sel(small_store, sel_path, 10, "--criterion", "maxent")
    res = run("write", small_pool, sel_path, "-n", 4, "-o", tmp_path / "t.xyz")
    assert "unordered set of 10" in one_line_error(res)
    assert not (tmp_path / "t.xyz").exists()
    res = run("write", small_pool, sel_path, "-o", tmp_path / "t.xyz", "-q")
    assert res.exit_code == 0, res.stderr
    res = run("write", small_pool, sel_path, "-n", 10, "-o", tmp_path / "u.xyz", "-q")
    assert res.exit_code == 0, res.stderr
    res = run("select", small_store, "-n", 12, "--continue", sel_path, "-o", tmp_path / "c.h5")
    assert "unordered set" in one_line_error(res)
    assert not (tmp_path / "c.h5").exists()
    assert sel.n == 10


def test_report_shows_objective_before_after_and_swaps(small_store, tmp_path):
    a = tmp_path / "set.h5"
    _sel(small_store, a, 10, "--criterion", "maxent")
    b = tmp_path / "greedy.h5"
    assert run("select", small_store, "-n", 10, "-o", b, "-q").exit_code == 0
    res = run("report", small_store, a, b, "--random", 3, "-o", tmp_path / "rep", "-q")
    assert res.exit_code == 0, res.stderr
    doc = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    d = {x["name"]: x for x in doc["designs"]}
    sel = load_selection(a)
    ex = d["set"]["refine"]
    assert d["set"]["ordered"] is False and d["greedy"]["ordered"] is True
    assert ex["n_swaps"] == sel.attrs["n_swaps"] and ex["objective"] == "logdet"
    assert ex["objective_after"] == pytest.approx(float(sel.attrs["objective_after"]))
    assert d["set"]["cover_targets"] is None  # a set has no design curve
    res = run("report", small_store, a, "--random", 0, "--format", "text", "--sizes", "5,10")
    assert res.exit_code == 0, res.stderr
    assert "swaps" in res.output and "logdet" in res.output
    assert "unordered" in res.output


def test_info_says_a_refined_design_is_a_set(small_store, tmp_path):
    """``info`` on a refined design: a set (not ordered), its swaps and the objective
    before and after; the JSON form carries ``ordered`` for scripts."""
    out = tmp_path / "set.h5"
    sel = _sel(small_store, out, 10, "--criterion", "maxent")
    text = run("info", out)
    assert text.exit_code == 0, text.output
    assert "a set of 10 (not ordered)" in text.output
    n, before, after = (
        sel.attrs["n_swaps"],
        sel.attrs["objective_before"],
        sel.attrs["objective_after"],
    )
    assert f"refine:      exchange, {n} swaps, logdet {before:.6g} -> {after:.6g}" in text.output
    js = json.loads(run("info", out, "--format", "json").output)
    info = js[0] if isinstance(js, list) else js
    assert info["ordered"] is False and info["n_swaps"] == n
    greedy = tmp_path / "greedy.h5"
    assert run("select", small_store, "-n", 10, "-o", greedy, "-q").exit_code == 0
    assert "10 picks" in run("info", greedy).output
    plain = json.loads(run("info", greedy, "--format", "json").output)
    assert (plain[0] if isinstance(plain, list) else plain)["ordered"] is True
