"""Benchmark of ``mlpdesign select``: 1000 of 100 000 paper-default Zr candidates.

In one process, on the same data:

* the fast exact max-min (:func:`mlpdesign.select.greedy.maxmin`, float32 and float64),
* (a) the textbook loop of appendix B on the same kernel rows (:func:`maxmin_reference`),
* (b) scikit-matter's ``FPS`` on the equivalent feature matrix (per-config summed SOAP,
  row-normalised: a normalised linear kernel, D² = |x - y|² = 2 - 2 cos), against our fast
  path on the same matrix (``kernels.linear``); both must give the same picks,
* how much ``--balance`` changes the picks (overlap of the first 100 / 1000),

and prints seconds, ratios, GB/s against this machine's streaming read bandwidth, the
fraction of rows evaluated per pick (and of SOAP rows, after the Cauchy-Schwarz bound),
and peak memory against the descriptor bytes. ``MLPDESIGN_THREADS`` sets the threads
(default: the CPUs this process may use).

The pool (generate + describe with the paper's defaults; several minutes for 10^5) is
cached outside the repository, in ``--cache`` (default /tmp/mlpdesign-bench/).

    python benchmarks/bench_select.py                  # 1000 of 100 000
    python benchmarks/bench_select.py --pool-size 5000 -n 200 --quick
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from benchutil import timed


def pool_store(cache: Path, n: int) -> Path:
    """The cached store of an n-candidate paper-default Zr pool (made on first use)."""
    from mlpdesign.describe.runner import describe
    from mlpdesign.generate.pool import PoolSpec, generate

    cache.mkdir(parents=True, exist_ok=True)
    xyz, h5 = cache / f"pool{n}.xyz", cache / f"pool{n}.h5"
    if not h5.exists():
        if not xyz.exists():
            print(f"generating {n} candidates -> {xyz}", flush=True)
            generate(xyz, n, PoolSpec(seed=1))
        print(f"describing {xyz} (paper defaults; minutes for 10^5) -> {h5}", flush=True)
        describe(xyz, h5, jobs=2)
    return h5


def read_bandwidth(nbytes: int = 1 << 29) -> float:
    """Streaming read bandwidth (GB/s) of a sum over a large float32 array."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    a.sum()
    t = time.perf_counter()
    for _ in range(3):
        a.sum()
    return 3 * nbytes / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool-size", type=int, default=100_000)
    ap.add_argument("-n", type=int, default=1000, help="picks")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mlpdesign-bench"))
    ap.add_argument("--store", type=Path, default=None, help="use this store instead")
    ap.add_argument(
        "--ref-picks",
        type=int,
        default=None,
        help="picks of the textbook loop (default: -n; its time is scaled to -n)",
    )
    ap.add_argument("--quick", action="store_true", help="skip float64 and --balance runs")
    args = ap.parse_args()

    from mlpdesign.io.store import open_store
    from mlpdesign.kernels import core as K
    from mlpdesign.select.greedy import maxmin, maxmin_reference

    path = args.store or pool_store(args.cache, args.pool_size)
    print(f"store {path}")

    with open_store(path) as st:
        desc_bytes = sum(
            st.n_rows(k) * s.dim * np.dtype(st.dtype).itemsize for k, s in enumerate(st.descriptors)
        )
        print(
            f"{st.n_configs} configs; descriptor rows {desc_bytes / 1e6:.0f} MB ({st.dtype}); "
            + ", ".join(f"{s.name}: {st.n_rows(k)} x {s.dim}" for k, s in enumerate(st.descriptors))
        )
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        kd, t_load = timed(K.StoreKernel, st, dtype="float64")
        maxmin(kd, args.n)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()  # it slows every allocation: time the run again without it
        fast, t_fast = timed(maxmin, kd, args.n)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    bw = read_bandwidth()
    print(f"streaming read bandwidth of this machine: {bw:.1f} GB/s")
    work_bytes = sum(t.rows.nbytes for t in kd.terms)
    frac = fast.rows_per_pick
    touched = work_bytes * frac * fast.stats["adds"]
    print(
        f"\nkernel data: load {t_load:.2f} s, working rows {work_bytes / 1e6:.0f} MB (float64, "
        f"pair term embedded on {kd.terms[0].dim} grid points), eps {kd.eps:.2e}"
    )
    print(
        f"fast max-min float64 (default): {args.n} picks in {t_fast:.2f} s "
        f"({args.n / t_fast:.0f} picks/s)"
        f"; rows evaluated per pick {100 * frac:.1f}% of the pool (SOAP rows "
        f"{100 * fast.stats['costly_evaluated'] / fast.stats['adds'] / kd.n:.2f}%, "
        f"D² to {100 * fast.stats['centres_evaluated'] / max(1, args.n * (args.n - 1) / 2):.0f}%"
        f" of the design points); "
        f"{touched / t_fast / 1e9:.1f} GB/s of rows ({100 * touched / t_fast / 1e9 / bw:.0f}% "
        f"of streaming read); last psi {fast.psi[-1]:.4g}"
    )
    print(
        f"peak memory (load + select, numpy allocations): {peak / 1e6:.0f} MB = "
        f"{peak / desc_bytes:.2f} x descriptor bytes; process max RSS {rss1 / 1e6:.0f} MB "
        f"(before loading: {rss0 / 1e6:.0f} MB)"
    )

    if not args.quick:
        with open_store(path) as st:
            kd64 = K.StoreKernel(st, dtype="float32")
        f64, t64 = timed(maxmin, kd64, args.n)
        same = np.array_equal(f64.index, fast.index)
        print(
            f"fast max-min float32: {t64:.2f} s, rows/pick {100 * f64.rows_per_pick:.1f}%; "
            f"float32 picks identical to float64: {same}"
            + (
                ""
                if same
                else f" (first difference at pick "
                f"{int(np.flatnonzero(f64.index != fast.index)[0])})"
            )
        )
        del kd64

    m = args.ref_picks or args.n
    ref, t_ref = timed(maxmin_reference, kd, m)
    t_ref_n = t_ref * args.n / m
    same = np.array_equal(ref.index, fast.index[:m])
    print(
        f"(a) textbook loop (appendix B), same float64 kernel rows: {m} picks in {t_ref:.2f} s"
        f"{'' if m == args.n else f' (scaled to {args.n}: {t_ref_n:.1f} s)'}; "
        f"{work_bytes * m / t_ref / 1e9:.1f} GB/s; fast is {t_ref_n / t_fast:.1f}x faster; "
        f"identical picks: {same}"
    )

    # (b) scikit-matter FPS on the equivalent feature matrix
    with open_store(path) as st:
        k = st.index("soap")
        off = st.offsets(k)
        X = np.add.reduceat(np.asarray(st.rows(k), dtype=np.float64), off[:-1], axis=0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    lin = K.linear(X, dtype="float64")
    first = int(np.argmax(lin.d2_row(0)))
    ours, t_ours = timed(maxmin, lin, args.n, first=first)
    try:
        from skmatter.sample_selection import FPS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk, t_sk = timed(lambda: FPS(n_to_select=args.n, initialize=first).fit(X))
        same = np.array_equal(sk.selected_idx_, ours.index)
        agree = int(np.argmax(sk.selected_idx_ != ours.index)) if not same else args.n
        print(
            f"(b) scikit-matter FPS on the {X.shape[0]} x {X.shape[1]} normalised summed-SOAP "
            f"matrix (float64): {t_sk:.2f} s; our fast path on the same matrix (float64): "
            f"{t_ours:.2f} s, rows/pick {100 * ours.rows_per_pick:.1f}% -> {t_sk / t_ours:.1f}x"
            f" faster; our full GAP-kernel run is {t_sk / t_fast:.1f}x faster than FPS; "
            f"identical picks: {same}" + ("" if same else f" (agree on the first {agree})")
        )
    except ImportError:
        print("(b) scikit-matter not installed: skipped")

    if not args.quick:
        with open_store(path) as st:
            kdb = K.StoreKernel(st, dtype="float64", balance=True)
        bal, t_bal = timed(maxmin, kdb, args.n)
        for k_ in (100, args.n):
            ov = len(set(bal.index[:k_].tolist()) & set(fast.index[:k_].tolist()))
            print(
                f"--balance vs default: {ov} of the first {k_} picks in common "
                f"({100 * ov / k_:.0f}%)"
            )
        print(f"--balance run: {t_bal:.2f} s, rows/pick {100 * bal.rows_per_pick:.1f}%")


if __name__ == "__main__":
    main()
