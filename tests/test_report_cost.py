"""``report`` states each design's total atoms and relative DFT cost (sum n_atoms^P)."""

from __future__ import annotations

import json

import numpy as np
from clihelpers import run

from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import open_store


def test_total_atoms_and_cost(small_store, tmp_path):
    sel = tmp_path / "s.h5"
    assert run("select", str(small_store), "-n", "10", "-o", str(sel), "-q").exit_code == 0
    res = run("report", str(small_store), str(sel), "--random", "2", "--format", "json")
    assert res.exit_code == 0, res.output
    (d,) = json.loads(res.stdout)["designs"]
    with open_store(small_store) as st:
        n = np.asarray(st.n_atoms)[load_selection(sel).index].astype(float)
    assert d["total_atoms"] == int(n.sum()) and d["cost_exponent"] == 3.0
    assert np.isclose(d["dft_cost"], (n**3).sum())
    one = run("report", str(small_store), str(sel), "--random", "0", "--cost-exponent", "1")
    assert one.exit_code == 0 and f"{int(n.sum())} atoms, {n.sum():.4g}" in one.stdout


def test_selection_records_total_atoms_and_cost(small_store, tmp_path):
    sel = tmp_path / "s.json"
    res = run("select", str(small_store), "-n", "7", "-o", str(sel))
    assert res.exit_code == 0, res.output
    s = load_selection(sel)
    with open_store(small_store) as st:
        n = np.asarray(st.n_atoms)[s.index].astype(float)
    assert int(s.attrs["total_atoms"]) == int(n.sum())
    assert np.isclose(float(s.attrs["dft_cost"]), (n**3).sum())
    assert f"{int(n.sum())} atoms" in res.stderr


def test_max_atoms_leaves_out_larger_candidates(small_store, tmp_path):
    """The same picks as the textbook loop on the pool without the larger cells."""
    from mlpdesign.kernels.core import StoreKernel
    from mlpdesign.select import run as select_run

    with open_store(small_store) as st:
        n_atoms = np.asarray(st.n_atoms)
        kd = StoreKernel(st)
    assert n_atoms.max() > 1
    small = np.flatnonzero(n_atoms == 1)
    for kw in ({}, {"memory_limit": "3M", "block_rows": 8}):
        sel, _ = select_run(small_store, 8, None, max_atoms=1, stratify=False, **kw)
        assert (n_atoms[sel.index] == 1).all() and sel.attrs["max_atoms"] == 1
        sub_psi = np.full(kd.n, np.inf)
        picks = []
        for _ in range(8):  # the textbook loop restricted to the small cells
            cand = np.setdiff1d(small, picks)
            s = int(cand[np.argmax(sub_psi[cand])]) if picks else None
            if s is None:
                d0 = kd.d2_row(0)
                s = int(small[np.argmax(d0[small])])
            picks.append(s)
            sub_psi = np.minimum(sub_psi, kd.d2_row(s))
        assert list(sel.index) == picks
    too_many = str(len(small) + 1)
    out = str(tmp_path / "x.h5")
    res = run("select", str(small_store), "-n", too_many, "--max-atoms", "1", "-o", out)
    assert res.exit_code == 2 and "--max-atoms" in res.stderr
    rnd, _ = select_run(small_store, 5, None, criterion="random", max_atoms=1)
    assert (n_atoms[rnd.index] == 1).all()
