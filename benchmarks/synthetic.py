"""Synthetic descriptor stores for the scale benchmarks: big, cheap to make, SOAP-like.

A real pool of elastically deformed crystals is a low-dimensional family (six strain
components) seen through a smooth, high-dimensional descriptor, so its SOAP vectors lie
near a 6-dimensional manifold of the 606-dimensional space. The synthetic rows copy that
shape: ``x = normalise(m + s tanh(z A + b) + noise)`` with a latent ``z`` uniform in [-1, 1]^6,
one row per candidate (a one-atom cell), stored in float32 under the paper's SOAP kernel
(dot_product, zeta = 4). Written block by block, so a 10^6 x 606 store (2.4 GB) needs
little memory; the same seed gives the same bytes.

    python benchmarks/synthetic.py -n 1000000 -o /tmp/mlpdesign-bench/synth1000000.h5
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

#: the paper's SOAP (l_max = n_max = 10: 606 numbers per atom), alone
SOAP_GAP = (
    "soap cutoff=6.8 l_max=10 n_max=10 normalize=T atom_sigma=0.15 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)
DIM = 606
LATENT = 6


def synthetic_rows(
    c0: int, c1: int, seed: int, dim: int = DIM, spread: float = 0.3, noise: float = 1e-4
) -> np.ndarray:
    """Rows of candidates ``c0 .. c1-1``; each candidate depends on (seed, index) only."""
    rng = np.random.default_rng([seed, 0])
    A = rng.normal(0.0, 1.0, (LATENT, dim))
    b = rng.normal(0.0, 0.5, dim)
    m = np.abs(rng.normal(0.0, 1.0, dim))  # the common part of all rows (as in SOAP)
    out = np.empty((c1 - c0, dim))
    for j0 in range(c0 - c0 % 4096, c1, 4096):  # a fixed grid: the same numbers for any c0, c1
        r = np.random.default_rng([seed, 1, j0])
        z = r.uniform(-1.0, 1.0, (4096, LATENT))
        eta = r.normal(0.0, noise, (4096, dim))
        x = m + spread * np.tanh(z @ A + b) + eta
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        a, e = max(c0, j0), min(c1, j0 + 4096)
        out[a - c0 : e - c0] = x[a - j0 : e - j0]
    return out


def write_synthetic_store(
    path: str | os.PathLike, n: int, seed: int = 1, block: int = 1 << 16, force: bool = False
) -> Path:
    """Write an ``n``-candidate synthetic store (float32 rows) atomically."""
    from mlpdesign.gap.strings import parse_gap
    from mlpdesign.io.atomic import atomic_path
    from mlpdesign.io.store import STRUCTURE_DTYPE, ChunkData, StoreWriter, package_versions

    specs = parse_gap(SOAP_GAP)
    specs[0].dim = DIM
    attrs = {
        "pool_sha256": f"synthetic-{seed}-{n}",
        "pool_path": "synthetic",
        "pool_n_configs": n,
        "config_start": 0,
        "shard": "",
        "versions": package_versions(),
        "command": f"benchmarks/synthetic.py -n {n} --seed {seed}",
    }
    with atomic_path(path, force) as tmp:
        w = StoreWriter(tmp, specs, n, [n], attrs, "float32")
        try:
            for c0 in range(0, n, block):
                c1 = min(n, c0 + block)
                m = c1 - c0
                w.append(
                    ChunkData(
                        c0,
                        c1,
                        np.arange(c0, c1, dtype=np.int64),
                        np.ones(m, dtype=np.int32),
                        np.zeros(m, dtype=STRUCTURE_DTYPE),
                        np.full((m, 9), np.nan),
                        [synthetic_rows(c0, c1, seed).astype(np.float32)],
                        [np.ones(m)],
                        [np.ones(m, dtype=np.int64)],
                    )
                )
        finally:
            w.close()
    return Path(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    t = time.perf_counter()
    write_synthetic_store(a.output, a.n, a.seed, force=a.force)
    gb = a.output.stat().st_size / 1e9
    dt = time.perf_counter() - t
    print(f"wrote {a.output}: {a.n} x {DIM} float32, {gb:.2f} GB in {dt:.1f} s")


if __name__ == "__main__":
    main()
