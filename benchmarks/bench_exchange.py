"""Benchmark of ``select --refine exchange``: the exchange with its exact bounds against the
plain exact exchange (every pair evaluated), same swaps, on the paper's Zr pool.

The first ``--pool-size`` configs (default 20 000) of the 100 000-candidate paper store of
``bench_select.py`` (cached in ``--cache``), normalised GAP kernel, float64, jitter 1e-6, in
one process on the same kernel data:

* MaxEnt: a greedy MaxEnt design of ``-n`` picks (``maxent_lazy``), then its Fedorov
  exchange (at most ``--max-swaps``, default ``-n``) with the bounds and without them
  (kernel values between candidates and the design cached, the in-memory path), and the
  first ``--blocks-swaps`` swaps with the kernel values recomputed in blocks each step (what
  a run under a tight ``--memory-limit`` does);
* max-min: the same for a greedy max-min design of ``-n`` picks (greedy max-min is often
  already a local optimum of its bottleneck criterion: few swaps), and for a random design
  of ``-n`` (``--random-start``, seed 1): many swaps, where the bounds show.

All variants of a criterion must give the same swaps. Prints seconds, ratios, the bounds'
work saved, and writes ``benchmarks/results/exchange.json`` (with the load average).

    python benchmarks/bench_exchange.py                    # 200 of 20 000
    python benchmarks/bench_exchange.py --pool-size 5000 -n 100 --no-write
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from benchutil import machine, timed, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "exchange.json"


def _swaps(r) -> list:
    return [(int(t), int(x)) for t, x, _ in r.swaps]


def run_criterion(kd, crit: str, start, args, label: str = "greedy") -> list[dict]:
    """Rows of the results table: the exchange of ``start`` with and without bounds
    (kernel values cached), and its first swaps with the kernel values in blocks."""
    from mlpdesign.select.exchange import exchange

    kw = dict(jitter=args.jitter, max_swaps=args.max_swaps or len(start))
    fast, t_fast = timed(exchange, kd, start, crit, bounds=True, **kw)
    plain, t_plain = timed(exchange, kd, start, crit, bounds=False, **kw)
    same = _swaps(fast) == _swaps(plain)
    s = fast.stats
    work = (
        f"{s['rows_solved'] / max(1, s['rows_scanned']):.1%} of candidate rows solved twice"
        if crit == "maxent"
        else f"{s['rows_recomputed'] / max(1, s['steps']):.0f} candidate rows recomputed per step"
    )
    plain_work = "every row solved twice" if crit == "maxent" else "every row, every t"
    base = {"criterion": crit, "start": label, "swaps": len(fast.swaps), "steps": s["steps"]}
    rows = [
        {**base, "variant": "bounds (cached)", "s": round(t_fast, 2), "work": work},
        {**base, "variant": "plain (cached)", "s": round(t_plain, 2), "work": plain_work},
    ]
    rows[0]["ratio_plain_over_bounds"] = round(t_plain / t_fast, 2)
    rows[1]["identical_swaps"] = same
    print(
        f"{crit} ({label} start): {len(fast.swaps)} swaps in {s['steps']} steps, objective "
        f"{fast.before:.6g} -> {fast.after:.6g}; bounds {t_fast:.2f} s, plain {t_plain:.2f} s "
        f"({t_plain / t_fast:.2f}x); {work}; identical swaps: {same}",
        flush=True,
    )
    rows[0].update(objective_before=fast.before, objective_after=fast.after, tie=s["tie"])
    if args.blocks_swaps:
        kb = dict(kw, max_swaps=args.blocks_swaps)
        blk, t_blk = timed(exchange, kd, start, crit, bounds=True, cache_bytes=0, **kb)
        first, t_first = timed(exchange, kd, start, crit, bounds=True, **kb)
        same_b = _swaps(blk) == _swaps(fast)[: args.blocks_swaps]
        k = len(blk.swaps)
        rows.append(
            {
                "criterion": crit,
                "start": label,
                "variant": f"bounds, in blocks (first {k} swaps)",
                "swaps": k,
                "steps": blk.stats["steps"],
                "s": round(t_blk, 2),
                "work": f"{blk.stats['kernel_values']:,} kernel values",
                "identical_swaps": same_b,
                "cached_s_same_swaps": round(t_first, 2),
            }
        )
        print(
            f"  in blocks (no cached kernel values), first {k} swaps: "
            f"{t_blk:.2f} s vs {t_first:.2f} s cached; identical: {same_b}",
            flush=True,
        )
    return rows


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_select import pool_store

    from mlpdesign.io.store import open_store
    from mlpdesign.kernels import core as K
    from mlpdesign.select.greedy import maxmin
    from mlpdesign.select.maxent import maxent_lazy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool-size", type=int, default=20_000)
    ap.add_argument("-n", type=int, default=200, help="greedy picks")
    ap.add_argument("--max-swaps", type=int, default=None, help="default: -n")
    ap.add_argument("--blocks-swaps", type=int, default=3, help="0: skip the blocks run")
    ap.add_argument("--jitter", type=float, default=1e-6)
    ap.add_argument("--criteria", default="maxent,maxmin")
    ap.add_argument("--random-start", default="maxmin", help="criteria also run from random")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mlpdesign-bench"))
    ap.add_argument("--store", type=Path, default=None, help="use this store instead")
    ap.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    args = ap.parse_args()

    path = args.store or pool_store(args.cache, 100_000)
    with open_store(path) as st:
        c1 = min(args.pool_size, st.n_configs)
        kd, t_load = timed(K.StoreKernel, st, configs=(0, c1) if c1 < st.n_configs else None)
    print(f"store {path}: {kd.n} configs, kernel data loaded in {t_load:.1f} s", flush=True)
    out = {
        "title": f"select --refine exchange: {args.n}-pick designs of the {kd.n}-candidate "
        "Zr pool, exact bounds vs plain exact exchange",
        "benchmark": "benchmarks/bench_exchange.py",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pool": kd.n,
        "picks": args.n,
        "jitter": args.jitter,
        "max_swaps": args.max_swaps or args.n,
        "load_average_1min_at_start": round(os.getloadavg()[0], 1),
        "rows": [],
    }
    for crit in args.criteria.split(","):
        if crit == "maxent":
            d, t = timed(maxent_lazy, kd, args.n, jitter=args.jitter)
        else:
            d, t = timed(maxmin, kd, args.n, strata=None)
        print(f"greedy {crit}: {args.n} picks in {t:.2f} s", flush=True)
        out[f"greedy_{crit}_s"] = round(t, 2)
        out["rows"] += run_criterion(kd, crit, d.index, args)
        if crit in args.random_start.split(","):
            rnd = np.random.default_rng(1).choice(kd.n, args.n, replace=False)
            out["rows"] += run_criterion(kd, crit, rnd, args, "random")
    out["load_average_1min_at_end"] = round(os.getloadavg()[0], 1)
    write_results(RESULTS, out, args.no_write)


if __name__ == "__main__":
    main()
