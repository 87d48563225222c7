"""The reader's physical checks and the per-pair distance_2b path, against what they save.

1. ``Pool.check`` (parse + finite/cell/min-distance checks of every frame, the pass describe
   makes before any work) against describing the same frames with the default model.
2. The direct ``distance_2b`` path with ``Z1``/``Z2`` (the alloy default: one term per element
   pair) against quippy's Fortran call (``QuipDescriptor``) and ``Descriptor.calc``.

    python benchmarks/bench_reader.py [--frames 40]   # writes benchmarks/results/reader.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk

from mlpdesign.describe.runner import DescriptorCalculator, QuipDescriptor, prepare_specs
from mlpdesign.gap.strings import DEFAULT_GAP, alloy_specs, parse_gap
from mlpdesign.generate.pool import PoolSpec, generate
from mlpdesign.io.extxyz import Frame
from mlpdesign.io.frames import open_pool

OUT = Path(__file__).resolve().parent / "results" / "reader.json"


def per_frame(fn, items) -> float:
    t = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - t) / len(items)


def check_cost(path: Path, n_describe: int) -> dict:
    pool = open_pool(path)
    t = time.perf_counter()
    pool.check()
    check = (time.perf_counter() - t) / pool.n_configs
    calc = DescriptorCalculator(prepare_specs(None, pool))
    frames = list(pool.frames(0, min(n_describe, pool.n_configs)))
    desc = per_frame(calc.compute, frames)
    return {"check_ms": 1e3 * check, "describe_ms": 1e3 * desc, "ratio": check / desc}


def pair_paths(n: int) -> dict:
    frames = []
    for k in range(n):
        a = Atoms("CuZr", scaled_positions=[[0, 0, 0], [0.5] * 3], cell=3.26 * np.eye(3), pbc=True)
        a = a.repeat((3, 3, 3))
        a.rattle(0.08, seed=k)
        frames.append(Frame.from_atoms(a))
    specs = alloy_specs(parse_gap(DEFAULT_GAP), [29, 40])[:3]
    from quippy.descriptors import Descriptor

    direct = DescriptorCalculator(specs)
    quip = [QuipDescriptor(Descriptor(s.descriptor), 1, True) for s in specs]
    ref = DescriptorCalculator(specs, fast=False)
    t = {
        "direct": per_frame(direct.compute, frames),
        "quip": per_frame(lambda f: [q(f) for q in quip], frames),
        "calc": per_frame(ref.compute, frames),
    }
    return {k: 1e3 * v for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prim = Path(tmp) / "prim.xyz"
        generate(prim, 20 * args.frames, PoolSpec(seed=1))
        md = Path(tmp) / "md96.xyz"
        cells = []
        for k in range(args.frames):
            a = bulk("Zr", "hcp", a=3.232, c=5.147).repeat((4, 4, 3))
            a.rattle(0.1, seed=k)
            cells.append(a)
        ase.io.write(md, cells, format="extxyz")
        for name, path in (("primitive 1-2 atom Zr", prim), ("96-atom Zr MD-like", md)):
            r = check_cost(path, args.frames)
            rows.append(
                {
                    "what": f"Pool.check vs describe, {name} (default model)",
                    "ms_per_frame": f"{r['check_ms']:.3g} vs {r['describe_ms']:.3g}",
                    "ratio": f"{100 * r['ratio']:.2g} % of describe",
                }
            )
    p = pair_paths(max(4, args.frames // 4))
    rows.append(
        {
            "what": "distance_2b per element pair (3 terms, 7 A), 54-atom B2 CuZr",
            "ms_per_frame": f"direct {p['direct']:.3g}, QuipDescriptor {p['quip']:.3g}, "
            f"Descriptor.calc {p['calc']:.3g}",
            "ratio": f"direct {p['quip'] / p['direct']:.3g}x QuipDescriptor, "
            f"{p['calc'] / p['direct']:.3g}x Descriptor.calc",
        }
    )
    out = {
        "title": "reader checks and the per-pair distance_2b path",
        "benchmark": "benchmarks/bench_reader.py",
        "source": "session 5 (pools), one process, a shared 2-core machine",
        "rows": rows,
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        print(f"{r['what']}: {r['ms_per_frame']} ms ({r['ratio']})")


if __name__ == "__main__":
    main()
