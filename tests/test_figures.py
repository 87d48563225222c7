"""What the figures show (issue 15, item 8): logdet points at their true design size, the
structure legend beside the bars with the differences from the pool drawn to scale, and the
cross-validation panels as energy residuals in meV/atom with on/off-sample explained."""

from __future__ import annotations

import numpy as np
import pytest
from test_report import BruteOracle, greedy

from mlpdesign.gap import crossval as cv
from mlpdesign.report import figures as F
from mlpdesign.report import metrics as R


@pytest.fixture(scope="module")
def data():
    x = np.random.default_rng(3).normal(0.0, 0.7, (61, 3))
    design, psi = greedy(x, 12)
    labels = np.array(["hcp", "fcc", "bcc"])[np.arange(len(x)) % 3]
    return R.compute(
        BruteOracle(x),
        [R.Design("opt", design, psi, method="maxmin")],
        sizes=[4, 8, 12],
        n_random=9,
        seed=2,
        structure=labels,
    )


@pytest.fixture
def drawn(monkeypatch):
    """The figure each drawing function made (instead of writing it)."""
    figs = []

    def keep(fig, path):
        figs.append(fig)
        return True

    monkeypatch.setattr(F, "_save", keep)
    return figs


def test_logdet_random_designs_sit_at_their_size(data, drawn, tmp_path):
    F.logdet(data, tmp_path / "l.png")
    ax = drawn[0].axes[0]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    assert set(np.round(xs, 9)) == {4.0, 8.0, 12.0}  # no jitter along the size axis
    assert list(ax.get_xticks()) == [4, 8, 12]


def test_structure_share_legend_beside_the_bars_and_differences_to_scale(data, drawn, tmp_path):
    F.structure_share(data, tmp_path / "s.png")
    fig = drawn[0]
    top, diff = fig.axes
    fig.canvas.draw()
    legend = top.get_legend().get_window_extent()
    for bar in top.patches:
        assert not legend.overlaps(bar.get_window_extent())
    assert "% points" in diff.get_ylabel()
    shares = {t.get_text(): None for t in diff.get_xticklabels()}
    assert list(shares) == ["bcc", "fcc", "hcp"]
    heights = [p.get_height() for p in diff.patches]
    assert heights and max(abs(h) for h in heights) < 100  # percentage points, not fractions


def test_crossval_panels_are_residuals_in_mev(tmp_path, monkeypatch):
    import matplotlib.figure

    rng = np.random.default_rng(1)
    names = ["A", "B"]
    preds, matrix = {}, {m: {} for m in names}
    for s in names:
        ref = -8.5 + 0.05 * rng.random(30)
        preds[s] = {"reference": ref.tolist(), "predicted": {}}
        for m in names:
            p = ref + rng.normal(0.0, 0.001, 30)
            preds[s]["predicted"][m] = p.tolist()
            matrix[m][s] = cv.error_stats(p - ref)
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    cv.parity_grid(preds, matrix, names, tmp_path / "p.png")
    fig = saved[0]
    panels = fig.axes
    assert len(panels) == 4
    ax = panels[1]  # model A on set B: off-sample
    de = ax.collections[0].get_offsets()[:, 1]
    want = (np.array(preds["B"]["predicted"]["A"]) - np.array(preds["B"]["reference"])) * 1e3
    np.testing.assert_allclose(np.sort(de), np.sort(want))
    assert ax.get_title().startswith("off-sample") and panels[0].get_title().startswith("on-sample")
    assert "meV/atom" in panels[0].get_ylabel() and "meV/atom" in panels[2].get_xlabel()
    assert "on-sample" in fig.get_suptitle() and "off-sample" in fig.get_suptitle()


def test_fig8_legend_hides_no_pick(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    import matplotlib.figure

    path = Path(__file__).resolve().parents[1] / "examples" / "fig8_grid_maxmin.py"
    spec = importlib.util.spec_from_file_location("fig8", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    res = mod.run(tmp_path, n_random=5)
    ax = saved[0].axes[0]
    saved[0].canvas.draw()
    box = ax.get_legend().get_window_extent()
    picks = ax.transData.transform(mod.grid(0)[res["design"]])
    assert not any(box.contains(px, py) for px, py in picks)
