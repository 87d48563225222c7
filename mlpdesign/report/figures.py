"""Figures of ``mlpdesign report`` (matplotlib, Agg backend, PNG): the paper's figs. 3, 4 and 8.

Each function takes a :class:`mlpdesign.report.metrics.ReportData` and a target path, draws one
figure a person can read at a glance (labelled axes with units, legends) and returns whether it
wrote anything (a figure that does not apply to the data, e.g. strain without deformations, is
skipped).
PNG metadata carries no date or version, so the same data give the same bytes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from mlpdesign.kernels.core import items_map
from mlpdesign.report.metrics import ReportData

#: Colours: designs take the default cycle; random designs grey; the pool light grey.
RANDOM_COLOR = "0.45"
POOL_COLOR = "0.8"
PNG_META = {"Software": None}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _color(i: int) -> str:
    return f"C{i % 10}"


def _nbins(bins: int, n: int) -> int:
    """At most ``bins``, fewer for small samples (about 2 sqrt(n), at least 8)."""
    return int(min(bins, max(8, round(2 * math.sqrt(n)))))


def _save(fig, path: Path) -> bool:
    fig.savefig(path, dpi=110, metadata=PNG_META)
    _plt().close(fig)
    return True


def _design_hist(ax, values: np.ndarray, edges: np.ndarray, i: int, label: str) -> None:
    """Design ``i``'s density histogram: a step line in its own colour."""
    ax.hist(values, edges, density=True, histtype="step", lw=2, color=_color(i), label=label)


def pairwise_distance(data: ReportData, path: Path, bins: int = 40) -> bool:
    """Fig. 4a: normalised histogram of pairwise D2 in each design vs the random designs."""
    plt = _plt()
    nd = len(data.designs)
    ncol = min(nd, 3)
    nrow = math.ceil(nd / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.8 * nrow), squeeze=False)
    for i, (d, ev) in enumerate(zip(data.designs, data.evals, strict=True)):
        ax = axes[i // ncol][i % ncol]
        n = len(d.index)
        pairs = ev.pairs(n)
        rpairs = (
            np.concatenate([r.pairs(n) for r in data.random_evals])
            if data.random_evals
            else np.empty(0)
        )
        hi = max([x.max() for x in (pairs, rpairs) if len(x)] + [1e-12])
        edges = np.linspace(0.0, hi * 1.0001, _nbins(bins, len(pairs)) + 1)
        if len(rpairs):
            ax.hist(
                rpairs,
                edges,
                density=True,
                color=POOL_COLOR,
                edgecolor=RANDOM_COLOR,
                label=f"random designs ({len(data.random_evals)} x {n} points)",
            )
        if len(pairs):
            _design_hist(ax, pairs, edges, i, f"{d.name} ({n} points)")
        ax.set_xlabel("pairwise squared kernel distance D² (dimensionless)")
        ax.set_ylabel("probability density (1/D²)")
        ax.set_title(f"Pairwise distances in the design: {d.name}")
        ax.legend(fontsize=8)
    for j in range(nd, nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


def _column_quantiles(c: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles ``qs`` of each column of ``c`` over its finite entries (NaN where none):
    np.quantile on the columns that are all finite at once, nanquantile (one column at a
    time) only on the others."""
    c = np.where(np.isfinite(c), c, np.nan)
    out = np.full((len(qs), c.shape[1]), np.nan)
    whole = ~np.isnan(c).any(axis=0)
    if whole.any():
        out[:, whole] = np.quantile(c[:, whole], qs, axis=0)
    if not whole.all():
        with warnings.catch_warnings():  # sizes where every draw is NaN (one point, no pair)
            warnings.simplefilter("ignore", RuntimeWarning)
            out[:, ~whole] = np.nanquantile(c[:, ~whole], qs, axis=0)
    return out


def _band(ax, curves: list[np.ndarray], label: str) -> None:
    if not curves:
        return
    c = np.vstack(curves)
    x = np.arange(1, c.shape[1] + 1)
    lo, med, hi = _column_quantiles(c, (0.1, 0.5, 0.9))
    ax.fill_between(x, lo, hi, color=POOL_COLOR, label=f"{label}: 10-90 %")
    ax.plot(x, med, color=RANDOM_COLOR, lw=1.5, label=f"{label}: median")


def _positive(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).copy()
    y[~np.isfinite(y) | (y <= 0)] = np.nan
    return y


def _mark_targets(ax, targets: dict, i: int, name: str) -> None:
    """The design sizes at which the covering radius first falls below each target."""
    reached = [(m, float(t)) for t, m in targets.items() if m is not None]
    for t in targets:
        ax.axhline(float(t), color="0.6", lw=0.6, ls=":")
    if not reached:
        return
    xs, ys = zip(*reached, strict=True)
    ax.plot(xs, ys, "v", color=_color(i), ms=7, label=f"{name}: size reaching each target")
    for m, t in reached:
        ax.annotate(str(m), (m, t), textcoords="offset points", xytext=(3, 4), fontsize=7)


def design_curve(data: ReportData, path: Path) -> bool:
    """Fig. 8 right: covering radius and min pairwise D2 against design size, vs random."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    nr = len(data.random_evals)
    _band(
        ax1,
        [_positive(r.covering) for r in data.random_evals],
        f"covering radius, {nr} random designs",
    )
    _band(ax2, [_positive(r.min_pairwise) for r in data.random_evals], f"{nr} random designs")
    sets = [d.name for d in data.designs if not d.ordered]
    for i, (d, ev) in enumerate(zip(data.designs, data.evals, strict=True)):
        if not d.ordered:  # a set (select --refine exchange): its prefixes mean nothing
            continue
        x = np.arange(1, len(d.index) + 1)
        ax1.plot(
            x, _positive(ev.covering), color=_color(i), lw=2, label=f"{d.name}: covering radius"
        )
        if d.psi is not None and len(d.psi) and d.method != "random":
            what = "Ψ at pick time (incl. given set)" if d.conditional else "Ψ at pick time"
            ax1.plot(
                np.arange(1, len(d.psi) + 1),
                _positive(d.psi),
                ".",
                ms=3,
                color=_color(i),
                alpha=0.6,
                label=f"{d.name}: {what}",
            )
        ax2.plot(x, _positive(ev.min_pairwise), color=_color(i), lw=2, label=d.name)
        _mark_targets(ax1, data.metrics["designs"][i].get("cover_targets") or {}, i, d.name)
    ax1.set_title("Covering radius (fill distance; lower is better)")
    ax1.set_ylabel("max over pool of min D² to the design")
    ax2.set_title("Max-min criterion (higher is better)")
    ax2.set_ylabel("smallest pairwise D² in the design")
    for ax in (ax1, ax2):
        ax.set_xlabel("design size m (first m points)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    note = (
        "Ψ of pick m: its D² to the first m-1 points (their covering radius for plain "
        "max-min; at most that when stratified); D² is the squared kernel distance"
    )
    if sets:
        note += f"\nnot drawn, unordered sets (select --refine exchange): {', '.join(sets)}"
    fig.text(0.5, 0.005, note, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path)


def logdet(data: ReportData, path: Path) -> bool:
    """Fig. 3 right: log det(K + jitter I) of each design vs the random realisations."""
    plt = _plt()
    jitter = data.metrics["logdet_jitter"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sizes = sorted({m["size"] for d in data.metrics["designs"] for m in d["metrics"]})
    for k, s in enumerate(sizes):  # every random design at its exact size: a column of ticks
        vals = [r.logdet(s, jitter) for r in data.random_evals]
        if vals:
            ax.scatter(
                np.full(len(vals), s),
                vals,
                s=90,
                marker="_",
                color=RANDOM_COLOR,
                alpha=0.7,
                label=f"random designs ({len(vals)} realisations)" if k == 0 else None,
            )
            ax.scatter(
                [s],
                [np.median(vals)],
                s=40,
                marker="o",
                facecolor="white",
                edgecolor=RANDOM_COLOR,
                zorder=3,
                label="median of the random designs" if k == 0 else None,
            )
    for i, d in enumerate(data.metrics["designs"]):
        xs = [m["size"] for m in d["metrics"]]
        ys = [np.nan if m["logdet_k"] is None else m["logdet_k"] for m in d["metrics"]]
        ax.plot(xs, ys, "D-", color=_color(i), ms=7, label=d["name"])
    ax.set_xlabel("design size (points)")
    ax.set_xticks(sizes)
    ax.set_ylabel(f"log det(K + {jitter:g} I)  (entropy, nats)")
    ax.set_title("MaxEnt criterion of the design kernel matrix (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def strain(data: ReportData, path: Path, bins: int = 40) -> bool:
    """Fig. 4b: distribution of the deformation magnitude ||F - I|| in designs, random, pool."""
    if data.strain is None:
        return False
    plt = _plt()
    s = data.strain
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    smallest = min(len(d.index) for d in data.designs)
    edges = np.linspace(0.0, max(float(s.max()), 1e-12) * 1.0001, _nbins(bins, smallest) + 1)
    ax.hist(s, edges, density=True, color=POOL_COLOR, label=f"pool ({len(s)})")
    if data.random_evals:
        ridx = np.concatenate([r.index for r in data.random_evals])
        ax.hist(
            s[ridx],
            edges,
            density=True,
            histtype="step",
            lw=1.5,
            color=RANDOM_COLOR,
            ls="--",
            label=f"random designs ({len(data.random_evals)} pooled)",
        )
    for i, d in enumerate(data.designs):
        _design_hist(ax, s[d.index], edges, i, f"{d.name} ({len(d.index)})")
    ax.set_xlabel("deformation magnitude ‖F − I‖ (Frobenius, dimensionless)")
    ax.set_ylabel("probability density")
    ax.set_title("Did diversity come from pushing strain?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def structure_share(data: ReportData, path: Path) -> bool:
    """Share of each structure type in each design vs the pool and the random designs (top),
    and each group's difference from the pool in percentage points (bottom), where a 1-3 %
    shift is visible; the legend sits beside the axes, never over a bar."""
    if data.structure is None:
        return False
    plt = _plt()
    lab = data.structure
    names = sorted(set(lab.tolist()))
    groups: list[tuple[str, np.ndarray, str]] = [("pool", lab, POOL_COLOR)]
    if data.random_evals:
        ridx = np.concatenate([r.index for r in data.random_evals])
        groups.append(
            (f"random designs ({len(data.random_evals)} pooled)", lab[ridx], RANDOM_COLOR)
        )
    groups += [(d.name, lab[d.index], _color(i)) for i, d in enumerate(data.designs)]
    width = max(7.5, 1.4 * len(names) * len(groups) / 3 + 2.5)
    fig, (top, diff) = plt.subplots(
        2, 1, figsize=(width, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    w = 0.8 / len(groups)
    x = np.arange(len(names))
    pool_share = np.array([float(np.mean(lab == n)) for n in names])
    for g, (label, vals, color) in enumerate(groups):
        share = np.array([float(np.mean(vals == n)) for n in names])
        at = x + (g - (len(groups) - 1) / 2) * w
        style = dict(color=color, edgecolor="black", lw=0.5)
        top.bar(at, share, w, label=label, **style)
        if g:
            diff.bar(at, 100 * (share - pool_share), w, **style)
    diff.axhline(0.0, color="black", lw=0.6)
    diff.set_xticks(x, [n or "?" for n in names])
    diff.set_xlabel("structure")
    diff.set_ylabel("minus the pool's\nshare (% points)")
    top.set_ylabel("share of configurations")
    top.set_title("Structure types in the design vs the pool")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for ax in (top, diff):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def write_figures(data: ReportData, folder: Path, bins: int = 40) -> list[str]:
    """Draw every figure that applies into ``folder``; return the file names written.

    The figures are drawn side by side on forked processes where the CPUs allow
    (:func:`~mlpdesign.kernels.core.items_map`; matplotlib imported once, before): drawing
    is pure Python, about 0.5 s a figure."""
    folder = Path(folder)
    jobs = (
        ("pairwise_distance.png", lambda p: pairwise_distance(data, p, bins)),
        ("design_curve.png", lambda p: design_curve(data, p)),
        ("logdet.png", lambda p: logdet(data, p)),
        ("strain.png", lambda p: strain(data, p, bins)),
        ("structure_share.png", lambda p: structure_share(data, p)),
    )
    _plt()
    wrote = items_map(lambda job: job[1](folder / job[0]), list(jobs), fork=True)
    return [name for (name, _), ok in zip(jobs, wrote, strict=True) if ok]
