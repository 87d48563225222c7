"""Report metrics against brute force on small point sets (no store needed)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mlpdesign.errors import MlpdesignError
from mlpdesign.kernels import core as kernels
from mlpdesign.report import metrics as R
from mlpdesign.report.figures import write_figures


class BruteOracle:
    """The plainest oracle: a kernel function on a feature array, k(i, i) computed one by one."""

    def __init__(self, x: np.ndarray, kind: str = "linear") -> None:
        self.x, self.kind = np.asarray(x, dtype=np.float64), kind

    def k(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            return a @ b.T
        return np.exp(-cdist(a, b, "sqeuclidean") / 2.0)

    @property
    def n(self) -> int:
        return len(self.x)

    def diag(self) -> np.ndarray:
        return np.array([self.k(self.x[i : i + 1], self.x[i : i + 1])[0, 0] for i in range(self.n)])

    def block(self, rows, cols) -> np.ndarray:
        return self.k(self.x[rows], self.x[cols])


def oracle_for(x: np.ndarray, kind: str, via: str):
    """The same kernel three ways: brute force, or the library's KernelData (float64)."""
    if via == "brute":
        return BruteOracle(x, kind)
    if kind == "linear":
        return kernels.linear(x, normalize=False)
    return kernels.gaussian(x, 1.0)


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return np.random.default_rng(3).normal(0.0, 0.7, (61, 3))


def brute_d2(x: np.ndarray, kind: str) -> np.ndarray:
    """Full N x N D2 matrix, the plain way."""
    if kind == "linear":
        return cdist(x, x, "sqeuclidean")
    k = np.exp(-cdist(x, x, "sqeuclidean") / 2.0)
    return 2.0 - 2.0 * k


def brute_kernel(x: np.ndarray, kind: str) -> np.ndarray:
    return x @ x.T if kind == "linear" else np.exp(-cdist(x, x, "sqeuclidean") / 2.0)


VIA = ["brute", "kerneldata"]


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("kind", ["linear", "gaussian"])
def test_d2_block_matches_brute_force(points, kind, via):
    o = oracle_for(points, kind, via)
    full = brute_d2(points, kind)
    rows, cols = np.array([5, 0, 17, 60]), np.arange(10, 40)
    np.testing.assert_allclose(
        R.d2_block(o, rows, cols), full[np.ix_(rows, cols)], rtol=1e-10, atol=1e-12
    )
    # a candidate's distance to itself is exactly 0
    assert R.d2_block(o, np.array([12]), np.array([12]))[0, 0] == 0.0


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("kind", ["linear", "gaussian"])
def test_min_pairwise_curve_matches_brute_force(points, kind, via):
    o = oracle_for(points, kind, via)
    full = brute_d2(points, kind)
    design = np.random.default_rng(1).permutation(len(points))[:15]
    _, d2 = R.pairwise_d2(o, design)
    curve = R.min_pairwise_curve(d2)
    assert curve[0] == math.inf
    for m in range(2, len(design) + 1):
        want = min(full[a, b] for a, b in itertools.combinations(design[:m], 2))
        assert curve[m - 1] == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("kind", ["linear", "gaussian"])
@pytest.mark.parametrize("chunk,block", [(7, 4), (None, 256), (1, 1)])
def test_covering_curve_matches_brute_force(points, kind, chunk, block, via):
    o = oracle_for(points, kind, via)
    full = brute_d2(points, kind)
    designs = [np.random.default_rng(s).permutation(len(points))[:n] for s, n in ((1, 12), (2, 5))]
    curves = R.covering_curves(o, designs, chunk=chunk, block=block)
    for d, c in zip(designs, curves, strict=True):
        for m in range(1, len(d) + 1):
            want = max(min(full[i, j] for j in d[:m]) for i in range(len(points)))
            assert c[m - 1] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_covering_progress_counts_the_pool(points):
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    R.covering_curves(BruteOracle(points), [np.arange(3)], chunk=10, progress=bar)
    assert bar.n == len(points)


@pytest.mark.parametrize("kind", ["linear", "gaussian"])
def test_log_det_matches_slogdet(points, kind):
    design = np.arange(0, 40, 3)
    k = brute_kernel(points[design], kind)
    for jitter in (1e-8, 1e-3, 0.5):
        sign, want = np.linalg.slogdet(k + jitter * np.eye(len(design)))
        assert sign == 1
        assert R.log_det(k, jitter) == pytest.approx(want, rel=1e-7)  # rank 3 + 1e-8


def test_log_det_of_indefinite_matrix_clips_eigenvalues():
    k = np.array([[1.0, 1.0 + 1e-6], [1.0 + 1e-6, 1.0]])  # eigenvalues 2 and -1e-6
    w = np.linalg.eigvalsh(k)
    assert R.log_det(k, 1e-9) == pytest.approx(np.log(np.maximum(w, 0) + 1e-9).sum())
    assert R.log_det(np.zeros((0, 0))) == 0.0


def test_strain_magnitude_and_structure_shares():
    rng = np.random.default_rng(0)
    f = np.eye(3)[None] + 0.05 * rng.normal(size=(6, 3, 3))
    got = R.strain_magnitude(f.reshape(6, 9))
    want = [
        math.sqrt(sum((f[n, i, j] - (i == j)) ** 2 for i in range(3) for j in range(3)))
        for n in range(6)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert R.structure_shares(["hcp", "bcc", "hcp", "fcc"]) == {
        "bcc": 0.25,
        "fcc": 0.25,
        "hcp": 0.5,
    }


def test_random_designs_are_seeded_and_without_repeats():
    a = R.random_designs(50, 20, 3, seed=4)
    b = R.random_designs(50, 20, 3, seed=4)
    c = R.random_designs(50, 20, 3, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert all(len(np.unique(x)) == 20 for x in a)
    with pytest.raises(MlpdesignError):
        R.random_designs(5, 6, 1, seed=0)


def greedy(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain max-min (paper appendix B) on Euclidean distance, with psi in D2."""
    first = int(np.argmax(np.linalg.norm(x, axis=1)))
    design, psi_at = [first], [math.inf]
    psi = np.full(len(x), np.inf)
    for _ in range(n - 1):
        psi = np.minimum(psi, ((x - x[design[-1]]) ** 2).sum(1))
        j = int(np.argmax(psi))
        design.append(j)
        psi_at.append(float(psi[j]))
    return np.array(design), np.array(psi_at)


@pytest.fixture(scope="module")
def toy(points):
    design, psi = greedy(points, 12)
    labels = np.array(["hcp", "fcc", "bcc"])[np.arange(len(points)) % 3]
    f = np.eye(3)[None] + 0.02 * np.random.default_rng(5).normal(size=(len(points), 3, 3))
    data = R.compute(
        BruteOracle(points),
        [R.Design("opt", design, psi, method="maxmin")],
        sizes=[4, 12],
        n_random=9,
        seed=2,
        jitter=1e-6,
        structure=labels,
        F=f.reshape(-1, 9),
        pool={"source": "toy"},
        chunk=16,
        block=5,
    )
    return points, design, psi, data


METRIC_KEYS = {
    "size",
    "min_pairwise_d2",
    "min_pairwise_d",
    "covering_radius_d2",
    "covering_radius_d",
    "logdet_k",
    "median_pairwise_d2",
    "beats_random",
}
STATS_KEYS = {"median", "mean", "min", "max", "q10", "q90"}


def test_metrics_schema_is_stable(toy):
    doc = json.loads(R.json_dumps(toy[3].metrics))
    assert set(doc) == {
        "format",
        "format_version",
        "distance",
        "criteria",
        "logdet_jitter",
        "seed",
        "n_random",
        "pool",
        "designs",
        "random",
        "figures",
    }
    assert doc["format"] == "mlpdesign-report" and doc["format_version"] == 1
    assert set(doc["pool"]) == {"source", "n_candidates", "strain_norm", "structure_share"}
    assert set(doc["pool"]["strain_norm"]) == STATS_KEYS
    (d,) = doc["designs"]
    assert set(d) == {
        "name",
        "path",
        "method",
        "n",
        "conditional",
        "psi_last_d2",
        "metrics",
        "strain_norm",
        "structure_share",
        "cover_targets",  # added by issue 14 (report --cover-targets)
        "ordered",  # added by issue 13 (select --refine exchange: a set)
        "refine",
    }
    assert [m["size"] for m in d["metrics"]] == [4, 12]
    for m in d["metrics"]:
        assert set(m) == METRIC_KEYS
        assert set(m["beats_random"]) == set(R.CRITERIA)
    assert set(doc["random"]) == {"metrics", "strain_norm", "structure_share"}
    for r in doc["random"]["metrics"]:
        assert set(r) == {"size", *R.CRITERIA, "median_pairwise_d2"}
        for k in R.CRITERIA:
            assert set(r[k]) == STATS_KEYS
    assert set(doc["criteria"]) == {*R.CRITERIA, "beats_random"}


def test_metrics_match_brute_force(toy):
    points, design, psi, data = toy
    full = cdist(points, points, "sqeuclidean")
    m12 = data.metrics["designs"][0]["metrics"][1]
    sub = design[:12]
    mp = min(full[a, b] for a, b in itertools.combinations(sub, 2))
    cover = full[:, sub].min(axis=1).max()
    k = points[sub] @ points[sub].T
    assert m12["min_pairwise_d2"] == pytest.approx(mp, rel=1e-9)
    assert m12["min_pairwise_d"] == pytest.approx(math.sqrt(mp), rel=1e-9)
    assert m12["covering_radius_d2"] == pytest.approx(cover, rel=1e-9)
    assert m12["covering_radius_d"] == pytest.approx(math.sqrt(cover), rel=1e-9)
    assert m12["logdet_k"] == pytest.approx(np.linalg.slogdet(k + 1e-6 * np.eye(12))[1])
    # Psi of pick m+1 is the covering radius of the first m (greedy, unconditional)
    np.testing.assert_allclose(data.evals[0].covering[:-1], psi[1:], rtol=1e-9)
    # greedy max-min: Psi is non-increasing and equals the min pairwise D2 of each prefix
    np.testing.assert_allclose(data.evals[0].min_pairwise[1:], psi[1:], rtol=1e-9)
    # random designs: brute force on the first size-4 prefix of every draw
    draws = R.random_designs(len(points), 12, 9, seed=2)
    vals = [min(full[a, b] for a, b in itertools.combinations(d[:4], 2)) for d in draws]
    r4 = data.metrics["random"]["metrics"][0]
    assert r4["size"] == 4
    assert r4["min_pairwise_d2"]["median"] == pytest.approx(np.median(vals), rel=1e-9)
    mine = data.metrics["designs"][0]["metrics"][0]["min_pairwise_d2"]
    assert data.metrics["designs"][0]["metrics"][0]["beats_random"][
        "min_pairwise_d2"
    ] == pytest.approx(np.mean([mine > v for v in vals]))


def test_greedy_design_beats_random_on_all_criteria(toy):
    for m in toy[3].metrics["designs"][0]["metrics"]:
        assert m["beats_random"]["min_pairwise_d2"] == 1.0
        assert all(v > 0.5 for v in m["beats_random"].values()), m["beats_random"]


def test_strain_and_structure_statistics(toy):
    points, design, _, data = toy
    doc = data.metrics
    assert doc["pool"]["structure_share"] == pytest.approx(
        {"bcc": 20 / 61, "fcc": 20 / 61, "hcp": 21 / 61}
    )
    labels = np.array(["hcp", "fcc", "bcc"])[design % 3]
    assert doc["designs"][0]["structure_share"] == R.structure_shares(labels)
    assert doc["designs"][0]["strain_norm"]["median"] == pytest.approx(
        np.median(data.strain[design])
    )


def test_same_seed_same_json(points, toy):
    again = R.compute(
        BruteOracle(points),
        [R.Design("opt", toy[1], toy[2], method="maxmin")],
        sizes=[4, 12],
        n_random=9,
        seed=2,
        jitter=1e-6,
        structure=np.array(["hcp", "fcc", "bcc"])[np.arange(len(points)) % 3],
        F=(
            np.eye(3)[None] + 0.02 * np.random.default_rng(5).normal(size=(len(points), 3, 3))
        ).reshape(-1, 9),
        pool={"source": "toy"},
    )
    assert R.json_dumps(again.metrics) == R.json_dumps(toy[3].metrics)


def test_format_text_lists_every_size(toy):
    text = R.format_text(toy[3].metrics)
    assert "covering radius" in text and "logdet jitter 1e-06" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("opt ")]
    assert [int(r.split()[1]) for r in rows] == [4, 12]
    assert rows[0].split()[-1].startswith("100%/")


def test_bad_input_is_refused(points):
    o = BruteOracle(points)
    with pytest.raises(MlpdesignError, match="outside 1..5"):
        R.compute(o, [R.Design("a", np.arange(5))], sizes=[6])
    with pytest.raises(MlpdesignError, match="repeats"):
        R.compute(o, [R.Design("a", np.array([1, 2, 1]))], n_random=0)
    with pytest.raises(MlpdesignError, match="out of range"):
        R.compute(o, [R.Design("a", np.array([1, 99]))], n_random=0)
    with pytest.raises(MlpdesignError, match="empty"):
        R.compute(o, [R.Design("a", np.array([], dtype=int))])
    with pytest.raises(MlpdesignError, match="at least one"):
        R.compute(o, [])
    with pytest.raises(MlpdesignError, match="cannot measure"):
        R.compute(points, [R.Design("a", np.arange(5))])


def test_figures_exist_and_are_nonempty(toy, tmp_path):
    names = write_figures(toy[3], tmp_path)
    assert names == list(R.FIGURES)
    for n in names:
        png = (tmp_path / n).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_figures_skip_what_does_not_apply(points, tmp_path):
    design, psi = greedy(points, 6)
    data = R.compute(
        BruteOracle(points), [R.Design("a", design, psi), R.Design("b", design[:4])], n_random=0
    )
    assert data.strain is None and data.structure is None
    names = write_figures(data, tmp_path)
    assert names == ["pairwise_distance.png", "design_curve.png", "logdet.png"]
    assert data.metrics["designs"][1]["metrics"][0]["beats_random"] == {k: None for k in R.CRITERIA}


def test_band_quantiles_equal_nanquantile():
    """The figures' bands: np.quantile on the all-finite columns, nanquantile on the others,
    the values of nanquantile over every column (NaN, inf and all-missing columns)."""
    from mlpdesign.report.figures import _column_quantiles

    rng = np.random.default_rng(2)
    c = rng.random((5, 200))
    c[:, 0] = np.nan
    c[2, 5] = np.inf
    c[1:3, 7] = np.nan
    c[:, 9] = -np.inf
    with pytest.warns(RuntimeWarning):
        ref = np.nanquantile(np.where(np.isfinite(c), c, np.nan), (0.1, 0.5, 0.9), axis=0)
    assert np.array_equal(_column_quantiles(c, (0.1, 0.5, 0.9)), ref, equal_nan=True)
