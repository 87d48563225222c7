"""Figures of ``mlpdesign tune`` (matplotlib, Agg, PNG without date or version: same bytes).

``fractions.png``: per setting, the overlapping and orthogonal fractions as stacked bars (their
sum is what the rule minimises) beside the D² quantiles; ``histograms.png``: the D²
distribution of every setting, with both thresholds shaded. The recommended setting is marked
in both.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

PNG_META = {"Software": None}
OVERLAP_COLOR = "C0"
ORTHOGONAL_COLOR = "C3"
PICK_COLOR = "C2"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def label(rec: dict) -> str:
    """A setting's varied values, short (``atom_sigma=0.1 theta_uniform=0.3``)."""
    parts = [f"{k.split(':', 1)[1]}={v}" for k, v in rec["values"].items()]
    return " ".join(parts) or "starting gap string"


def sqrt_axis(ax) -> None:
    """D² from 0 to 2 on a square-root scale (linear in D): both ends are visible."""
    ax.set_xscale("function", functions=(lambda x: np.sqrt(np.maximum(x, 0)), np.square))
    ax.set_xlim(0, 2)
    ax.set_xticks(
        [0, 0.01, 0.1, 0.25, 0.5, 1, 1.5, 2], ["0", ".01", ".1", ".25", ".5", "1", "1.5", "2"]
    )


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %" if x >= 1e-4 or x == 0 else f"{100 * x:.0e} %"


def fractions(summary: dict, path: Path) -> None:
    """Stacked overlap/orthogonal bars per setting, and the D² quantile ranges beside them."""
    plt = _plt()
    recs = summary["settings"]
    pick = summary["recommended"]["index"]
    n = len(recs)
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(12.5, 1.6 + 0.36 * n), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    y = np.arange(n)[::-1]
    ov = np.array([100 * r["overlap_fraction"] for r in recs])
    orth = np.array([100 * r["orthogonal_fraction"] for r in recs])
    ax.barh(y, ov, color=OVERLAP_COLOR, label=f"overlapping: D2 < {summary['overlap']:g}")
    ax.barh(
        y,
        orth,
        left=ov,
        color=ORTHOGONAL_COLOR,
        label=f"orthogonal: D2 > 2 - {summary['orthogonal']:g}",
    )
    top = max(float((ov + orth).max()), 1e-9)
    for yi, a, b in zip(y, ov, orth, strict=True):
        ax.text(
            a + b + 0.01 * top, yi, f"{_pct(a / 100)} + {_pct(b / 100)}", va="center", fontsize=8
        )
    ax.set_xlim(0, top * 1.45)
    ax.set_yticks(y, [label(r) for r in recs], fontsize=8)
    ax.get_yticklabels()[pick].set_color(PICK_COLOR)
    ax.get_yticklabels()[pick].set_fontweight("bold")
    ax.axhspan(y[pick] - 0.5, y[pick] + 0.5, color=PICK_COLOR, alpha=0.12, lw=0)
    ax.set_xlabel(f"pairs of the {summary['sample']['size']}-config sample (%)")
    ax.set_title("overlapping + orthogonal pairs (the rule minimises the sum)", fontsize=10)
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    for yi, r in zip(y, recs, strict=True):
        q = r["quantiles"]
        bx.plot([q["1%"], q["99%"]], [yi, yi], color="0.6", lw=1.2)
        bx.plot([q["10%"], q["90%"]], [yi, yi], color="0.25", lw=4, solid_capstyle="butt")
        bx.plot([q["50%"]], [yi], "o", color="white", mec="0.1", ms=5)
    bx.axvspan(0, summary["overlap"], color=OVERLAP_COLOR, alpha=0.25, lw=0)
    bx.axvspan(2 - summary["orthogonal"], 2, color=ORTHOGONAL_COLOR, alpha=0.25, lw=0)
    bx.axhspan(y[pick] - 0.5, y[pick] + 0.5, color=PICK_COLOR, alpha=0.12, lw=0)
    sqrt_axis(bx)
    bx.set_xlabel("pair D2, square-root scale\no median, bar 10-90 %, line 1-99 %")
    bx.set_title("D2 quantiles (0 identical, 2 orthogonal)", fontsize=10)
    bx.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.6, n - 0.4)
    fig.suptitle(_title(summary), fontsize=10)
    h = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.3 / h, 1, 1 - 0.35 / h))
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)


def _title(summary: dict) -> str:
    pick = summary["settings"][summary["recommended"]["index"]]
    mode = "balanced" if summary["kernel"]["balance"] else "normalised"
    return (
        f"mlpdesign tune: {summary['sample']['size']} configs (seed {summary['sample']['seed']}), "
        f"{mode} kernel; recommended: {label(pick)}"
    )


def histograms(summary: dict, path: Path) -> None:
    """One D² histogram per setting (density over [0, 2]), thresholds shaded."""
    plt = _plt()
    recs = summary["settings"]
    pick = summary["recommended"]["index"]
    n = len(recs)
    ncol = min(n, 4 if n <= 16 else 6)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(4.1 * ncol, 2.7 * nrow + 0.6), squeeze=False, sharex=True
    )
    for i, r in enumerate(recs):
        ax = axes[i // ncol][i % ncol]
        counts = np.asarray(r["histogram"], dtype=float)
        edges = np.asarray(summary["histogram_edges"])
        dens = counts / max(1.0, counts.sum()) / np.diff(np.sqrt(edges))
        ax.stairs(dens, edges, fill=True, color=PICK_COLOR if i == pick else "0.55")
        ax.axvspan(0, summary["overlap"], color=OVERLAP_COLOR, alpha=0.35, lw=0)
        ax.axvspan(2 - summary["orthogonal"], 2, color=ORTHOGONAL_COLOR, alpha=0.25, lw=0)
        sqrt_axis(ax)
        ax.set_title(
            textwrap.fill(("recommended: " if i == pick else "") + label(r), 46),
            fontsize=8,
            fontweight="bold" if i == pick else "normal",
            color=PICK_COLOR if i == pick else "black",
        )
        ax.text(
            0.98,
            0.95,
            f"overlap {_pct(r['overlap_fraction'])}\northogonal {_pct(r['orthogonal_fraction'])}"
            f"\nmedian D2 {r['quantiles']['50%']:.3f}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            bbox={"fc": "white", "alpha": 0.75, "lw": 0},
        )
        if i % ncol == 0:
            ax.set_ylabel("density in D")
        if i // ncol == nrow - 1 or i + ncol >= n:
            ax.set_xlabel("pair D2 (square-root scale)")
            ax.xaxis.set_tick_params(labelbottom=True)
    for j in range(n, nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    fig.suptitle(_title(summary), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)
