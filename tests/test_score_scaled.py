"""``score`` streamed (``--memory-limit``, blocks spilled and re-read) and under ``mpiexec -n 3``
gives the in-memory scores, all equal to a brute-force reference (numpy solve on the full
kernel matrix); training and test sets of several files (extxyz + .traj, globs), for score
and for ``select --given``; bad input."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
from ase.io import read, write
from clihelpers import one_line_error, run
from test_scale import _mpi_missing, mpirun

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import file_sha256
from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels import core as K
from mlpdesign.score import run as score

LAM = 1e-4
T_POS = list(range(0, 40, 4))  # the training set: these pool frames, in this order


def _arrays(path) -> dict:
    with h5py.File(path) as f:
        out = {f"{g}/{k}": f[g][k][()] for g in ("pool", "train") for k in f[g]}
        out.update({k: f.attrs[k] for k in f.attrs if k != "command"})
    return out


def _least_limit(*args, **kw) -> str:
    """The smallest --memory-limit score runs with (from its one-line refusal)."""
    with pytest.raises(MlpdesignError, match="give at least") as e:
        score(*args, memory_limit="1K", **kw)
    return re.search(r"give at least (\S+)$", str(e.value)).group(1)


@pytest.fixture(scope="module")
def files(small_pool, tmp_path_factory):
    """The training frames as one extxyz, and split over an extxyz and two .traj files;
    pool frames 20..39 as a test set, one extxyz and split over an extxyz and a .traj."""
    d = tmp_path_factory.mktemp("score_files")
    frames = read(small_pool, ":")
    tr = [frames[i] for i in T_POS]
    write(d / "train.xyz", tr)
    write(d / "part.xyz", tr[:4])
    write(d / "tr_a.traj", tr[4:7])
    write(d / "tr_b.traj", tr[7:])
    bare = [a.copy() for a in tr[4:]]
    for a in bare:
        del a.info["candidate_id"]
    write(d / "noid.traj", bare)  # ids by position: 4 and 8 are those of part.xyz too
    write(d / "md.xyz", frames[20:40])
    write(d / "md_a.xyz", frames[20:31])
    write(d / "md_b.traj", frames[31:40])
    return d


@pytest.fixture(scope="module")
def reference(small_store):
    """Brute force on the pool's full kernel matrix: σ², Ψ, leave-one-out σ², log det."""
    with open_store(small_store) as st:
        kd = K.StoreKernel(st)
    n = kd.n
    Kall = kd.k_block(np.arange(n), np.arange(n))
    np.fill_diagonal(Kall, 1.0)
    A = Kall[np.ix_(T_POS, T_POS)] + LAM * np.eye(len(T_POS))
    kx = Kall[:, T_POS]
    var = 1.0 + LAM - np.einsum("ij,ij->i", kx, np.linalg.solve(A, kx.T).T)
    psi = kd.d2_block(np.arange(n), T_POS).min(axis=1)
    loo = 1.0 / np.diag(np.linalg.inv(A))
    return dict(var=var, psi=psi, loo=loo, logdet=float(np.linalg.slogdet(A)[1]), eps=kd.eps)


def _check_reference(a: dict, ref: dict, rows=slice(None)) -> None:
    assert np.allclose(a["pool/var"], ref["var"][rows], rtol=1e-8, atol=1e-12)
    assert np.allclose(a["pool/psi"], ref["psi"][rows], rtol=0, atol=4 * ref["eps"])
    assert np.allclose(a["train/loo_var"], ref["loo"], rtol=1e-8)
    assert abs(float(a["logdet"]) - ref["logdet"]) < 1e-8


def _close_scores(a: dict, b: dict) -> None:
    """Scores on two block grids, within rounding: Ψ and σ² to 1e-12 of k(x,x) + λ
    (= 1 + λ, normalised; a D² lies in [0, 2]), the same ranks, and the training set's
    values (the same arithmetic on any grid) bit for bit."""
    assert np.array_equal(a["pool/rank"], b["pool/rank"])
    assert np.allclose(a["pool/var"], b["pool/var"], rtol=0, atol=1e-12)
    assert np.allclose(a["pool/psi"], b["pool/psi"], rtol=0, atol=1e-12)
    for k in ("train/loo_var", "train/nearest", "train/nearest_d2", "train/id", "logdet"):
        assert np.array_equal(a[k], b[k]), k


def _same_bits(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert np.array_equal(b[k], v), k


def test_pool_scores_memory_streamed_mpi_equal_brute_force(small_store, files, reference, tmp_path):
    """In memory (every block held), streamed (every block spilled and re-read) and under
    mpiexec -n 3 on one block grid: the same bits; on another grid (the default: one
    block here) within rounding; all equal to the brute force."""
    train = files / "train.xyz"
    out = {m: tmp_path / f"{m}.h5" for m in ("default", "mem", "str", "mpi")}
    score(small_store, train, out["default"], jitter=LAM)
    score(small_store, train, out["mem"], jitter=LAM, block_rows=8)
    limit = _least_limit(small_store, train, jitter=LAM, block_rows=8)
    sc = score(small_store, train, out["str"], jitter=LAM, memory_limit=limit, block_rows=8)
    s = sc.stats
    assert s["cached_blocks"] < s["blocks"] and s["blocks_read"] > s["blocks"]  # re-read
    default, mem, streamed = (_arrays(out[m]) for m in ("default", "mem", "str"))
    _check_reference(default, reference)
    _check_reference(streamed, reference)
    _same_bits(mem, streamed)
    _close_scores(default, streamed)
    assert np.array_equal(mem["train/id"], np.arange(len(T_POS)))
    if _mpi_missing() is None:
        mpirun(
            3, "score", small_store, "--train", train, "--jitter", LAM, "--block-rows", 8,
            "-o", out["mpi"], "-q", cwd=tmp_path,
        )  # fmt: skip
        _same_bits(streamed, _arrays(out["mpi"]))  # any number of ranks, any limit
    res = run(
        "score", small_store, "--train", train, "--jitter", LAM, "--memory-limit", limit,
        "--block-rows", 8, "-o", tmp_path / "cli.h5",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert re.search(r"streamed \d+ blocks on 1 rank\(s\)", res.stderr)
    _same_bits(streamed, _arrays(tmp_path / "cli.h5"))


def test_selection_and_test_files_memory_streamed_mpi(small_store, files, reference, tmp_path):
    """A selection of the pool as the training set; --test of an extxyz plus a .traj
    (pool frames 20..39): σ² of the pool's, the reference's, in every mode."""
    sel = tmp_path / "sel.h5"
    res = run("select", small_store, "-n", 7, "--criterion", "maxent", "-o", sel, "-q")
    assert res.exit_code == 0, res.stderr
    picks = load_selection(sel)
    test = [files / "md_a.xyz", files / "md_b.traj"]
    out = {m: tmp_path / f"{m}.h5" for m in ("pool", "default", "mem", "str", "mpi", "one")}
    score(small_store, sel, out["pool"], jitter=LAM)
    score(small_store, sel, out["default"], jitter=LAM, test=test)
    score(small_store, sel, out["mem"], jitter=LAM, test=test, block_rows=4)
    score(small_store, sel, out["one"], jitter=LAM, test=files / "md.xyz")
    limit = _least_limit(small_store, sel, jitter=LAM, test=test, block_rows=4)
    score(small_store, sel, out["str"], jitter=LAM, test=test, memory_limit=limit, block_rows=4)
    pool, mem, streamed = (_arrays(out[m]) for m in ("pool", "mem", "str"))
    assert np.array_equal(mem["train/id"], picks.candidate_id)
    _same_bits(mem, streamed)
    _close_scores(_arrays(out["default"]), streamed)
    assert np.allclose(mem["pool/var"], pool["pool/var"][20:40], rtol=1e-10, atol=1e-13)
    assert np.allclose(mem["pool/psi"], pool["pool/psi"][20:40], rtol=0, atol=1e-12)
    assert np.allclose(mem["pool/var"], _arrays(out["one"])["pool/var"], rtol=0, atol=1e-13)
    # the brute force with the selection's picks as T
    T = list(picks.index)
    with open_store(small_store) as st:
        kd = K.StoreKernel(st)
    Kall = kd.k_block(np.arange(kd.n), np.arange(kd.n))
    np.fill_diagonal(Kall, 1.0)
    kx = Kall[20:40][:, T]
    A = Kall[np.ix_(T, T)] + LAM * np.eye(len(T))
    ref = 1 + LAM - np.einsum("ij,ij->i", kx, np.linalg.solve(A, kx.T).T)
    assert np.allclose(streamed["pool/var"], ref, rtol=1e-8, atol=1e-12)
    scored = json.loads(streamed["scored"])["test"]
    assert [f["path"] for f in scored["files"]] == [str(p) for p in test]
    assert [f["sha256"] for f in scored["files"]] == [file_sha256(p) for p in test]
    assert scored["kind"] == "frames" and scored["n_configs"] == 20
    if _mpi_missing() is None:
        mpirun(
            3, "score", small_store, "--train", sel, "--test", test[0], "--test", test[1],
            "--jitter", LAM, "--block-rows", 4, "-o", out["mpi"], "-q", cwd=tmp_path,
        )  # fmt: skip
        _same_bits(streamed, _arrays(out["mpi"]))
    # the test frames of both files, scored, as one extxyz
    res = run(
        "score", small_store, "--train", sel, "--test", test[0], "--test", files / "md_*.traj",
        "--jitter", LAM, "-o", tmp_path / "scored.xyz", "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    frames = read(tmp_path / "scored.xyz", ":")
    assert len(frames) == 20
    default = _arrays(out["default"])["pool/var"]
    assert np.array_equal([a.info["score_var"] for a in frames], default)
    assert np.allclose(frames[15].positions, read(files / "md.xyz", 15).positions)


def test_training_set_of_several_formats_and_a_glob(small_store, files, reference, tmp_path):
    """--train part.xyz --train 'tr_*.traj': one set, the frames of train.xyz in order."""
    one = score(small_store, files / "train.xyz", jitter=LAM)
    res = run(
        "score", small_store, "--train", files / "part.xyz", "--train", files / "tr_*.traj",
        "--jitter", LAM, "-o", tmp_path / "s.h5", "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    a = _arrays(tmp_path / "s.h5")
    _check_reference(a, reference)
    assert np.array_equal(a["pool/var"], one.var) and np.array_equal(a["pool/psi"], one.psi)
    info = json.loads(a["train"])
    paths = [files / "part.xyz", files / "tr_a.traj", files / "tr_b.traj"]
    assert info["files"] == [{"path": str(p), "sha256": file_sha256(p)} for p in paths]
    assert info["kind"] == "frames" and info["n_configs"] == len(T_POS)
    # an old set's candidate ids beside frames without any: the set's own ids, same scores
    two = score(small_store, [files / "part.xyz", files / "noid.traj"], jitter=LAM)
    assert np.array_equal(two.var, one.var) and np.array_equal(two.psi, one.psi)


def test_select_given_of_several_formats_and_a_glob(small_store, files, tmp_path):
    base = ["select", small_store, "-n", 6, "--no-stratify", "-q"]
    res = run(*base, "--given", files / "train.xyz", "-o", tmp_path / "one.h5")
    assert res.exit_code == 0, res.stderr
    given = ["--given", files / "part.xyz", "--given", files / "tr_*.traj"]
    res = run(*base, *given, "-o", tmp_path / "many.h5")
    assert res.exit_code == 0, res.stderr
    one, many = load_selection(tmp_path / "one.h5"), load_selection(tmp_path / "many.h5")
    assert np.array_equal(one.index, many.index) and np.array_equal(one.psi, many.psi)
    assert not set(many.index.tolist()) & set(T_POS)
    (g,) = json.loads(many.attrs["given"])
    paths = [files / "part.xyz", files / "tr_a.traj", files / "tr_b.traj"]
    assert [f["path"] for f in g["files"]] == [str(p) for p in paths]
    assert [f["sha256"] for f in g["files"]] == [file_sha256(p) for p in paths]
    assert g["n_configs"] == len(T_POS) and g["kind"] == "frames"
    # --continue needs the same given files
    res = run(*base[:3], 9, "--continue", tmp_path / "many.h5", *given, "-o", tmp_path / "c.h5")
    assert res.exit_code == 0, res.stderr
    assert np.array_equal(load_selection(tmp_path / "c.h5").index[:6], many.index)
    res = run(*base[:3], 9, "--continue", tmp_path / "many.h5", "--given", files / "part.xyz",
              "-o", tmp_path / "d.h5")  # fmt: skip
    assert "same --given" in one_line_error(res) and not (tmp_path / "d.h5").exists()


def test_score_bad_training_and_test_sets(small_store, files, tmp_path):
    """A training (or test) store of another gap string, a selection or a store mixed with
    frames, no file for a glob, too small a limit: one line naming the file, exit 2, no
    output, in memory and streamed."""
    from mlpdesign.describe.runner import describe

    other = tmp_path / "other.h5"
    describe(
        files / "part.xyz",
        other,
        gap="distance_2b cutoff=4.0 covariance_type=ard_se delta=0.5 theta_uniform=0.5",
    )
    out, fig = tmp_path / "s.h5", tmp_path / "f.png"
    sel = tmp_path / "sel.h5"
    assert run("select", small_store, "-n", 3, "-o", sel, "-q").exit_code == 0
    for mode in ([], ["--memory-limit", "64M", "--block-rows", 8]):
        o = ["-o", out, "--figure", fig, *mode]
        res = run("score", small_store, "--train", other, *o)
        line = one_line_error(res)
        assert str(other) in line and "another gap string" in line
        res = run("score", small_store, "--train", files / "train.xyz", "--test", other, *o)
        line = one_line_error(res)
        assert str(other) in line and "another gap string" in line
        res = run("score", small_store, "--train", sel, "--train", files / "part.xyz", *o)
        assert f"{sel}: a selection cannot be combined" in one_line_error(res)
        res = run("score", small_store, "--train", small_store, "--train", files / "part.xyz", *o)
        assert f"{small_store}: a store cannot be combined" in one_line_error(res)
        res = run("score", small_store, "--train", tmp_path / "none_*.traj", *o)
        assert "none_*.traj: no training set matches" in one_line_error(res)
        assert not out.exists() and not fig.exists()
    res = run("score", small_store, "--train", sel, "--memory-limit", "1K", "-o", out)
    assert "give at least" in one_line_error(res) and not out.exists()


def test_tie_ranks_is_the_repeated_tie_argmax():
    """The rank by σ² is select's tie rule applied again and again (a plain loop)."""
    from mlpdesign.score.stage import tie_ranks

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 30))
        var, dup = np.round(rng.random(n), 1), rng.random(n) < 0.2
        tie = float(rng.choice([0.0, 0.05, 0.15]))
        ref, k = np.empty(n, dtype=np.int64), 0
        for members in (False, True):
            left = [i for i in range(n) if dup[i] == members]
            while left:
                top = max(var[i] for i in left)
                i = min(i for i in left if var[i] >= top - tie)
                ref[i], k = k, k + 1
                left.remove(i)
        assert np.array_equal(tie_ranks(var, dup, tie), ref)
