"""``fit``'s estimate of gap_fit's memory: counts equal to quippy's own, the check before a
fit (one line, exit 2, nothing written), the measured peak of the gap_fit process itself,
and the calibration recorded in benchmarks/results/fit_memory.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clihelpers import TINY_GAP, fit_tiny, one_line_error, run

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap import fit_memory
from mlpdesign.gap.fit import FitOptions, fit_specs
from mlpdesign.gap.strings import DEFAULT_GAP, alloy_specs, parse_gap, render_gap
from mlpdesign.io.frames import read_configs

ROOT = Path(__file__).resolve().parent.parent


def _cuzr_frames() -> list:
    """Two Cu-Zr cells (one periodic, one isolated cluster) for the per-species counts."""
    from ase import Atoms
    from ase.build import bulk

    rng = np.random.default_rng(3)
    a = bulk("Zr", "hcp", a=3.1, c=4.95).repeat((2, 2, 1))
    a.numbers[[0, 3, 5]] = 29
    a.positions += rng.normal(0, 0.05, a.positions.shape)
    cluster = Atoms("Cu2Zr3", positions=rng.uniform(0, 5.0, (5, 3)), pbc=False)
    cluster.positions[:, 0] += np.arange(5) * 1.5  # no two atoms close
    return [a, cluster]


def _quippy_counts(specs, frames) -> list[tuple[int, int]]:
    """(descriptor vectors, gradient entries) per term, from quippy's own calc(grad=True):
    what gap_fit stores."""
    from quippy.descriptors import Descriptor

    out = []
    for s in specs:
        d = Descriptor(s.descriptor)
        n = g = 0
        for a in frames:
            res = d.calc(a, grad=True)
            if "data" in res:
                n += len(res["data"])
                g += len(res["grad_index_0based"])
        out.append((n, g))
    return out


def test_counts_equal_quippys_own(small_pool):
    frames = read_configs(small_pool, assign_ids=False)[:6]
    specs = fit_specs(FitOptions(gap=DEFAULT_GAP))
    est = fit_memory.estimate(specs, frames, forces=True, virials=True)
    assert [(t.instances, t.grad_points) for t in est.terms] == _quippy_counts(specs, frames)
    assert [t.dim for t in est.terms] == [1, 606]
    assert est.n_obs == 6 + 3 * sum(len(a) for a in frames) + 9 * 6


def test_counts_alloy_terms_and_isolated_frames():
    frames = _cuzr_frames()
    specs = fit_specs(FitOptions(gap=render_gap(alloy_specs(parse_gap(DEFAULT_GAP), [29, 40]))))
    assert [s.name for s in specs] == ["distance_2b"] * 3 + ["soap"] * 2
    est = fit_memory.estimate(specs, frames, forces=True, virials=False)
    assert [(t.instances, t.grad_points) for t in est.terms] == _quippy_counts(specs, frames)
    assert est.terms[3].dim == est.terms[4].dim > 2000  # SOAP over two species
    # energies only: no gradients stored, far less memory
    light = fit_memory.estimate(specs, frames, forces=False, virials=False)
    assert light.bytes < est.bytes and not light.gradients


def test_check_memory_refuses_with_one_line():
    assert "needs about 1.0 GiB" in fit_memory.check_memory(1 << 30, limit=2 << 30)
    with pytest.raises(MlpdesignError, match=r"would need about 2.0 GiB .* the limit is 1.0"):
        fit_memory.check_memory(2 << 30, limit=1 << 30)
    line = fit_memory.check_memory(2 << 30, limit=1 << 30, ignore=True)
    assert "running anyway" in line
    room, source = fit_memory.available_memory()
    assert room is None or (room > 0 and source)


def test_high_water_is_the_childs_own_peak():
    """A child of a process that once held a lot more reports its own peak (wait4's
    ru_maxrss carries the parent's peak over fork/exec), wrappers included."""
    import os

    big = np.ones(48 << 17)  # 48 MiB touched in this process ...
    del big
    code = "import time; x = bytearray(32 << 20); time.sleep(0.4)"
    proc = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c '{code}'; true"])
    hwm = fit_memory.HighWater(proc.pid, interval=0.02)
    proc.wait()
    peak = hwm.stop()
    if peak is None:
        pytest.skip("no /proc")
    assert len(hwm.seen) >= 2  # the shell and the Python it started
    assert 32 <= peak < 32 + 120
    assert os.getpid() not in hwm.seen


def test_fit_refused_when_it_would_not_fit(labelled, tmp_path):
    out = tmp_path / "model"
    line = one_line_error(
        run("fit", labelled, "--gap", TINY_GAP, "-o", out, "--memory-limit", "10M")
    )
    assert "gap_fit would need about" in line and "the limit is 10 MiB" in line
    assert "--ignore-memory" in line
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written
    cv = tmp_path / "cv"
    line = one_line_error(
        run("crossval", f"A={labelled}", "--gap", TINY_GAP, "-o", cv, "--memory-limit", "10M")
    )
    assert "gap_fit would need about" in line and not (cv / "models").exists()


def test_fit_says_its_estimate_and_records_it(labelled, tmp_path):
    out = tmp_path / "model"
    res = fit_tiny(labelled, out, "--memory-limit", "10M", "--ignore-memory")
    assert res.exit_code == 0, res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("gap_fit needs about") and "running anyway" in first
    assert "40 configurations" in first and "soap d=51" in first
    info = json.loads((out / "fit.json").read_text())
    assert info["memory_estimate_mib"] > 0 and info["peak_rss_mib"] > 0
    quiet = run(
        "fit",
        labelled,
        "--gap",
        TINY_GAP,
        "-o",
        tmp_path / "m2",
        "-q",
        "--memory-limit",
        "10M",
        "--ignore-memory",
    )
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_recorded_calibration_is_the_modules():
    doc = json.loads((ROOT / "benchmarks/results/fit_memory.json").read_text())
    assert doc["calibration"] == fit_memory.CALIBRATION
    rows = doc["rows"]
    assert len(rows) >= 8
    factors = [fit_memory.CALIBRATION[k] for k in ("base", "grad", "virial", "x", "cov")]
    for r in rows:  # each recorded estimate is the module's formula on its counts
        est = sum(f * c for f, c in zip(factors, r["columns"], strict=True))
        assert r["estimate_mib"] == pytest.approx(est / fit_memory.MIB, abs=0.1)
        assert 0.75 <= r["ratio"] <= 1.35, r
