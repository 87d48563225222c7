"""Covering radius of designs on a large pool: the report's blocked stream vs the alternatives.

Synthetic pool: N unit-normalised float32 feature rows (a SOAP-like dimension) under the
normalised linear kernel; a design of n points plus R random designs. Compares, on the same
data and in one process:

- report.covering_curves (blocked: one matrix product per term for a group of design points,
  the pool streamed in chunks; gives the covering radius of *every* prefix);
- the plain path: one kernel row per design point (KernelData.d2_range), running min;
- KernelData.min_d2_to (select's exact-bounds state; the full design only, no curve).

Prints seconds, ratios and the blocked path's peak allocation (the pool itself excluded). Usage:
    python benchmarks/bench_report.py [N] [dim] [n] [R]
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np

from mlpdesign.kernels import core as kernels
from mlpdesign.report import metrics as report


def main(n_pool: int = 100_000, dim: int = 600, n: int = 100, n_random: int = 5) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_pool, dim)).astype(np.float32)
    kd = kernels.linear(x, normalize=True, dtype="float32")
    del x
    designs = report.random_designs(n_pool, n, 1 + n_random, seed=1)
    rows = sum(len(d) for d in designs)
    print(
        f"pool {n_pool} x {dim} float32 ({n_pool * dim * 4 / 2**20:.0f} MiB), "
        f"{len(designs)} designs of {n} ({rows} kernel rows of {n_pool})"
    )

    tracemalloc.start()
    t = time.perf_counter()
    curves = report.covering_curves(kd, designs)
    t_block = time.perf_counter() - t
    mem_block = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    t = time.perf_counter()
    plain = []
    for d in designs:
        psi = np.full(n_pool, np.inf)
        c = np.empty(len(d))
        for j, i in enumerate(d):
            np.minimum(psi, kd.d2_range(kd.query(int(i)), 0, n_pool), out=psi)
            c[j] = psi.max()
        plain.append(c)
    t_plain = time.perf_counter() - t

    t = time.perf_counter()
    full = [float(kd.min_d2_to(d).max()) for d in designs]
    t_bounds = time.perf_counter() - t

    err = max(float(np.abs(a - b).max()) for a, b in zip(curves, plain, strict=True))
    err_full = max(abs(a[-1] - f) for a, f in zip(curves, full, strict=True))
    print(
        f"report.covering_curves (blocked, all prefixes): {t_block:7.2f} s  "
        f"{rows * n_pool / t_block / 1e6:7.1f} M D2/s  peak {mem_block:.0f} MiB allocated"
    )
    print(
        f"plain rows (d2_range, all prefixes):            {t_plain:7.2f} s  "
        f"ratio {t_plain / t_block:5.1f}x"
    )
    print(
        f"select bounds (min_d2_to, full design only):    {t_bounds:7.2f} s  "
        f"ratio {t_bounds / t_block:5.1f}x"
    )
    print(
        f"max |blocked - plain| = {err:.2e}; |blocked - bounds| at full size = {err_full:.2e} "
        f"(float32 kernel, eps bound {kd.eps:.1e})"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
