"""Benchmark `write`: picking frames out of a large pool, streamed text scan vs. ASE.

The fast path (`mlpdesign.io.write.pool_frames`) reads only each frame's comment line and
parses the chosen frames; the reference (`pool_frames_ase`) parses every frame with ASE's
extxyz reader. Both return the same frames (tests/test_write.py checks the bytes).

    python benchmarks/bench_write.py [--n 100000] [--picks 500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from mlpdesign.generate.pool import PoolSpec, generate
from mlpdesign.io.write import pool_frames, pool_frames_ase


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="pool size")
    ap.add_argument("--picks", type=int, default=500, help="frames to pick")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    ids = rng.choice(args.n, size=min(args.picks, args.n), replace=False).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        pool = os.path.join(tmp, "pool.xyz")
        generate(pool, args.n, PoolSpec(seed=1))
        size = os.path.getsize(pool)
        t0 = time.perf_counter()
        fast, _ = pool_frames(pool, ids)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref, _ = pool_frames_ase(pool, ids)
        t_ref = time.perf_counter() - t0
    same = all(a == b and a.info.keys() == b.info.keys() for a, b in zip(fast, ref, strict=True))
    print(f"pool: {args.n} frames, {size / 1e6:.1f} MB; picks: {len(ids)}; identical: {same}")
    print(
        f"text scan (fast): {t_fast:7.2f} s  {args.n / t_fast:10.0f} frames/s  "
        f"{size / t_fast / 1e6:7.1f} MB/s"
    )
    print(f"ASE iread (ref):  {t_ref:7.2f} s  {args.n / t_ref:10.0f} frames/s")
    print(f"speed-up: {t_ref / t_fast:.1f}x")


if __name__ == "__main__":
    main()
