"""The examples reproduce the paper's toy problems (figs. 3 and 8) through the library API."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))  # the examples' shared example_figures, as when run there


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fig8_grid_maxmin(tmp_path):
    res = load("fig8_grid_maxmin").run(tmp_path)
    x = load("fig8_grid_maxmin").grid(0)
    design = res["design"]
    assert len(design) == 40 and len(set(design.tolist())) == 40
    # the 40-point max-min design of the 0.05-spaced grid: after the 5x5 lattice of spacing
    # 0.5 (25 points) the picks fill cell centres, so the smallest distance is sqrt(2)/4
    assert res["min_distance"][-1] == pytest.approx(math.sqrt(2) / 4, rel=1e-9)
    assert res["min_distance"][24] == pytest.approx(0.5, rel=1e-9)
    # every pick lies on the 0.25-spaced sub-grid, starting from a corner
    assert np.allclose(np.abs(x[design[0]]), 1.0)
    assert np.allclose(np.round(x[design] * 4), x[design] * 4, atol=1e-9)
    # the max-min design beats every random design at every size >= 2
    assert (res["min_distance"][1:] >= res["random_min_distance"][:, 1:].max(axis=0)).all()
    assert res["figure"].stat().st_size > 10_000


def test_fig3_gaussian_entropy(tmp_path):
    res = load("fig3_gaussian_entropy").run(tmp_path)
    assert len(res["design"]) == 100 and len(set(res["design"].tolist())) == 100
    assert len(res["logdet_random"]) == 100
    # the optimised design beats every random realisation on the entropy criterion
    assert res["logdet"] > res["logdet_random"].max()
    # Psi at pick time (D2 of the unit Gaussian kernel) is in [0, 2] and never increases
    psi = res["psi"][1:]
    assert (psi <= 2).all() and (psi > 0).all() and (np.diff(psi) <= 1e-12).all()
    assert res["figure"].stat().st_size > 10_000


def test_md_pool_worked_example(tmp_path, eam_file):
    """examples/md_pool: MD trajectories by origin -> describe -> select -> write -> label,
    the picks counted by origin (run.sh does the same with the paper's model and fit)."""
    import ase.io
    from clihelpers import run
    from conftest import SMALL_GAP

    spec = importlib.util.spec_from_file_location("md_pool", EXAMPLES / "md_pool" / "md_pool.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = mod.make_pool(tmp_path / "md", eam_file, snapshots=3, every=2)
    assert [p.name for p in paths] == [
        "bulk_1500K.traj", "bulk_300K.traj", "slab_300K.traj",
        "vacancy_1500K.traj", "vacancy_300K.traj",
    ]  # fmt: skip
    slab = ase.io.read(tmp_path / "md" / "slab_300K.traj", ":")
    assert slab[0].pbc.tolist() == [True, True, False] and slab[0].get_potential_energy() < 0
    store, sel, train = tmp_path / "pool.h5", tmp_path / "sel.h5", tmp_path / "train.xyz"
    assert run("describe", *paths, "-o", store, "--gap", SMALL_GAP, "-q").exit_code == 0
    assert run("select", store, "-n", "6", "-o", sel, "-q").exit_code == 0
    r = run("write", *paths, sel, "-o", train)
    assert r.exit_code == 0 and "Skipping" not in r.stderr, r.stderr
    counts = mod.count_origins(train)
    assert sum(counts.values()) == 6 and set(counts) <= {p.stem for p in paths}
    picked = ase.io.read(train, ":")
    assert all(a.get_potential_energy() < 0 for a in picked)  # the MD energies came along
    r = run("label", train, "--eam", eam_file, "-o", tmp_path / "lab.xyz", "-q")
    assert r.exit_code == 0, r.stderr
    lab = ase.io.read(tmp_path / "lab.xyz", ":")
    for a, b in zip(picked, lab, strict=True):  # the EAM again: the MD's own labels
        assert b.info["dft_energy"] == pytest.approx(a.get_potential_energy(), abs=1e-6)
