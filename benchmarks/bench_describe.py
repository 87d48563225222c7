"""Throughput of ``mlpdesign describe`` against a bare loop of quippy ``Descriptor.calc``.

Same configs, same descriptors (the paper's default: distance_2b 7 A + SOAP l_max=n_max=10),
in one run. The bare loop gets the Atoms already in memory (reading them is not counted);
describe is timed end to end (indexing and reading the extxyz, computing, writing HDF5,
starting workers). Prints configs/s and ratios:

    .venv/bin/python benchmarks/bench_describe.py [-n 1000] [--repeat 3]

Targets (issue 3): describe >= 1.5x the bare loop per process; --jobs 2 >= 1.7x --jobs 1
on a 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="configs in the pool")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
    args = ap.parse_args()

    from ase.io import read
    from quippy.descriptors import Descriptor

    from mlpdesign.describe.runner import describe
    from mlpdesign.gap.strings import DEFAULT_GAP, parse_gap
    from mlpdesign.generate.pool import PoolSpec, generate

    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.xyz"
        generate(pool, args.n, PoolSpec(seed=1))
        frames = read(pool, ":")
        descs = [Descriptor(s.descriptor) for s in parse_gap(DEFAULT_GAP)]

        def bare() -> None:
            for atoms in frames:
                for d in descs:
                    d.calc(atoms)

        def bare_read() -> None:
            for atoms in read(pool, ":"):
                for d in descs:
                    d.calc(atoms)

        def run(jobs: int) -> None:
            describe(pool, Path(tmp) / f"pool-{jobs}.h5", jobs=jobs, force=True)

        funcs = {"bare": bare, "bare_read": bare_read, "j1": lambda: run(1), "j2": lambda: run(2)}
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for _ in range(args.repeat):  # interleaved, best of: fairer on a busy machine
            for name, f in funcs.items():
                c0, t0 = _cpu(), time.perf_counter()
                f()
                wall[name] = min(wall.get(name, float("inf")), time.perf_counter() - t0)
                cpu[name] = min(cpu.get(name, float("inf")), _cpu() - c0)
    n = args.n
    print(f"pool: {n} Zr configs (hcp/fcc/bcc primitive cells), gap = paper default")
    print("wall: elapsed time; cpu: CPU seconds of this process and its workers (robust to")
    print("other load on the machine; per-process efficiency)")
    print(f"{'method':40s} {'cfg/s wall':>10s} {'vs bare':>8s} {'cfg/cpu-s':>10s} {'vs bare':>8s}")
    labels = {
        "bare": "bare loop of Descriptor.calc (in memory)",
        "bare_read": "bare loop incl. ase.io.read",
        "j1": "describe --jobs 1 (end to end)",
        "j2": "describe --jobs 2 (end to end)",
    }
    for key, label in labels.items():
        print(
            f"{label:40s} {n / wall[key]:10.1f} {wall['bare'] / wall[key]:7.2f}x "
            f"{n / cpu[key]:10.1f} {cpu['bare'] / cpu[key]:7.2f}x"
        )
    print(f"--jobs 2 vs --jobs 1 (wall): {wall['j1'] / wall['j2']:.2f}x")


def _cpu() -> float:
    """CPU seconds used by this process and its finished child processes."""
    import resource

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
