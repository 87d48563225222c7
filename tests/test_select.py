"""Max-min selection: fast path = textbook loop, prefix/continuation, conditioning,
duplicates, exact picks on a small Zr pool, CLI and bad inputs."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest
from clihelpers import run

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.selection import load_selection
from mlpdesign.kernels import core as K
from mlpdesign.select.greedy import maxmin, maxmin_reference, select_random

GAP = (
    "distance_2b cutoff=5.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=5.0 l_max=4 n_max=4 normalize=T atom_sigma=0.5 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)


@pytest.fixture(scope="module")
def zr(tmp_path_factory):
    """A 150-candidate Zr pool (seed 11) and its store (small SOAP)."""
    from mlpdesign.describe.runner import describe
    from mlpdesign.generate.pool import PoolSpec, generate

    d = tmp_path_factory.mktemp("zr")
    generate(d / "pool.xyz", 150, PoolSpec(seed=11))
    describe(d / "pool.xyz", d / "pool.h5", gap=GAP)
    return d


# ---------------------------------------------------------------- fast path = reference


def _pools():
    rng = np.random.default_rng(5)
    yield "gauss2d", K.gaussian(rng.normal(0, 0.5, (2000, 2)), 1.0)
    yield "linear8", K.linear(rng.normal(size=(1500, 8)) + 2.0)
    yield "linear8-f32", K.linear(rng.normal(size=(1500, 8)) + 2.0, dtype="float32")
    yield "poly3", K.polynomial(rng.normal(size=(800, 6)) + 1.0, zeta=3)
    x1, x2 = np.mgrid[-1:1.05:0.05, -1:1.05:0.05]
    yield "grid", K.gaussian(np.vstack((x1.ravel(), x2.ravel())).T, 1.0)


@pytest.mark.parametrize("name,kd", list(_pools()), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_equals_reference_on_toy_pools(name, kd):
    a, b = maxmin(kd, 120), maxmin_reference(kd, 120)
    assert np.array_equal(a.index, b.index)
    assert np.allclose(a.psi, b.psi, rtol=0, atol=2 * kd.eps)
    assert len(set(a.index.tolist())) == 120
    assert np.all(np.diff(a.psi[1:]) <= 2 * kd.eps)  # Psi at pick time never increases
    assert a.evaluated < b.evaluated


@pytest.mark.parametrize(
    "mode",
    [
        {"dtype": "float64"},
        {"dtype": "float32"},
        {"dtype": "float64", "balance": True},
        {"dtype": "float32", "normalize": False, "per_atom": True},
    ],
)
def test_fast_equals_reference_on_zr_store(zr, mode):
    from mlpdesign.io.store import open_store

    with open_store(zr / "pool.h5") as st:
        kd = K.StoreKernel(st, **mode)
    a, b = maxmin(kd, 60), maxmin_reference(kd, 60)
    assert np.array_equal(a.index, b.index)
    rng = np.random.default_rng(0)
    first = int(rng.integers(kd.n))
    assert np.array_equal(
        maxmin(kd, 30, first=first).index, maxmin_reference(kd, 30, first=first).index
    )


def test_pieces_threads_and_cells_are_exact(monkeypatch):
    """Pools larger than a piece, on 1-3 threads: the reference's picks, the same Psi bits
    whatever the number of threads, and most design points' cells skipped by the bound."""
    rng = np.random.default_rng(8)
    kd = K.gaussian(rng.normal(0, 0.5, (3 * K.PIECE + 17, 3)), 2.0)
    g = rng.normal(0.8, 0.3, (40, 3))
    given = K.KernelData([kd.terms[0].like(g)], np.ones(len(g)), normalize=False)
    ref = maxmin_reference(kd, 250)
    cond = maxmin_reference(kd, 100, given=given)
    runs = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("MLPDESIGN_THREADS", threads)
        runs.append((maxmin(kd, 250), maxmin(kd, 100, given=given)))
    for r, c in runs:
        assert np.array_equal(r.index, ref.index) and np.array_equal(c.index, cond.index)
        assert np.array_equal(r.psi, runs[0][0].psi) and np.array_equal(c.psi, runs[0][1].psi)
    all_pairs = 250 * 249 // 2
    assert 0 < runs[0][0].stats["centres_evaluated"] < all_pairs / 2


def test_appendix_b_grid_starts_at_the_corners():
    x1, x2 = np.mgrid[-1:1.05:0.05, -1:1.05:0.05]
    X = np.vstack((x1.ravel(), x2.ravel())).T
    d = maxmin(K.linear(X, normalize=False), 5, first=int(np.argmax(np.linalg.norm(X, axis=1))))
    corners = {tuple(p) for p in np.round(X[d.index[:4]], 9)}
    assert corners == {(1.0, 1.0), (-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0)}
    assert np.isinf(d.psi[0])


# ---------------------------------------------------------------- properties


def test_prefix_and_random_prefix():
    kd = K.gaussian(np.random.default_rng(1).uniform(-1, 1, (500, 2)), 0.5)
    long, short = maxmin(kd, 80), maxmin(kd, 30)
    assert np.array_equal(long.index[:30], short.index)
    r1, r2 = select_random(kd, 50, seed=4), select_random(kd, 20, seed=4)
    assert np.array_equal(r1.index[:20], r2.index)
    assert len(set(r1.index.tolist())) == 50
    assert not np.array_equal(r1.index, select_random(kd, 50, seed=5).index)


def test_conditioning_fills_the_empty_half():
    rng = np.random.default_rng(2)
    pool = rng.uniform(-1, 1, (2000, 2))
    gx, gy = np.mgrid[-1:0:0.1, -1:1.01:0.1]
    given = np.vstack((gx.ravel(), gy.ravel())).T  # covers x < 0 densely
    kd = K.gaussian(pool, 0.5)
    gk = K.KernelData([kd.terms[0].like(given)], np.ones(len(given)), normalize=False)
    d = maxmin(kd, 25, given=gk)
    assert np.all(pool[d.index, 0] > 0)
    assert np.array_equal(d.index, maxmin_reference(kd, 25, given=gk).index)
    free = maxmin(kd, 25)
    assert np.any(pool[free.index, 0] < 0)  # unconditioned: both halves


def test_duplicates_stop_early_without_repeating():
    base = np.random.default_rng(3).normal(size=(10, 3))
    kd = K.linear(np.repeat(base, 3, axis=0), normalize=False)
    with pytest.warns(RuntimeWarning, match="stopped after 10 of 15"):
        d = maxmin(kd, 15)
    assert len(d.index) == 10 and d.stopped_early
    assert len({i // 3 for i in d.index}) == 10  # one of each distinct point
    with pytest.warns(RuntimeWarning):
        r = maxmin_reference(kd, 15)
    assert np.array_equal(r.index, d.index)


def test_bad_n_and_first():
    kd = K.linear(np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(MlpdesignError, match="larger than the pool"):
        maxmin(kd, 11)
    with pytest.raises(MlpdesignError, match="at least 1"):
        maxmin(kd, 0)
    with pytest.raises(MlpdesignError, match="outside the pool"):
        maxmin(kd, 2, first=10)
    gk = K.KernelData([kd.terms[0].like(kd.terms[0].rows[:4] + kd.terms[0].mu)], np.ones(4))
    with pytest.raises(MlpdesignError, match="less the given set"):
        maxmin(kd, 7, given=gk)


# ---------------------------------------------------------------- Zr store and CLI

#: picks of 'mlpdesign select pool.h5 -n 12' on the zr fixture (pool seed 11), pinned:
#: the default (stratified by structure, 4 each) and --no-stratify (the paper's plain design)
ZR_PICKS = [137, 136, 94, 110, 59, 57, 60, 51, 69, 31, 7, 54]
ZR_PLAIN_PICKS = [137, 59, 118, 49, 54, 51, 10, 143, 21, 7, 147, 128]


def test_cli_exact_picks_and_formats(zr, tmp_path):
    r = run("select", zr / "pool.h5", "-n", 12, "-o", tmp_path / "s.h5", "-q")
    assert r.exit_code == 0, r.output
    s = load_selection(tmp_path / "s.h5")
    assert s.candidate_id.tolist() == ZR_PICKS
    assert json.loads(s.attrs["strata"]) == {"bcc": 4, "fcc": 4, "hcp": 4}
    r = run("select", zr / "pool.h5", "-n", 12, "--no-stratify", "-o", tmp_path / "p.h5", "-q")
    assert r.exit_code == 0, r.output
    plain = load_selection(tmp_path / "p.h5")
    assert plain.candidate_id.tolist() == ZR_PLAIN_PICKS
    assert "stratify" not in plain.attrs  # plain designs write no strata attributes
    assert np.isinf(plain.psi[0]) and np.all(np.diff(plain.psi[1:]) <= 0)
    # stratified: Psi at pick time never increases within a structure
    with h5py.File(zr / "pool.h5") as f:
        structure = f["structure"][:][s.index]
    assert np.isinf(s.psi[0])
    for x in np.unique(structure):
        assert np.all(np.diff(s.psi[1:][structure[1:] == x]) <= 0)
    assert s.attrs["method"] == "maxmin" and s.attrs["distance"] == "D2"
    with h5py.File(zr / "pool.h5") as f:
        assert s.pool_sha256 == f.attrs["pool_sha256"]
    for fmt in ("json", "txt"):
        r = run("select", zr / "pool.h5", "-n", 12, "-o", tmp_path / f"s.{fmt}", "-q")
        assert r.exit_code == 0, r.output
        t = load_selection(tmp_path / f"s.{fmt}")
        assert t.candidate_id.tolist() == ZR_PICKS
        assert np.array_equal(t.psi, s.psi)
    assert json.loads((tmp_path / "s.json").read_text())["psi"][0] is None
    # same seed, same bytes, whatever the number of threads
    b = (tmp_path / "s.txt").read_text().splitlines()
    for threads in ("1", "3"):
        out = tmp_path / f"again{threads}.txt"
        run("select", zr / "pool.h5", "-n", 12, "-o", out, "-q", "--threads", threads)
        a = out.read_text().splitlines()
        assert [x for x in a if "command" not in x] == [x for x in b if "command" not in x]


def test_cli_continue_equals_one_run(zr, tmp_path):
    assert run("select", zr / "pool.h5", "-n", 10, "-o", tmp_path / "a.h5", "-q").exit_code == 0
    r = run(
        "select",
        zr / "pool.h5",
        "-n",
        25,
        "--continue",
        tmp_path / "a.h5",
        "-o",
        tmp_path / "b.json",
        "-q",
    )
    assert r.exit_code == 0, r.output
    assert run("select", zr / "pool.h5", "-n", 25, "-o", tmp_path / "c.h5", "-q").exit_code == 0
    b, c = load_selection(tmp_path / "b.json"), load_selection(tmp_path / "c.h5")
    assert np.array_equal(b.candidate_id, c.candidate_id)
    # random runs continue too
    run("select", zr / "pool.h5", "-n", 5, "--random", "--seed", 3, "-o", tmp_path / "r.h5", "-q")
    run(
        "select",
        zr / "pool.h5",
        "-n",
        9,
        "--continue",
        tmp_path / "r.h5",
        "-o",
        tmp_path / "r2.h5",
        "-q",
    )
    run("select", zr / "pool.h5", "-n", 9, "--random", "--seed", 3, "-o", tmp_path / "r3.h5", "-q")
    assert np.array_equal(
        load_selection(tmp_path / "r2.h5").candidate_id,
        load_selection(tmp_path / "r3.h5").candidate_id,
    )


def _select_given(zr, given, out):
    """``select -n 10`` of the zr pool given ``given``, into ``out``."""
    return run("select", zr / "pool.h5", "-n", 10, "--given", given, "-o", out, "-q")


def test_cli_given_extxyz_and_store(zr, tmp_path):
    import ase.io

    frames = ase.io.read(zr / "pool.xyz", ":")
    ase.io.write(tmp_path / "given.xyz", frames[:20])
    r = _select_given(zr, tmp_path / "given.xyz", tmp_path / "g.h5")
    assert r.exit_code == 0, r.stderr
    s = load_selection(tmp_path / "g.h5")
    assert not set(s.candidate_id.tolist()) & set(range(20))  # nothing of the given set
    assert np.isfinite(s.psi[0])
    assert json.loads(s.attrs["given"])[0]["n_configs"] == 20
    from mlpdesign.describe.runner import describe

    describe(tmp_path / "given.xyz", tmp_path / "given.h5", gap=GAP)
    r = _select_given(zr, tmp_path / "given.h5", tmp_path / "g2.h5")
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(load_selection(tmp_path / "g2.h5").candidate_id, s.candidate_id)


def test_cli_bad_inputs_leave_no_output(zr, tmp_path):
    from mlpdesign.io.store import write_store_arrays

    out = tmp_path / "out.h5"

    def bad(*args, match):
        r = run("select", *args, "-o", out)
        assert r.exit_code == 2, r.output
        assert "mlpdesign: error:" in r.stderr and match in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not out.exists()

    bad(zr / "pool.h5", "-n", 151, match="larger than the pool")
    bad(tmp_path / "missing.h5", "-n", 3, match="no such")
    (tmp_path / "junk.h5").write_text("not hdf5")
    bad(tmp_path / "junk.h5", "-n", 3, match="not an HDF5 file")
    import ase.io

    ase.io.write(tmp_path / "all.xyz", ase.io.read(zr / "pool.xyz", ":"))
    bad(zr / "pool.h5", "-n", 140, "--given", tmp_path / "all.xyz", match="less the given")
    other = GAP.replace("theta_uniform=0.3", "theta_uniform=0.5")
    from mlpdesign.describe.runner import describe

    ase.io.write(tmp_path / "few.xyz", ase.io.read(zr / "pool.xyz", ":5"))
    describe(tmp_path / "few.xyz", tmp_path / "other.h5", gap=other)
    bad(zr / "pool.h5", "-n", 3, "--given", tmp_path / "other.h5", match="another gap string")
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(6, 4))
    rows[2, 1] = np.nan
    lin = (
        "soap cutoff=5.0 l_max=1 n_max=1 atom_sigma=0.5 covariance_type=dot_product zeta=2 "
        "delta=1.0"
    )
    write_store_arrays(tmp_path / "nan.h5", lin, np.arange(6), [rows])
    rows = np.abs(rng.normal(size=(6, 4))) + 1
    bad(tmp_path / "nan.h5", "-n", 2, match="NaN")
    write_store_arrays(
        tmp_path / "pp.h5",
        lin.replace("dot_product zeta=2", "pp theta_uniform=1.0"),
        np.arange(6),
        [rows],
    )
    bad(tmp_path / "pp.h5", "-n", 2, match="not supported")
    # a selection of another pool cannot be continued on this one
    write_store_arrays(tmp_path / "lin.h5", lin, np.arange(6), [rows], pool_sha256="0" * 64)
    r = run("select", tmp_path / "lin.h5", "-n", 2, "-o", tmp_path / "lin.sel.h5", "-q")
    assert r.exit_code == 0, r.stderr
    bad(zr / "pool.h5", "-n", 5, "--continue", tmp_path / "lin.sel.h5", match="another pool")
    bad(zr / "pool.h5", "-n", 5, "--first", 99999, match="no candidate")
    r = run("select", zr / "pool.h5", "-n", 3, "-o", tmp_path / "lin.sel.h5")
    assert r.exit_code == 2 and "exists" in r.stderr


def test_cli_duplicates_warn(tmp_path):
    from mlpdesign.io.store import write_store_arrays

    base = np.abs(np.random.default_rng(4).normal(size=(4, 5))) + 0.1
    lin = (
        "soap cutoff=5.0 l_max=1 n_max=1 atom_sigma=0.5 covariance_type=dot_product zeta=1 "
        "delta=1.0"
    )
    write_store_arrays(tmp_path / "dup.h5", lin, np.arange(8), [np.repeat(base, 2, axis=0)])
    r = run("select", tmp_path / "dup.h5", "-n", 6, "-o", tmp_path / "d.h5", "-q")
    assert r.exit_code == 0
    assert "warning: stopped after 4 of 6" in r.stderr
    s = load_selection(tmp_path / "d.h5")
    assert s.n == 4 and s.attrs["stopped_early"] in (True, 1)
    assert len({c // 2 for c in s.candidate_id}) == 4


def test_first_options_and_balance(zr, tmp_path):
    r = run("select", zr / "pool.h5", "-n", 4, "--first", 17, "-o", tmp_path / "f.h5", "-q")
    assert r.exit_code == 0, r.stderr
    assert load_selection(tmp_path / "f.h5").candidate_id[0] == 17
    for seed in (1, 2):
        run(
            "select",
            zr / "pool.h5",
            "-n",
            4,
            "--first",
            "random",
            "--seed",
            seed,
            "-o",
            tmp_path / f"fr{seed}.h5",
            "-q",
        )
    a, b = (load_selection(tmp_path / f"fr{s}.h5") for s in (1, 2))
    assert a.attrs["first"] == "random" and a.candidate_id[0] != b.candidate_id[0]
    r = run(
        "select",
        zr / "pool.h5",
        "-n",
        10,
        "--balance",
        "--dtype",
        "float64",
        "-o",
        tmp_path / "bal.h5",
        "-q",
    )
    assert r.exit_code == 0
    assert json.loads(load_selection(tmp_path / "bal.h5").attrs["kernel"])["balance"] is True


def test_warnings_module_is_clean():
    kd = K.linear(np.random.default_rng(0).normal(size=(50, 3)) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maxmin(kd, 20)


# ---------------------------------------------------------------- stratified max-min


def test_strata_quota_rule_exact_integers():
    from mlpdesign.select.greedy import Strata

    st = Strata(np.array([b"hcp"] * 6 + [b"bcc"] * 3 + [b"fcc"] * 3))
    seq = []
    for _ in range(12):
        h = st.order()[0]
        seq.append(h)
        st.picks[h] += 1
        # every prefix keeps each stratum within one pick of its share of the pool
        k = st.picks.sum()
        assert np.all(np.abs(st.picks - k * st.pool / st.pool.sum()) < 1 + 1e-12)
    assert st.counts() == {"bcc": 3, "fcc": 3, "hcp": 6}
    assert seq[:4] == [2, 0, 1, 2]  # hcp (largest share) first, then labels in sorted order


@pytest.mark.parametrize(
    "name,kd", list(_pools())[:3], ids=lambda v: v if isinstance(v, str) else ""
)
def test_stratified_fast_equals_reference(name, kd):
    labels = np.random.default_rng(1).choice(
        np.array(["a", "b", "c"]), size=kd.n, p=[0.6, 0.3, 0.1]
    )
    a = maxmin(kd, 90, strata=labels)
    b = maxmin_reference(kd, 90, strata=labels)
    assert np.array_equal(a.index, b.index)
    assert np.allclose(a.psi, b.psi, rtol=0, atol=2 * kd.eps)
    share = {x: int(np.sum(labels == x)) / kd.n * 90 for x in "abc"}
    assert all(abs(a.stats["strata"][x] - share[x]) <= 1 for x in "abc")
    # each pick after the first is the argmax of the textbook Psi within its stratum
    psi = np.minimum.reduce([kd.d2_row(int(s)) for s in a.index[:40]])
    nxt = a.index[40]
    same = labels == labels[nxt]
    same[a.index[:40]] = False
    assert np.isclose(psi[nxt], psi[same].max(), rtol=0, atol=2 * kd.eps)
    # one stratum: the plain design
    one = maxmin(kd, 40, strata=np.zeros(kd.n, dtype=int))
    assert np.array_equal(one.index, maxmin(kd, 40).index)


def test_stratified_given_and_exhausted_stratum():
    rng = np.random.default_rng(3)
    kd = K.gaussian(rng.normal(0, 0.5, (600, 2)), 1.0)
    gk = K.KernelData([kd.terms[0].like(rng.normal(0, 0.5, (20, 2)))], np.ones(20), normalize=False)
    labels = np.where(np.arange(600) < 5, "rare", "common")  # 5 rare: runs out of its quota
    a = maxmin(kd, 200, given=gk, strata=labels)
    b = maxmin_reference(kd, 200, given=gk, strata=labels)
    assert np.array_equal(a.index, b.index)
    assert a.stats["strata"]["rare"] == 2  # its share of 200 (5/600 * 200 = 1.7)
    dup = np.repeat(rng.normal(0, 0.5, (1, 2)), 4, axis=0)  # a stratum of duplicates
    kd2 = K.gaussian(np.vstack((rng.normal(0, 0.5, (36, 2)), dup)), 1.0)
    lab2 = np.array(["x"] * 36 + ["dup"] * 4)
    with pytest.warns(RuntimeWarning, match="stopped after"):
        c = maxmin(kd2, 40, strata=lab2)
    d = maxmin_reference(kd2, len(c.index), strata=lab2)
    assert np.array_equal(c.index, d.index)
    assert c.stats["strata"]["dup"] == 1 and c.stats["strata"]["x"] == 36


def test_cli_stratify_zr(zr, tmp_path):
    from mlpdesign.io.store import open_store

    out = tmp_path / "st.json"
    r = run("select", zr / "pool.h5", "-n", 30, "--stratify", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    s = load_selection(out)
    assert s.attrs["stratify"] == "structure"
    with open_store(zr / "pool.h5") as st:
        labels = st.structure
        kd = K.StoreKernel(st)
    assert np.array_equal(s.index, maxmin_reference(kd, 30, strata=labels).index)
    got = json.loads(s.attrs["strata"])
    names, counts = np.unique(labels, return_counts=True)
    for x, c in zip(names, counts, strict=True):
        assert abs(got[x.decode()] - 30 * c / len(labels)) <= 1
    assert sum(got.values()) == 30
    # continued runs keep the strata; txt and h5 files carry them too
    r = run("select", zr / "pool.h5", "-n", 40, "--continue", out, "-o", tmp_path / "c.txt", "-q")
    assert r.exit_code == 0, r.output
    c = load_selection(tmp_path / "c.txt")
    assert c.attrs["stratify"] == "structure"
    assert np.array_equal(c.candidate_id[:30], s.candidate_id)
    r = run("select", zr / "pool.h5", "-n", 40, "--stratify", "-o", tmp_path / "d.h5", "-q")
    assert np.array_equal(load_selection(tmp_path / "d.h5").candidate_id, c.candidate_id)
    # the default on a pool with structure labels: the same design
    run("select", zr / "pool.h5", "-n", 40, "-o", tmp_path / "e.json", "-q")
    assert np.array_equal(load_selection(tmp_path / "e.json").candidate_id, c.candidate_id)


def test_cli_stratify_bad_inputs(zr, tmp_path):
    import re

    from clihelpers import one_line_error

    from mlpdesign.describe.runner import describe
    from mlpdesign.generate.pool import PoolSpec, generate

    r = run("select", zr / "pool.h5", "-n", 5, "--stratify", "--random", "-o", tmp_path / "x.h5")
    assert "do not combine it with --random" in one_line_error(r)
    assert not (tmp_path / "x.h5").exists()
    # a pool without structure labels
    generate(tmp_path / "p.xyz", 12, PoolSpec(seed=2))
    text = (tmp_path / "p.xyz").read_text()
    (tmp_path / "q.xyz").write_text(re.sub(r" (structure|config_type)=\w+", "", text))
    describe(tmp_path / "q.xyz", tmp_path / "q.h5", gap=GAP)
    r = run("select", tmp_path / "q.h5", "-n", 5, "--stratify", "-o", tmp_path / "y.h5")
    assert "no structure labels to stratify by" in one_line_error(r)
    assert not (tmp_path / "y.h5").exists()
    # by default such a pool gets the plain design
    r = run("select", tmp_path / "q.h5", "-n", 5, "-o", tmp_path / "z.json", "-q")
    assert r.exit_code == 0, r.output
    assert "stratify" not in load_selection(tmp_path / "z.json").attrs
