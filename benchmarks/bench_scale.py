"""Benchmark of ``select`` beyond memory and over MPI: 1000 picks of 10^6 x 606 float32 rows.

A synthetic SOAP-like store (:mod:`synthetic`, 2.4 GB on disk for 10^6 candidates) is
selected three ways, each in its own process(es) so peak RSS is that run's own:

* in memory (the whole store loaded: ``mlpdesign select``'s default path),
* streamed under ``--memory-limit`` (default 1G): the blocks that fit stay cached, the others
  are built once and then re-read sequentially from a scratch spill file,
* the streamed run under ``mpiexec -n 2`` (each rank streams its shard with the same limit).

For each it prints wall time, peak RSS (largest rank), GB read (HDF5 + spill file) and GB/s,
and the kernel rows processed per second ("throughput per byte") against the in-memory path;
the picks must be identical. Targets: peak RSS <= 1.2 GB under --memory-limit 1G, throughput
within 2x of the in-memory path. The store is cached in --cache (default /tmp/mlpdesign-bench/);
--clean deletes it afterwards.

    python benchmarks/bench_scale.py                                  # 10^6, 1000 picks, 1G
    python benchmarks/bench_scale.py -n 200000 --memory-limit 256M    # a fifth of the size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def worker(a) -> None:
    """One selection in this process (or this MPI rank); prints one JSON line per rank."""
    import numpy as np

    from mlpdesign.mpi import rank_size, world

    comm = world()
    rank, size = rank_size()
    t = time.perf_counter()
    if a.mode == "memory":
        from mlpdesign.select.greedy import select_store

        out = Path(a.cache) / "bench_scale_memory.json"
        _, d = select_store(a.store, a.picks, out, dtype="float32", force=True)
        out.unlink()
    else:
        from mlpdesign.select.scaled import select_streamed

        d = select_streamed(
            a.store, a.picks, memory_limit=a.memory_limit, comm=comm, dtype="float32"
        )
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rec = {
        "mode": a.mode,
        "rank": rank,
        "ranks": size,
        "wall_s": wall,
        "peak_rss": rss,
        "evaluated": int(d.evaluated),
        "picks": d.index.tolist(),
        "bytes_read": int(d.stats.get("bytes_read", 0)),
        "spill_bytes": int(d.stats.get("spill_bytes", 0)),
        "cached_blocks": d.stats.get("cached_blocks"),
        "blocks": d.stats.get("blocks"),
        "psi_last": float(np.asarray(d.psi)[-1]),
    }
    if comm is not None:  # one line, from rank 0: the slowest rank's wall, the largest RSS
        walls_rss = comm.gather((wall, rss), root=0)
        if rank != 0:
            return
        rec["wall_s"] = max(w for w, _ in walls_rss)
        rec["peak_rss"] = max(r for _, r in walls_rss)
    print("BENCH " + json.dumps(rec), flush=True)


def launch(a, mode: str, ranks: int = 1) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--store",
        str(a.store),
        "--picks",
        str(a.picks),
        "--memory-limit",
        a.memory_limit,
        "--cache",
        str(a.cache),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{mode} x{ranks} failed:\n{res.stderr[-3000:]}")
    recs = [json.loads(x[6:]) for x in res.stdout.splitlines() if x.startswith("BENCH ")]
    out = dict(recs[0])
    out["wall_s"] = max(r["wall_s"] for r in recs)
    out["peak_rss"] = max(r["peak_rss"] for r in recs)
    out["evaluated"] = recs[0]["evaluated"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="pool size (default 10^6)")
    ap.add_argument("--picks", type=int, default=1000)
    ap.add_argument("--memory-limit", default="1G")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks of the last run (0: skip)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mlpdesign-bench"))
    ap.add_argument("--skip-memory", action="store_true", help="no in-memory run")
    ap.add_argument("--clean", action="store_true", help="delete the store afterwards")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.mode = a.worker
        worker(a)
        return

    from synthetic import DIM, write_synthetic_store

    a.cache.mkdir(parents=True, exist_ok=True)
    a.store = a.cache / f"synth{a.n}.h5"
    if not a.store.exists():
        t = time.perf_counter()
        write_synthetic_store(a.store, a.n)
        print(f"wrote {a.store} in {time.perf_counter() - t:.0f} s", flush=True)
    size = a.store.stat().st_size
    print(
        f"store: {a.n} x {DIM} float32, {size / 1e9:.2f} GB on disk; {a.picks} picks; "
        f"--memory-limit {a.memory_limit}; {os.cpu_count()} cores",
        flush=True,
    )
    runs = []
    if not a.skip_memory:
        runs.append(("in memory", launch(a, "memory")))
        print(f"  done: in memory ({runs[-1][1]['wall_s']:.0f} s)", flush=True)
    runs.append((f"--memory-limit {a.memory_limit}", launch(a, "streamed")))
    print(f"  done: streamed ({runs[-1][1]['wall_s']:.0f} s)", flush=True)
    if a.ranks > 1:
        runs.append(
            (f"mpiexec -n {a.ranks}, {a.memory_limit}/rank", launch(a, "streamed", a.ranks))
        )
    row_bytes = DIM * 4
    base = runs[0][1]
    base_tp = base["evaluated"] * row_bytes / base["wall_s"]
    print(
        f"\n{'run':34} {'wall s':>8} {'peak RSS GB':>12} {'GB read':>9} {'GB/s read':>10} "
        f"{'rows GB/s':>10} {'vs first':>9} {'picks':>6}"
    )
    for name, r in runs:
        tp = r["evaluated"] * row_bytes / r["wall_s"]
        same = "same" if r["picks"] == base["picks"] else "DIFFER"
        print(
            f"{name:34} {r['wall_s']:8.1f} {r['peak_rss'] / 1e9:12.2f} "
            f"{r['bytes_read'] / 1e9:9.1f} {r['bytes_read'] / 1e9 / r['wall_s']:10.2f} "
            f"{tp / 1e9:10.2f} {base_tp / tp:8.2f}x {same:>6}"
        )
        if r.get("blocks"):
            print(
                f"{'':34} cached {r['cached_blocks']}/{r['blocks']} blocks (rank 0), "
                f"spill {r['spill_bytes'] / 1e9:.2f} GB, {r['wall_s'] / len(r['picks']) * 1e3:.0f} "
                f"ms/pick"
            )
    print(
        "rows GB/s: kernel rows evaluated (after the bound's skipping) per second; 'vs first': "
        "how many times slower per byte than the first run (target <= 2x)"
    )
    if a.clean:
        a.store.unlink()


if __name__ == "__main__":
    main()
