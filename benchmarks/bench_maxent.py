"""Benchmark of greedy MaxEnt: the lazy greedy against the plain full-row greedy.

1000 picks of the 100 000-candidate paper pool (the store of ``bench_select.py``, cached in
``--cache``), normalised GAP kernel, jitter 1e-6, float64, in one process on the same
kernel data:

* :func:`mlpdesign.select.maxent.maxent_lazy` (priority queue of σ² upper bounds, cached
  partial Cholesky rows),
* :func:`mlpdesign.select.maxent.maxent_full` (one kernel row and one rank-one update of
  every σ² per pick),

both must give the same picks. Prints seconds, the ratio, kernel values computed, peak
cached rows, and writes ``benchmarks/results/maxent_lazy.json``.

    python benchmarks/bench_maxent.py                       # 1000 of 100 000
    python benchmarks/bench_maxent.py --pool-size 5000 -n 200 --no-write
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from benchutil import machine, timed, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "maxent_lazy.json"


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_select import pool_store

    from mlpdesign.io.store import open_store
    from mlpdesign.kernels import core as K
    from mlpdesign.select.maxent import maxent_full, maxent_lazy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool-size", type=int, default=100_000)
    ap.add_argument("-n", type=int, default=1000, help="picks")
    ap.add_argument("--jitter", type=float, default=1e-6)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mlpdesign-bench"))
    ap.add_argument("--store", type=Path, default=None, help="use this store instead")
    ap.add_argument("--configs", type=int, default=None, help="only the first N configs")
    ap.add_argument("--skip-full", action="store_true", help="time the lazy greedy only")
    ap.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    args = ap.parse_args()

    path = args.store or pool_store(args.cache, args.pool_size)
    with open_store(path) as st:
        c1 = st.n_configs if args.configs is None else min(args.configs, st.n_configs)
        kd, t_load = timed(K.StoreKernel, st, configs=(0, c1) if c1 < st.n_configs else None)
    print(f"store {path}: {kd.n} configs, kernel data loaded in {t_load:.1f} s, eps {kd.eps:.2e}")
    lazy, t_lazy = timed(maxent_lazy, kd, args.n, jitter=args.jitter)
    s = lazy.stats
    print(
        f"lazy greedy: {args.n} picks in {t_lazy:.2f} s; kernel values {s['kernel_values']:,} "
        f"({s['kernel_values'] / (kd.n * args.n):.3%} of N x n); candidate evaluations "
        f"{s['evaluations']:,}; peak cached rows {s['cache_peak_bytes'] / 1e6:.0f} MB; "
        f"last σ² {lazy.var[-1]:.3g}"
    )
    out = {
        "title": f"select --criterion maxent: {args.n} picks of the {kd.n}-candidate Zr pool",
        "benchmark": "benchmarks/bench_maxent.py",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pool": kd.n,
        "picks": args.n,
        "jitter": args.jitter,
        "load_s": round(t_load, 2),
        "lazy_s": round(t_lazy, 2),
        "lazy_kernel_values": int(s["kernel_values"]),
        "lazy_evaluations": int(s["evaluations"]),
        "lazy_cache_peak_bytes": int(s["cache_peak_bytes"]),
        "last_var": float(lazy.var[-1]),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
    }
    if not args.skip_full:
        full, t_full = timed(maxent_full, kd, args.n, jitter=args.jitter)
        same = bool(np.array_equal(full.index, lazy.index))
        print(
            f"full-row greedy: {t_full:.2f} s; kernel values {full.stats['kernel_values']:,}; "
            f"lazy is {t_full / t_lazy:.1f}x faster; identical picks: {same}"
            + ("" if same else f" (first difference at {np.argmax(full.index != lazy.index)})")
        )
        dv = float(np.abs(full.var - lazy.var).max()) if same else None
        out.update(
            {
                "full_s": round(t_full, 2),
                "full_kernel_values": int(full.stats["kernel_values"]),
                "ratio": round(t_full / t_lazy, 2),
                "identical_picks": same,
                "max_var_difference": dv,
            }
        )
    write_results(RESULTS, out, args.no_write)


if __name__ == "__main__":
    main()
