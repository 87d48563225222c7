"""Paper fig. 3: max-min design of 100 points on a strongly biased pool, unit Gaussian kernel.

Pool: 10^4 samples of N(0, 0.5^2) in 2-D. Distance: the squared kernel distance
D2 = 2 - 2 exp(-|x - y|^2 / 2) (paper eq. 2, unit scale). The entropy criterion
log det(K + jitter I) of the optimised design is compared with 100 random realisations of
100 points; the optimised design beats every one of them.

    python examples/fig3_gaussian_entropy.py [OUTPUT_DIR]   # OUTPUT_DIR/fig3_gaussian_entropy.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from example_figures import finish, pyplot

from mlpdesign.kernels import core as kernels
from mlpdesign.report import metrics as report
from mlpdesign.select.greedy import maxmin  # the module, not select.greedy (the loop)

JITTER = report.DEFAULT_JITTER


def run(
    out_dir: str | Path = ".",
    n: int = 100,
    n_pool: int = 10_000,
    n_random: int = 100,
    seed: int = 0,
) -> dict:
    """Design, score it and the random designs by log det K, draw the figure."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.5, size=(n_pool, 2))
    kd = kernels.gaussian(x, length_scale=1.0)  # D2 = 2 - 2 exp(-|x - y|^2 / 2)
    picked = maxmin(kd, n)
    design, psi = picked.index, picked.psi
    randoms = report.random_designs(n_pool, n, n_random, seed + 1)
    logdet = [report.log_det(kd.k_block(d, d), JITTER) for d in [design, *randoms]]

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, d, title in (
        (axes[0], randoms[0], "Random (representative) design"),
        (axes[1], design, "Max-min design (labels: first 9 picks)"),
    ):
        ax.scatter(*x.T, s=1, color="0.6", alpha=0.15, label=f"pool: {n_pool} samples")
        ax.scatter(*x[d].T, s=14, color="C0", label=f"{n} design points")
        ax.set(xlabel="x₁", ylabel="x₂", aspect="equal", title=title)
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    for rank, (a, b) in enumerate(x[design[:9]], start=1):
        axes[1].annotate(
            str(rank),
            (a, b),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=10,
            color="C3",
            weight="bold",
        )
    axes[2].hist(
        logdet[1:], bins=20, color="0.75", edgecolor="0.4", label=f"{n_random} random designs"
    )
    axes[2].axvline(logdet[0], color="C0", lw=2.5, label="max-min design")
    axes[2].set(
        xlabel=f"log det(K + {JITTER:g} I)  (entropy, nats)",
        ylabel="number of random designs",
        title=f"Entropy of {n}-point designs",
    )
    axes[2].legend(fontsize=8)
    out = Path(out_dir) / "fig3_gaussian_entropy.png"
    return finish(fig, out, design, psi, logdet=logdet[0], logdet_random=np.array(logdet[1:]))


if __name__ == "__main__":
    res = run(sys.argv[1] if len(sys.argv) > 1 else ".")
    r = res["logdet_random"]
    print(
        f"log det K: max-min design {res['logdet']:.1f}; random designs median "
        f"{np.median(r):.1f}, best {r.max():.1f}; figure {res['figure']}"
    )
