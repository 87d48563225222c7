"""``select --until-psi``: a budget that stops the design where the next pick's Psi would
fall below a value, on a pool whose answer is known (a regular grid, as in fig. 8)."""

from __future__ import annotations

import warnings

import numpy as np
from clihelpers import one_line_error, run

from mlpdesign.io.selection import load_selection
from mlpdesign.kernels import core as K
from mlpdesign.select.engine import MaxMin, greedy, memory_space


def grid_kernel():
    return K.gaussian(np.linspace(0.0, 1.0, 17)[:, None], length_scale=0.3)


def test_grid_stops_at_the_known_covering():
    """17 points on [0, 1]: max-min takes 16, 0, 8, then 4 and 12 (Psi at distance 1/4); the
    next (2, 6, 10, 14) are 1/8 from the design, below a budget set at distance 3/16."""
    kd = grid_kernel()
    until = float(kd.d2_block([0], [3])[0, 0])  # D² at distance 3/16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a budget stop is not the duplicate warning
        d = greedy(memory_space(kd), MaxMin(), 17, until=until)
    assert list(d.index) == [16, 0, 8, 4, 12]
    assert d.stopped_early and d.stats["stopped_by_budget"]
    assert d.psi[-1] >= until > float(kd.d2_block([2], [0])[0, 0])


def test_budget_gives_the_prefix_of_the_full_design():
    kd = grid_kernel()
    full = greedy(memory_space(kd), MaxMin(), 9)
    until = 0.5 * (full.psi[5] + full.psi[6]) if full.psi[5] > full.psi[6] else full.psi[5]
    cut = greedy(memory_space(kd), MaxMin(), 9, until=until)
    assert list(cut.index) == list(full.index[: len(cut.index)])
    assert all(p >= until for p in cut.psi[1:])
    assert not greedy(memory_space(kd), MaxMin(), 3, until=until).stats["stopped_by_budget"]


def test_cli_until_psi_says_so_and_records_it(small_store, tmp_path):
    res = run(
        "select", str(small_store), "-n", "30", "--until-psi", "0.02", "-o", str(tmp_path / "s.h5")
    )
    assert res.exit_code == 0, res.output
    sel = load_selection(tmp_path / "s.h5")
    assert sel.n < 30 and float(sel.attrs["until_psi"]) == 0.02
    assert "--until-psi" in res.output and (sel.psi[1:] >= 0.02).all()


def test_cli_until_psi_negative_is_one_line(small_store, tmp_path):
    out = tmp_path / "s.h5"
    res = run("select", str(small_store), "-n", "5", "--until-psi", "-1", "-o", str(out))
    assert "--until-psi" in one_line_error(res)
    assert not out.exists()


def test_report_states_the_size_that_reaches_each_covering_target():
    """On the grid: after 16, 0, 8 the covering radius is the D² at distance 1/4 (points 4
    and 12); picks 4 and 12 bring it to 1/8, so a target at 3/16 is reached at size 5."""
    from mlpdesign.report.metrics import KernelDataOracle, ReportDesign, compute

    kd = grid_kernel()
    t = float(kd.d2_block([0], [3])[0, 0])
    never = 0.5 * float(kd.d2_block([0], [1])[0, 0])  # below D² at distance 1/16: never
    design = ReportDesign("grid", np.array([16, 0, 8, 4, 12, 2, 6, 10, 14]))
    data = compute(KernelDataOracle(kd), [design], n_random=0, cover_targets=[t, never])
    got = data.metrics["designs"][0]["cover_targets"]
    assert got == {f"{t:g}": 5, f"{never:g}": None}
    assert float(data.evals[0].covering[4]) < t <= float(data.evals[0].covering[3])


def test_cli_report_prints_cover_targets(small_store, tmp_path):
    sel = tmp_path / "s.h5"
    assert run("select", str(small_store), "-n", "20", "-o", str(sel), "-q").exit_code == 0
    res = run("report", str(small_store), str(sel), "--random", "2", "--cover-targets", "0.05,1e-9")
    assert res.exit_code == 0, res.output
    assert "covering radius D2 first falls below 0.05 / 1e-09" in res.output
    assert any(ln.split()[-1] == "-" for ln in res.output.splitlines() if ln.startswith("  s"))
    bad = run("report", str(small_store), str(sel), "--cover-targets", "x", "--format", "json")
    assert "--cover-targets" in one_line_error(bad)


def test_until_var_for_maxent_is_the_prefix(small_store, tmp_path):
    """``--until-var``: MaxEnt stops before the first pick whose sigma^2 falls below X."""
    full = tmp_path / "full.h5"
    assert (
        run(
            "select", str(small_store), "-n", "12", "--criterion", "maxent", "-o", str(full), "-q"
        ).exit_code
        == 0
    )
    var = load_selection(full).var
    x = 0.5 * (var[5] + var[6])
    cut = tmp_path / "cut.h5"
    res = run(
        "select",
        str(small_store),
        "-n",
        "12",
        "--criterion",
        "maxent",
        "--until-var",
        str(x),
        "-o",
        str(cut),
    )
    assert res.exit_code == 0, res.output
    c = load_selection(cut)
    assert c.n == 6 and list(c.index) == list(load_selection(full).index[:6])
    assert len(c.var) == 6 and "--until-var" in res.stderr
    wrong = run(
        "select",
        str(small_store),
        "-n",
        "5",
        "--criterion",
        "maxent",
        "--until-psi",
        "0.1",
        "-o",
        str(tmp_path / "w.h5"),
        "-q",
    )
    assert "--until-var" in one_line_error(wrong)
