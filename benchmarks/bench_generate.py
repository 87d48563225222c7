"""Benchmark `generate`: candidates per second for a 100 000-candidate Zr pool.

Runs in one process, against the plain alternative: building each candidate as an ASE Atoms
and writing it with ASE's own extxyz writer (the reference the fast path is tested against).
Target (issue 2): >= 5 000 candidates/s on a 2-core machine.

    python benchmarks/bench_generate.py [--n 100000] [--n-ref 10000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from mlpdesign.generate.pool import PoolSpec, generate, iter_candidates, write_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="pool size for the fast path")
    ap.add_argument("--n-ref", type=int, default=10_000, help="pool size for the ASE path")
    args = ap.parse_args()
    spec = PoolSpec(seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "pool.xyz")
        t0 = time.perf_counter()
        generate(out, args.n, spec)
        fast = time.perf_counter() - t0
        size = os.path.getsize(out)

        ref_out = os.path.join(tmp, "ref.xyz")
        t0 = time.perf_counter()
        with open(ref_out, "w") as fh:
            write_frames(fh, iter_candidates(spec, 0, args.n_ref))
        ref = time.perf_counter() - t0

    fast_rate, ref_rate = args.n / fast, args.n_ref / ref
    print(
        f"generate (mlpdesign) : {args.n:>8d} candidates in {fast:7.2f} s = "
        f"{fast_rate:8.0f} candidates/s ({size / fast / 1e6:.1f} MB/s of extxyz)"
    )
    print(
        f"ASE Atoms + ase.io   : {args.n_ref:>8d} candidates in {ref:7.2f} s = "
        f"{ref_rate:8.0f} candidates/s"
    )
    print(f"ratio                : {fast_rate / ref_rate:.2f}x the ASE path")
    print(f"target >= 5000 candidates/s: {'met' if fast_rate >= 5000 else 'NOT met'}")


if __name__ == "__main__":
    main()
