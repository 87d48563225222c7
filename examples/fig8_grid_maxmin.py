"""Paper fig. 8 (appendix B): max-min design of 40 points on the 41 x 41 grid of [-1, 1]^2.

Euclidean distance, written as the kernel distance of the linear kernel k(x, y) = x . y
(D2 = |x - y|^2). Left: the grid and the design, labelled by the order of addition;
right: the smallest pairwise distance of the first m points against m, for the max-min
design and for random designs of the same size drawn from the same grid.

    python examples/fig8_grid_maxmin.py [OUTPUT_DIR]      # writes OUTPUT_DIR/fig8_grid_maxmin.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from example_figures import finish, pyplot

from mlpdesign.kernels import core as kernels
from mlpdesign.report import metrics as report
from mlpdesign.select.greedy import maxmin  # the module, not select.greedy (the loop)


def grid(seed: int = 0) -> np.ndarray:
    """The 41 x 41 grid of [-1, 1]^2 (spacing 0.05), shuffled as in the paper's listing 1."""
    x1, x2 = np.mgrid[-1:1.05:0.05, -1:1.05:0.05]
    return np.random.default_rng(seed).permutation(np.c_[x1.ravel(), x2.ravel()], axis=0)


def run(out_dir: str | Path = ".", n: int = 40, n_random: int = 100, seed: int = 0) -> dict:
    """Design, compare with random designs, draw the figure; return the numbers."""
    x = grid(seed)
    kd = kernels.linear(x, normalize=False)  # D2 = |x - y|^2, the squared Euclidean distance
    picked = maxmin(kd, n, first=int(np.argmax((x * x).sum(1))))  # start in a corner
    design, psi = picked.index, picked.psi
    evals = report.evaluate(kd, [design, *report.random_designs(len(x), n, n_random, seed)])
    dist = [np.sqrt(e.min_pairwise) for e in evals]  # smallest pairwise distance of each prefix

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    ax1.scatter(*x.T, s=2, color="0.75", label=f"pool: {len(x)} grid points")
    ax1.scatter(*x[design].T, s=30, color="C0", label=f"max-min design: {n} points")
    for rank, (a, b) in enumerate(x[design], start=1):
        ax1.annotate(str(rank), (a, b), xytext=(3, 3), textcoords="offset points", fontsize=8)
    ax1.set(xlabel="x₁", ylabel="x₂", aspect="equal", title="Max-min design (labels: order)")
    # below the axes: inside, any corner would hide a pick (pick 2 is in a corner)
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    m = np.arange(1, n + 1)
    rnd = np.vstack(dist[1:])
    ax2.fill_between(
        m[1:],
        *np.quantile(rnd[:, 1:], [0.1, 0.9], axis=0),
        color="0.85",
        label=f"{n_random} random designs: 10-90 %",
    )
    ax2.plot(m[1:], np.median(rnd[:, 1:], axis=0), color="0.4", label="random: median")
    ax2.plot(m[1:], dist[0][1:], "o-", ms=3, color="C0", label="max-min design")
    ax2.set(
        xlabel="design size m (first m points)",
        yscale="log",
        ylabel="smallest pairwise distance (Euclidean)",
        title="Minimum distance: max-min vs random",
    )
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    out = Path(out_dir) / "fig8_grid_maxmin.png"
    return finish(fig, out, design, psi, min_distance=dist[0], random_min_distance=rnd)


if __name__ == "__main__":
    res = run(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(
        f"max-min design of 40: smallest pairwise distance {res['min_distance'][-1]:.4f}; "
        f"random designs: median {np.median(res['random_min_distance'][:, -1]):.4f}, "
        f"best {res['random_min_distance'][:, -1].max():.4f}; figure {res['figure']}"
    )
