"""``mlpdesign report`` on a real (small) Zr store, against a brute-force GAP kernel."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from ase.io import read
from click.testing import CliRunner

from mlpdesign.cli import cli
from mlpdesign.generate.pool import deformation_of
from mlpdesign.io.store import open_store
from mlpdesign.report import metrics as R
from mlpdesign.select.greedy import select_store

F64 = '{"dtype": "float64"}'


@pytest.fixture(scope="module")
def sels(small_store, tmp_path_factory):
    """A 12-pick plain max-min selection (h5 and txt), a stratified one and a 12-pick random
    one of ``small_store``."""
    d = tmp_path_factory.mktemp("sel")
    select_store(small_store, 12, d / "opt.h5", dtype="float64", stratify=False)
    select_store(small_store, 12, d / "opt.txt", dtype="float64", stratify=False)
    select_store(small_store, 12, d / "str.h5", dtype="float64")
    select_store(small_store, 12, d / "rnd.h5", method="random", seed=5, dtype="float64")
    return d


def brute_kernel(store_path) -> np.ndarray:
    """Normalised GAP energy kernel between all configs, as the plain double sums over
    pairs (Gaussian, theta) and atoms (SOAP dot product ^ zeta), straight from the store."""
    with open_store(store_path) as st:
        n = st.n_configs
        K = np.zeros((n, n))
        for k, spec in enumerate(st.descriptors):
            rows, w, off = st.rows(k), st.weights(k), st.offsets(k)
            delta = float(spec.kernel["delta"])
            per = [(rows[off[c] : off[c + 1]], w[off[c] : off[c + 1]]) for c in range(n)]
            for a, b in itertools.combinations_with_replacement(range(n), 2):
                (xa, wa), (xb, wb) = per[a], per[b]
                if spec.kernel["covariance_type"] == "dot_product":
                    f = (xa @ xb.T) ** int(spec.kernel["zeta"])
                else:
                    th = float(spec.kernel["theta_uniform"])
                    f = np.exp(-((xa[:, :1] - xb[:, :1].T) ** 2) / (2 * th * th))
                K[a, b] = K[b, a] = K[a, b] + delta**2 * (wa @ f @ wb)
    d = np.sqrt(np.diag(K))
    return K / d[:, None] / d[None, :]


@pytest.fixture(scope="module")
def brute(small_store):
    k = brute_kernel(small_store)
    return k, np.maximum(2.0 - 2.0 * k, 0.0)


def brute_metrics(k, d2, idx, jitter):
    pairs = [d2[a, b] for a, b in itertools.combinations(idx, 2)]
    return {
        "min_pairwise_d2": min(pairs),
        "covering_radius_d2": d2[:, idx].min(axis=1).max(),
        "logdet_k": np.linalg.slogdet(k[np.ix_(idx, idx)] + jitter * np.eye(len(idx)))[1],
        "median_pairwise_d2": float(np.median(pairs)),
    }


def run(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


@pytest.fixture(scope="module")
def out(small_store, sels, tmp_path_factory):
    o = tmp_path_factory.mktemp("rep") / "report"
    res = run(
        small_store,
        sels / "opt.h5",
        sels / "rnd.h5",
        sels / "opt.txt",
        "--random",
        15,
        "--sizes",
        "6,12",
        "--seed",
        4,
        "--jitter",
        1e-6,
        "--kernel",
        F64,
        "-o",
        o,
        "-q",
    )
    assert res.exit_code == 0, res.output + res.stderr
    return o, res.stdout, json.loads((o / "metrics.json").read_text())


def test_metrics_match_brute_force_kernel(out, brute, small_store, small_pool):
    k, d2 = brute
    _, _, doc = out
    with open_store(small_store) as st:
        row = {int(c): i for i, c in enumerate(st.candidate_id)}
    from mlpdesign.io.selection import load_selection

    for d in doc["designs"]:
        sel = load_selection(d["path"])
        idx = [row[int(c)] for c in sel.candidate_id]
        for m in d["metrics"]:
            want = brute_metrics(k, d2, idx[: m["size"]], 1e-6)
            for key, v in want.items():
                assert m[key] == pytest.approx(v, rel=1e-5, abs=1e-7), (d["name"], key)
            assert m["min_pairwise_d"] == pytest.approx(
                math.sqrt(want["min_pairwise_d2"]), rel=1e-5, abs=1e-6
            )
    # random designs: the same seeded draws, measured by brute force
    draws = R.random_designs(len(k), 12, 15, seed=4)
    for r in doc["random"]["metrics"]:
        vals = [brute_metrics(k, d2, list(x[: r["size"]]), 1e-6) for x in draws]
        for key in R.CRITERIA:
            assert r[key]["median"] == pytest.approx(
                np.median([v[key] for v in vals]), rel=1e-5, abs=1e-7
            )
    # strain and structure shares from the pool file itself
    frames = read(small_pool, ":")
    strain = np.array([np.linalg.norm(deformation_of(a) - np.eye(3)) for a in frames])
    assert doc["pool"]["strain_norm"]["median"] == pytest.approx(np.median(strain), rel=1e-12)
    labels = [a.info["structure"] for a in frames]
    assert doc["pool"]["structure_share"] == pytest.approx(R.structure_shares(labels))


def test_psi_is_the_covering_radius_of_the_previous_prefix(out, small_store):
    from mlpdesign.io.selection import load_selection
    from mlpdesign.kernels.core import StoreKernel

    doc = out[2]
    sel = load_selection(doc["designs"][0]["path"])
    with open_store(small_store) as st:
        kd = StoreKernel(st, dtype="float64")
    (ev,) = R.evaluate(kd, [sel.index])
    assert math.isinf(sel.psi[0])
    np.testing.assert_allclose(ev.covering[:-1], sel.psi[1:], rtol=1e-9, atol=1e-12)
    # stratified: each pick is the farthest of its structure, so at most the covering radius
    strat = load_selection(doc["designs"][0]["path"].replace("opt.h5", "str.h5"))
    assert strat.attrs["stratify"] == "structure"
    (ev,) = R.evaluate(kd, [strat.index])
    assert np.all(strat.psi[1:] <= ev.covering[:-1] * (1 + 1e-9) + 1e-12)
    assert np.any(strat.psi[1:] < ev.covering[:-1] * (1 - 1e-6))


def test_optimised_design_beats_median_random_on_all_criteria(out):
    doc = out[2]
    opt = doc["designs"][0]
    assert opt["method"] == "maxmin"
    rnd = {r["size"]: r for r in doc["random"]["metrics"]}
    for m in opt["metrics"]:
        r = rnd[m["size"]]
        assert m["min_pairwise_d2"] > r["min_pairwise_d2"]["median"]
        assert m["covering_radius_d2"] < r["covering_radius_d2"]["median"]
        assert m["logdet_k"] > r["logdet_k"]["median"]
        assert all(v > 0.5 for v in m["beats_random"].values())


def test_report_outputs_and_names(out):
    o, stdout, doc = out
    assert [d["name"] for d in doc["designs"]] == ["opt.h5", "rnd.h5", "opt.txt"]
    assert doc["designs"][0]["metrics"] == doc["designs"][2]["metrics"]  # h5 == txt
    assert doc["figures"] == list(R.FIGURES)
    for name in doc["figures"]:
        png = (o / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert sorted(p.name for p in o.iterdir()) == sorted([*R.FIGURES, "metrics.json"])
    assert doc["pool"]["kernel"] == {"dtype": "float64"} and doc["logdet_jitter"] == 1e-6
    assert [ln.split()[:2] for ln in stdout.splitlines() if ln.startswith("opt.")] == [
        ["opt.h5", "6"],
        ["opt.h5", "12"],
        ["opt.txt", "6"],
        ["opt.txt", "12"],
    ]


def test_same_seed_same_bytes(small_store, sels, tmp_path):
    for name in ("a", "b"):
        res = run(
            small_store,
            sels / "opt.h5",
            "--random",
            5,
            "-o",
            tmp_path / name,
            "-q",
            "--format",
            "none",
        )
        assert res.exit_code == 0, res.stderr
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_default_kernel_is_the_selections(small_store, sels):
    res = run(small_store, sels / "opt.h5", "--random", 3, "--format", "json", "-q")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["pool"]["kernel"]["dtype"] == "float64"  # the selection was made in float64
    assert doc["pool"]["kernel"]["normalize"] is True
    assert doc["figures"] == []  # nothing written without -o


def test_cli_jitter_default_is_the_library_default():
    from mlpdesign.cli.report import command

    (opt,) = [p for p in command.params if p.name == "jitter"]
    assert opt.default == R.DEFAULT_JITTER


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--sizes", "13"], "size 13 is outside 1..12"),
        (["--sizes", "0"], "positive"),
        (["--kernel", "[1]"], "JSON object"),
        (["--kernel", '{"colour": 1}'], "unknown kernel option 'colour'"),
        (["--jitter", "-1"], "--jitter"),
    ],
)
def test_bad_options_are_refused(small_store, sels, tmp_path, args, msg):
    res = run(small_store, sels / "opt.h5", "-o", tmp_path / "r", *args)
    assert res.exit_code == 2
    assert msg in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary left behind


def test_existing_output_refused_then_forced(small_store, sels, tmp_path):
    (tmp_path / "r").mkdir()
    res = run(small_store, sels / "opt.h5", "--random", 2, "-o", tmp_path / "r")
    assert res.exit_code == 2 and "--force" in res.stderr
    res = run(
        small_store,
        sels / "opt.h5",
        "--random",
        2,
        "-o",
        tmp_path / "r",
        "--force",
        "--format",
        "none",
    )
    assert res.exit_code == 0 and (tmp_path / "r" / "metrics.json").is_file()


def test_selection_of_another_pool_is_refused(small_store, sels, tmp_path):
    from mlpdesign.io.selection import load_selection, write_selection

    sel = load_selection(sels / "opt.h5")
    sel.attrs["pool_sha256"] = "0" * 64
    write_selection(tmp_path / "other.h5", sel)
    res = run(small_store, tmp_path / "other.h5", "-o", tmp_path / "r")
    assert res.exit_code == 2 and "different pool" in res.stderr
    assert not (tmp_path / "r").exists()


def test_missing_inputs_are_one_line(small_store, sels, tmp_path):
    res = run(small_store, tmp_path / "nope.h5", "-o", tmp_path / "r")
    assert res.exit_code == 2 and res.stderr.startswith("mlpdesign: error:")
    res = run(sels / "opt.h5", sels / "opt.h5", "-o", tmp_path / "r")
    assert res.exit_code == 2 and "not an mlpdesign descriptor store" in res.stderr
    res = run(small_store, "--format", "text")
    assert res.exit_code == 2  # no selection given


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opts", [{}, {"per_atom": True, "normalize": False}, {"balance": True}])
def test_blocked_rows_equal_the_kernels_own_rows(small_store, dtype, opts):
    """The report's block path (one product per term) = KernelData.d2_range row by row."""
    from mlpdesign.kernels.core import StoreKernel

    with open_store(small_store) as st:
        kd = StoreKernel(st, dtype=dtype, **opts)
    o = R.KernelDataOracle(kd)
    rows = np.array([3, 0, 39, 17, 3])
    for c0, c1 in ((0, 40), (5, 23), (39, 40)):
        want = np.array([kd.d2_range(kd.query(int(i)), c0, c1) for i in rows])
        # both within the kernel's provable rounding bound eps of the exact D2
        np.testing.assert_allclose(o.d2_rows(rows, c0, c1), want, rtol=0, atol=2 * kd.eps)
    # and the generic path through the kernel block agrees with it
    np.testing.assert_allclose(
        R.d2_block(o, rows, np.arange(40)), o.d2_rows(rows, 0, 40), rtol=0, atol=2 * kd.eps
    )
    if dtype == "float64":
        assert kd.eps < 1e-10


def test_blocked_rows_split_into_groups_within_budget(small_store):
    from mlpdesign.kernels.core import StoreKernel

    with open_store(small_store) as st:
        kd = StoreKernel(st, dtype="float64")
    o = R.KernelDataOracle(kd)
    rows = np.arange(0, 40, 3)
    want = o.d2_rows(rows, 0, 40)
    o.budget = 1  # one query per product
    np.testing.assert_allclose(o.d2_rows(rows, 0, 40), want, rtol=0, atol=2 * kd.eps)
    curves = R.covering_curves(o, [rows], chunk=7, block=3)
    o.budget = 1 << 23
    np.testing.assert_allclose(curves[0], R.covering_curves(o, [rows])[0], atol=2 * kd.eps)
