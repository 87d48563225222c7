"""``mlpdesign tune``: D² equal select's kernel, fractions equal a brute-force count, rows reused
for kernel-only changes, same bytes for the same seed, bad ``--vary`` refused with one line."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from clihelpers import one_line_error, run
from conftest import SMALL_GAP

import mlpdesign.describe
from mlpdesign import tune
from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import parse_gap
from mlpdesign.io.frames import open_pool
from mlpdesign.io.store import open_store
from mlpdesign.kernels.core import StoreKernel
from mlpdesign.tune import measure
from mlpdesign.tune.grid import descriptor_groups

VARY = ["soap:atom_sigma=0.4,0.5", "distance_2b:theta_uniform=0.2,0.3"]


@pytest.fixture
def count_describes(monkeypatch):
    """Counts the calls of the describe stage's front door."""
    calls = []
    real = mlpdesign.describe.run

    def counting(*a, **kw):
        calls.append(kw.get("gap"))
        return real(*a, **kw)

    monkeypatch.setattr(mlpdesign.describe, "run", counting)
    return calls


def _reference_kernels(res, pool, tmp_path, balance):
    """select's kernel on a store described here with each setting's full GAP string."""
    sample = measure.write_sample(open_pool(pool), res.sample, tmp_path / "sample.xyz")
    for s in res.settings:
        path = mlpdesign.describe.run(sample, tmp_path / f"ref{s.index}.h5", gap=s.gap)
        with open_store(path) as store:
            yield s, StoreKernel(store, normalize=True, balance=balance)


@pytest.mark.parametrize("balance", [False, True])
def test_d2_are_selects_and_kernel_only_changes_reuse_rows(
    small_pool, tmp_path, count_describes, balance
):
    res = tune.run(small_pool, None, gap=SMALL_GAP, vary=VARY, sample=16, seed=3, balance=balance)
    assert len(res.settings) == 4 and res.summary["n_described"] == 2
    assert len(count_describes) == 2  # theta_uniform is a kernel key: its rows are reused
    assert [r["described"] for r in res.summary["settings"]] == [True, False, True, False]
    assert len(res.sample) == 16 and np.all(np.diff(res.sample) > 0)
    for s, kd in _reference_kernels(res, small_pool, tmp_path, balance):
        idx = np.arange(kd.n)
        want = kd.d2_block(idx, idx)[np.triu_indices(kd.n, 1)]
        assert np.array_equal(res.d2[s.index], want)
        rec = res.summary["settings"][s.index]
        assert sum(t["d2_share"] for t in rec["terms"]) == pytest.approx(1.0, abs=1e-9)
        assert rec["gap"] == s.gap and parse_gap(rec["gap"])[0].kernel["theta_uniform"] in (
            0.2,
            0.3,
        )
    # the two theta values give different distances on the same rows
    assert not np.array_equal(res.d2[0], res.d2[1])


def test_fractions_and_quantiles_equal_a_brute_force_count(small_pool, tmp_path):
    overlap, orthogonal = 0.05, 1.7
    res = tune.run(
        small_pool,
        None,
        gap=SMALL_GAP,
        vary=VARY,
        sample=14,
        seed=5,
        overlap=overlap,
        orthogonal=orthogonal,
    )
    n_pairs = 14 * 13 // 2
    assert res.summary["n_pairs"] == n_pairs
    totals = [0, 0]
    for s, kd in _reference_kernels(res, small_pool, tmp_path, False):
        rows = [kd.d2_row(i) for i in range(kd.n)]
        d2 = [float(rows[i][j]) for i, j in itertools.combinations(range(kd.n), 2)]
        ov = sum(1 for d in d2 if d < overlap)
        orth = sum(1 for d in d2 if d > 2 - orthogonal)
        rec = res.summary["settings"][s.index]
        assert (rec["overlap_pairs"], rec["orthogonal_pairs"]) == (ov, orth)
        assert rec["overlap_fraction"] == ov / n_pairs
        assert rec["orthogonal_fraction"] == orth / n_pairs
        assert rec["quantiles"]["50%"] == pytest.approx(float(np.median(d2)), abs=1e-12)
        assert sum(rec["histogram"]) == n_pairs
        totals[0] += ov
        totals[1] += orth
    assert totals[0] > 0 and totals[1] > 0  # the thresholds bite on this pool
    # the documented rule, written out plainly
    recs = res.summary["settings"]
    best = min(r["score"] for r in recs)
    tied = [r for r in recs if r["score"] <= 1.1 * best + 1 / n_pairs]
    tied.sort(key=lambda r: (r["floats_per_config"], r["cutoff_sum"], r["changed"], r["index"]))
    assert res.summary["recommended"]["index"] == tied[0]["index"]


def test_same_bytes_for_the_same_seed_and_any_jobs(small_pool, tmp_path):
    args = [small_pool, "--gap", SMALL_GAP, "--sample", 12, "--seed", 2, "-q"]
    args += [a for v in VARY for a in ("--vary", v)]
    for name, extra in (("a", []), ("b", ["-j", 2])):
        res = run("tune", *args, *extra, "-o", tmp_path / name)
        assert res.exit_code == 0, res.output
        assert "recommended:" in res.stdout and '--gap "distance_2b' in res.stdout
    for f in ("summary.json", "fractions.png", "histograms.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert a["sample"]["size"] == 12 and len(set(a["sample"]["candidate_id"])) == 12
    assert np.array_equal(measure.sample_indices(40, 12, 2), measure.sample_indices(40, 12, 2))
    assert not np.array_equal(measure.sample_indices(40, 12, 2), measure.sample_indices(40, 12, 9))
    gap = a["recommended"]["gap"]
    assert gap == a["settings"][a["recommended"]["index"]]["gap"]
    assert [s.render() for s in parse_gap(gap)] == gap.split(" : ")


@pytest.mark.parametrize(
    "vary, words",
    [
        ("soap:atom_sigm=0.1", "did you mean atom_sigma"),
        ("soap:atom_sigma=-1", "expected a positive number"),
        ("soap:l_max=abc", "expected an integer"),
        ("sop:cutoff=5", "no descriptor 'sop'"),
        ("3:cutoff=5", "no descriptor 3"),
        ("soap:cutoff", "expected NAME:KEY=V1,V2"),
        ("soap:cutoff=", "empty value"),
        ("soap:cutoff=5,5", "given twice"),
        ("soap:zeta=1.5", "integer zeta"),
        ("distance_2b:covariance_type=pp", "not supported"),
    ],
)
def test_bad_vary_one_line_exit_2_nothing_written(small_pool, tmp_path, vary, words):
    out = tmp_path / "tune"
    res = run("tune", small_pool, "--gap", SMALL_GAP, "--vary", vary, "-o", out)
    line = one_line_error(res, 2)
    assert words in line and "--vary" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_same_key_twice_and_lock_step_keys(small_pool):
    with pytest.raises(MlpdesignError, match="already varied"):
        tune.plan(small_pool, SMALL_GAP, ["soap:cutoff=4,5", "2:cutoff=3"])
    _, base, varies, settings = tune.plan(
        small_pool, SMALL_GAP, ["soap:l_max,n_max=3,4", "soap:delta=0.3,0.5"]
    )
    assert [(s.specs[1].params["l_max"], s.specs[1].params["n_max"]) for s in settings] == [
        (3, 3),
        (3, 3),
        (4, 4),
        (4, 4),
    ]
    assert [len(g) for g in descriptor_groups(settings)] == [2, 2]  # delta is a kernel key
    assert settings[1].specs[1].kernel["delta"] == 0.5 and settings[1].changed == 3
    assert [s.render() for s in base] == SMALL_GAP.split(" : ")


def test_cli_defaults_are_the_documented_ones():
    from mlpdesign.cli.tune import command

    defaults = {p.name: p.default for p in command.params}
    assert (defaults["overlap"], defaults["orthogonal"], defaults["tie"]) == (
        tune.OVERLAP,
        tune.ORTHOGONAL,
        tune.TIE,
    )
    assert defaults["sample"] == 500


def test_any_input_ase_reads(small_pool, tmp_path):
    """A pool that is not extxyz (a .traj of 8 frames) is sampled through ASE, ids kept."""
    import ase.io

    traj = tmp_path / "pool.traj"
    ase.io.write(traj, ase.io.read(small_pool, index=":8"))
    res = tune.run(traj, None, gap=SMALL_GAP, sample=6, seed=1)
    pool = open_pool(traj)
    assert res.summary["sample"]["candidate_id"] == pool.candidate_id[res.sample].tolist()
    assert res.summary["n_pairs"] == 15 and len(res.d2[0]) == 15
