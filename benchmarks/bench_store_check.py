"""What checking a store on open costs: ``check_values`` against a plain read of its rows.

``open_store`` reads every row once per process, block by block (finite values, SOAP rows on
the unit sphere). This measures that pass on a synthetic store (benchmarks/synthetic.py)
against reading the same rows in the same blocks without any check, both from the page
cache (the file is read once before timing), and writes benchmarks/results/store_check.json.

    python benchmarks/bench_store_check.py -n 100000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def plain_read(path: Path, block_bytes: int) -> float:
    """Seconds to read every row of descriptor 0 in blocks, doing nothing with them."""
    import h5py

    t = time.perf_counter()
    with h5py.File(path, "r") as f:
        ds = f["descriptors/0/rows"]
        step = max(1, block_bytes // (8 * ds.shape[1]))
        for r0 in range(0, ds.shape[0], step):
            ds[r0 : r0 + step]
    return time.perf_counter() - t


def checked_open(path: Path) -> float:
    """Seconds of ``open_store`` with its value check (the once-per-process cache emptied)."""
    from mlpdesign.io import store

    store._CHECKED.clear()
    t = time.perf_counter()
    store.open_store(path).close()
    return time.perf_counter() - t


def main() -> None:
    from synthetic import DIM, write_synthetic_store

    from mlpdesign.io.store import CHECK_BYTES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/mlpdesign-bench"))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    path = a.dir / f"check{a.n}.h5"
    if not path.exists():
        write_synthetic_store(path, a.n)
    plain_read(path, CHECK_BYTES)  # into the page cache
    plain = min(plain_read(path, CHECK_BYTES) for _ in range(a.repeat))
    checked = min(checked_open(path) for _ in range(a.repeat))
    out = {
        "title": "Store check on open (open_store reads every row once per process)",
        "source": "benchmarks/bench_store_check.py",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "n_configs": a.n,
        "dim": DIM,
        "store_bytes": path.stat().st_size,
        "plain_read_s": round(plain, 3),
        "checked_open_s": round(checked, 3),
        "check_over_plain_read": round(checked / plain, 2),
        "check_GB_per_s": round(path.stat().st_size / checked / 1e9, 2),
    }
    res = ROOT / "benchmarks" / "results" / "store_check.json"
    res.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
