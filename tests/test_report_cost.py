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
