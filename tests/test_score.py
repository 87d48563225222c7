"""``mlpdesign score``: σ², Ψ, rank, leave-one-out σ² and log det against brute force, for a
selection, an extxyz and a store as the training set; outputs; bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from clihelpers import one_line_error, run, select_maxent

from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels import core as K


def _ld(A: np.ndarray) -> float:
    return float(np.linalg.slogdet(A)[1])


@pytest.fixture(scope="module")
def kd(small_store):
    with open_store(small_store) as st:
        return K.StoreKernel(st)


def _score_md(store, folder, lam: float, out: str):
    """``score`` of ``folder/md.xyz`` given ``folder/sel.h5`` into ``folder/out``."""
    args = ["--train", folder / "sel.h5", "--jitter", lam, "--test", folder / "md.xyz"]
    return run("score", store, *args, "-o", folder / out, "-q")


def test_score_of_a_selection_against_brute_force(small_pool, small_store, kd, tmp_path):
    lam = 1e-4
    select_maxent(small_store, tmp_path / "sel.h5", 8, "--jitter", lam, "--no-stratify")
    sel = load_selection(tmp_path / "sel.h5")
    out = tmp_path / "scores.h5"
    res = run(
        "score",
        small_store,
        "--train",
        tmp_path / "sel.h5",
        "--jitter",
        lam,
        "--top",
        3,
        "--figure",
        tmp_path / "var.png",
        "-o",
        out,
    )
    assert res.exit_code == 0, res.stderr
    assert "log det" in res.stderr and len(res.stderr.strip().splitlines()) == 6
    with h5py.File(out) as f:
        assert f.attrs["format"] == "mlpdesign-scores"
        var, psi, rank = f["pool/var"][()], f["pool/psi"][()], f["pool/rank"][()]
        loo, near = f["train/loo_var"][()], f["train/nearest"][()]
        logdet, n_train = float(f.attrs["logdet"]), int(f.attrs["n_train"])
        assert np.array_equal(f["train/id"][()], sel.candidate_id)
    assert (tmp_path / "var.png").read_bytes()[:4] == b"\x89PNG"
    T = list(sel.index)
    Kall = kd.k_block(np.arange(kd.n), np.arange(kd.n))
    np.fill_diagonal(Kall, 1.0)
    A = Kall[np.ix_(T, T)] + lam * np.eye(8)
    ld = _ld(A)
    assert n_train == 8 and np.isclose(logdet, ld, rtol=0, atol=1e-8)
    assert np.isclose(logdet, np.log(sel.var).sum(), rtol=0, atol=1e-8)  # the design's own
    for x in (0, 5, 17, 39):
        Tx = T + [x] if x not in T else T
        ref = np.exp(_ld(Kall[np.ix_(Tx, Tx)] + lam * np.eye(len(Tx))) - ld)
        if x not in T:
            assert np.isclose(var[x], ref, rtol=1e-8, atol=1e-12)
    for t in range(8):
        rest = T[:t] + T[t + 1 :]
        ref = np.exp(ld - _ld(Kall[np.ix_(rest, rest)] + lam * np.eye(7)))
        assert np.isclose(loo[t], ref, rtol=1e-8)
    D = kd.d2_block(T, T)
    np.fill_diagonal(D, np.inf)
    assert np.array_equal(near, np.argmin(D, axis=1))
    assert np.allclose(psi[T], 0, atol=4 * kd.eps) and np.all(rank[T] >= kd.n - 8)  # last
    free = np.setdiff1d(np.arange(kd.n), T)
    assert np.allclose(psi[free], kd.d2_block(free, T).min(axis=1), rtol=0, atol=4 * kd.eps)
    order = free[np.lexsort((free, -var[free]))]
    assert np.array_equal(rank[order], np.arange(len(free)))
    # a test set outside the pool (here: the pool's configs 10..19 as an extxyz): the same σ²
    from ase.io import read, write

    write(tmp_path / "md.xyz", read(small_pool, "10:20"))
    res = _score_md(small_store, tmp_path, lam, "md.h5")
    assert res.exit_code == 0, res.stderr
    with h5py.File(tmp_path / "md.h5") as f:
        assert np.allclose(f["pool/var"][()], var[10:20], rtol=1e-6, atol=1e-12)
        assert np.allclose(f["pool/psi"][()], psi[10:20], rtol=0, atol=1e-9)
        assert np.allclose(f["train/loo_var"][()], loo, rtol=1e-8)
        assert json.loads(f.attrs["scored"])["test"]["n_configs"] == 10
    res = _score_md(small_store, tmp_path, lam, "md_scored.xyz")
    assert res.exit_code == 0, res.stderr
    frames = read(tmp_path / "md_scored.xyz", ":")
    assert len(frames) == 10 and np.allclose(
        [a.info["score_var"] for a in frames], var[10:20], rtol=1e-6, atol=1e-12
    )
    res = run("score", small_store, "--train", tmp_path / "sel.h5", "-o", tmp_path / "p.xyz")
    assert "--test" in one_line_error(res) and not (tmp_path / "p.xyz").exists()
    # the next maxent pick is the top-ranked candidate
    res = run(
        "select",
        small_store,
        "-n",
        9,
        "--continue",
        tmp_path / "sel.h5",
        "-o",
        tmp_path / "sel9.h5",
        "-q",
    )
    assert load_selection(tmp_path / "sel9.h5").index[8] == order[0]


def test_score_extxyz_and_store_json(small_pool, small_store, kd, tmp_path):
    from ase.io import read, write

    write(tmp_path / "train.xyz", read(small_pool, ":6"))
    out = tmp_path / "s.json"
    res = run("score", small_store, "--train", tmp_path / "train.xyz", "-o", out, "-q")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["format"] == "mlpdesign-scores" and doc["train"]["id"] == list(range(6))
    var, psi = np.array(doc["pool"]["var"]), np.array(doc["pool"]["psi"])
    assert np.all(psi[:6] < 1e-9) and np.all(psi[6:] > 1e-9)
    with open_store(small_store) as st:
        gk = K.StoreKernel(st, configs=(0, 6), like=kd)
    from mlpdesign.select.maxent import KernelOracle, variances_given

    ref = variances_given(KernelOracle(kd, gk), [-1 - j for j in range(6)], 1e-6)
    assert np.allclose(var, ref, rtol=1e-6, atol=1e-12)
    # a store described with the same gap string works as well (the pool itself)
    res = run("score", small_store, "--train", small_store, "-o", tmp_path / "all.h5", "-q")
    assert res.exit_code == 0, res.stderr
    with h5py.File(tmp_path / "all.h5") as f:
        assert float(f.attrs["max_var"]) < 3e-6  # every candidate is in the set


def test_score_bad_input(small_pool, small_store, tmp_path):
    from mlpdesign.describe.runner import describe
    from mlpdesign.generate.pool import PoolSpec, generate

    other = tmp_path / "other.h5"
    generate(tmp_path / "other.xyz", 12, PoolSpec(seed=3))
    describe(
        tmp_path / "other.xyz",
        other,
        gap="distance_2b cutoff=4.0 covariance_type=ard_se delta=0.5 theta_uniform=0.5",
    )
    out = tmp_path / "s.h5"
    res = run("score", small_store, "--train", other, "-o", out)
    assert "another gap string" in one_line_error(res)
    res = run("select", other, "-n", 3, "-o", tmp_path / "sel.h5", "-q")
    assert res.exit_code == 0
    res = run("score", small_store, "--train", tmp_path / "sel.h5", "-o", out)
    assert "another pool" in one_line_error(res)
    for args in (["--jitter", 0], ["--jitter", -1], ["--threshold", -1]):
        res = run("score", small_store, "--train", small_store, *args, "-o", out)
        one_line_error(res)
    res = run("score", small_store, "--train", tmp_path / "missing.xyz", "-o", out)
    one_line_error(res)
    assert not out.exists()
