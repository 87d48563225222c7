"""Cost of every stage against atoms per config, on pools of equal total atoms (issue 17, item 4).

Pools (about ``--atoms`` atoms each, the paper's descriptors, Zr):

* ``primitive``: ``mlpdesign generate`` (strained hcp/fcc/bcc primitive cells, 1-2 atoms);
* ``hcp 3x3x3`` (54 atoms) and ``hcp 4x4x4`` (128 atoms): rattled, strained hcp supercells
  (:func:`supercell_pool`: strain eigenvalues in [0.97, 1.03], Gaussian displacements of a
  per-config width drawn in [0.02, 0.15] A, like MD snapshots from 300 to ~1500 K, and one
  vacancy in a fifth of them). Each config depends on (seed, index) only.

Each stage runs in its own process (peak RSS its own), on one core (``OMP_NUM_THREADS=1``,
``MLPDESIGN_THREADS=1``):

* describe: ``mlpdesign describe --jobs 1`` end to end (reading, checks, HDF5) against a bare
  loop of quippy ``Descriptor.calc`` over the Atoms already in memory, the same gap string;
  atoms/s of wall time and of CPU time (robust to other load), and their ratios;
* select ``-n N``, in memory and streamed (``--memory-limit``): seconds to the first pick
  (the load, the eps scan, the extreme pass), ms per pick after it, configs evaluated per
  pick (the pair term), configs and SOAP rows whose SOAP term was computed per pick (the
  Cauchy-Schwarz bound skips the others), peak RSS.

``--big``: the streamed run of the issue, 10 000 rattled ``hcp 5x5x2`` cells (~100 atoms,
10^6 atoms, a store of ~5.5 GB) selected with ``--memory-limit 1G``, 200 picks; describe
with ``--jobs 2``. ``--compare-with DIR``: also run the streamed select with the mlpdesign
of another checkout (``PYTHONPATH=DIR``: e.g. main before the bounded streamed pass).
Results: ``results/cells.json``, ``results/cells_stream.json`` (seconds and ratios, the
machine's load average before and after each stage).

    python benchmarks/bench_cells.py                      # 3 sizes, 2*10^4 atoms each
    python benchmarks/bench_cells.py --atoms 100000 -n 200
    python benchmarks/bench_cells.py --big [--compare-with /path/to/old/checkout]
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

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the cell sizes of the table: (label, hcp repeat or None for generate's primitive cells)
SIZES = [("primitive", None), ("hcp 3x3x3", (3, 3, 3)), ("hcp 4x4x4", (4, 4, 4))]
BIG = ("hcp 5x5x2", (5, 5, 2))


def supercell_frames(
    n: int,
    repeat: tuple[int, int, int],
    seed: int = 1,
    strain: float = 0.03,
    rattle: tuple[float, float] = (0.02, 0.15),
    vacancy: float = 0.2,
):
    """``n`` rattled, strained hcp Zr supercells (Atoms), each from (seed, index) only."""
    from mlpdesign.generate.pool import PoolSpec, candidate_rng, iter_candidates

    spec = PoolSpec(
        structures={"hcp": 1.0},
        supercell=tuple(repeat),
        eig_min=1 - strain,
        eig_max=1 + strain,
        seed=seed,
    )
    for atoms in iter_candidates(spec, 0, n):
        i = int(atoms.info["candidate_id"])
        rng = candidate_rng(seed + 1, i)
        width = rng.uniform(*rattle)
        atoms.positions += rng.normal(0.0, width, atoms.positions.shape)
        if rng.random() < vacancy:
            del atoms[int(rng.integers(len(atoms)))]
        atoms.info["rattle"] = width
        yield atoms


def supercell_pool(path: Path, n: int, repeat, seed: int = 1, **kw) -> Path:
    """Write :func:`supercell_frames` to ``path`` (extxyz)."""
    import ase.io

    tmp = path.with_suffix(".tmp.xyz")
    ase.io.write(tmp, list(supercell_frames(n, repeat, seed, **kw)), format="extxyz")
    tmp.replace(path)
    return path


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _rss() -> int:
    """Peak RSS of this process and its finished children (bytes)."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return 1024 * max(me, kids)


# ---------------------------------------------------------------------------- workers


class Clock:
    """A progress object that records the time of every pick."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: list[float] = []

    def update(self, k: int = 1) -> None:
        self.marks.extend([time.perf_counter() - self.t0] * k)

    def set_postfix_str(self, s: str, refresh: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


def work_describe(a) -> dict:
    from mlpdesign.describe.runner import describe
    from mlpdesign.gap.strings import DEFAULT_GAP

    c0, t0 = _cpu(), time.perf_counter()
    describe(a.pool, a.store, gap=DEFAULT_GAP, jobs=a.jobs, force=True)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "peak_rss": _rss()}


def work_bare(a) -> dict:
    """The bare loop: quippy ``Descriptor.calc`` of every descriptor of the gap string on
    every frame, the frames read beforehand (not timed)."""
    from ase.io import read
    from quippy.descriptors import Descriptor

    from mlpdesign.gap.strings import DEFAULT_GAP, parse_gap

    frames = read(a.pool, ":")
    if a.limit:
        frames = frames[: a.limit]
    descs = [Descriptor(s.descriptor) for s in parse_gap(DEFAULT_GAP)]
    c0, t0 = _cpu(), time.perf_counter()
    for atoms in frames:
        for d in descs:
            d.calc(atoms)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": _cpu() - c0,
        "atoms": int(sum(len(f) for f in frames)),
        "peak_rss": _rss(),
    }


def work_select(a) -> dict:
    """One selection; SOAP configs of the in-memory path's full passes counted by a wrapper
    of ``KernelData.d2_range`` (the extreme pass taken off: it is reported in the load)."""
    from mlpdesign.kernels.core import KernelData
    from mlpdesign.select.stage import run

    passes = {"configs": 0, "calls": 0}
    d2_range = KernelData.d2_range

    def counting(self, q, c0=0, c1=None):
        passes["configs"] += (self.n if c1 is None else c1) - c0
        passes["calls"] += 1
        return d2_range(self, q, c0, c1)

    memory = a.memory_limit in (None, "", "none")
    if memory:
        KernelData.d2_range = counting
    clock = Clock()
    c0 = _cpu()
    _, d = run(
        a.store,
        a.picks,
        None,
        memory_limit=None if memory else a.memory_limit,
        progress_factory=lambda total, desc: clock,
    )
    wall = time.perf_counter() - clock.t0
    st = d.stats
    costly = st.get("costly_evaluated")  # None: a checkout without the stat
    if memory:
        costly = int(costly) + max(0, passes["configs"] - d.n_pool)  # and the full passes
    return {
        "wall_s": wall,
        "cpu_s": _cpu() - c0,
        "first_pick_s": clock.marks[0],
        "per_pick_s": (clock.marks[-1] - clock.marks[0]) / max(1, len(clock.marks) - 1),
        "picks": d.index.tolist(),
        "psi": [float(x) for x in d.psi],
        "marks": [round(t, 4) for t in clock.marks],
        "adds": int(st.get("adds", len(d.index))),
        "evaluated": int(d.evaluated),
        "soap_configs": costly,
        "blocks": st.get("blocks"),
        "cached_blocks": st.get("cached_blocks"),
        "blocks_skipped": st.get("blocks_skipped"),
        "spill_bytes": st.get("spill_bytes"),
        "peak_rss": _rss(),
    }


def work_bound(a) -> dict:
    """How much of D² the Cauchy-Schwarz bound keeps: the bound (pair term exact, SOAP
    bounded) over D², from config 0 to the first 500 configs."""
    from mlpdesign.io.store import open_store
    from mlpdesign.kernels.core import StoreKernel

    with open_store(a.store) as s:
        kd = StoreKernel(s, configs=(0, min(s.n_configs, 500)))
    q = kd.query(0)
    full = kd.d2_range(q, 0, kd.n)[1:]
    low = kd.d2_below(q, np.arange(kd.n), np.zeros(kd.n))[1:]
    ratio = low[full > 0] / full[full > 0]
    return {"min": float(ratio.min()), "median": float(np.median(ratio))}


WORKERS = {
    "describe": work_describe,
    "bare": work_bare,
    "select": work_select,
    "bound": work_bound,
}


def child(what: str, pythonpath: str | None = None, **kw) -> dict:
    """Run one worker in a fresh process (one core): its JSON record, with the load
    average before and after."""
    cmd = [sys.executable, __file__, "--worker", what]
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MLPDESIGN_THREADS="1")
    env["PYTHONPATH"] = pythonpath or str(ROOT)
    before = os.getloadavg()[0]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{what} failed:\n{res.stderr[-3000:]}")
    line = [x for x in res.stdout.splitlines() if x.startswith("BENCH ")][-1]
    rec = json.loads(line[6:])
    rec["load_before"], rec["load_after"] = round(before, 2), round(os.getloadavg()[0], 2)
    return rec


# ---------------------------------------------------------------------------- pools


def make_pool(cache: Path, label: str, repeat, atoms: int, seed: int = 1) -> tuple[Path, int]:
    """The pool of one cell size with about ``atoms`` atoms (cached): (path, configs)."""
    from mlpdesign.generate.pool import PoolSpec, generate

    if repeat is None:  # hcp 2, fcc 1, bcc 1 atoms: 4/3 on average
        n = round(atoms * 3 / 4)
    else:
        n = max(1, round(atoms / (2 * int(np.prod(repeat)))))
    name = label.replace(" ", "_") + f"_{n}.xyz"
    path = cache / name
    if not path.exists():
        if repeat is None:
            generate(path, n, PoolSpec(seed=seed))
        else:
            supercell_pool(path, n, repeat, seed)
    return path, n


def store_counts(store: Path) -> tuple[int, int, int]:
    """(configs, atoms, SOAP rows) of a store."""
    from mlpdesign.io.store import open_store

    with open_store(store) as st:
        soap = [k for k, d in enumerate(st.descriptors) if d.name == "soap"][0]
        return st.n_configs, int(np.asarray(st.n_atoms).sum()), int(st.offsets(soap)[-1])


def ms(x: float) -> float:
    return round(1000 * x, 1)


def gb(x: float) -> float:
    return round(x / 1e9, 2)


def describe_pair(pool: Path, store: Path, jobs: int = 1, bare_limit: int | None = None) -> dict:
    """describe (``jobs`` processes) and the bare loop (one process; its first
    ``bare_limit`` frames) on one pool."""
    desc = child("describe", pool=pool, store=store, jobs=jobs)
    _, atoms, _ = store_counts(store)
    bare = child("bare", pool=pool, limit=bare_limit)
    out = {
        "describe_atoms_per_s": round(atoms / desc["wall_s"], 1),
        "bare_atoms_per_s": round(bare["atoms"] / bare["wall_s"], 1),
        "describe_atoms_per_cpu_s": round(atoms / desc["cpu_s"], 1),
        "bare_atoms_per_cpu_s": round(bare["atoms"] / bare["cpu_s"], 1),
    }
    out["describe_vs_bare"] = round(out["describe_atoms_per_s"] / out["bare_atoms_per_s"], 2)
    out["describe_vs_bare_cpu"] = round(
        out["describe_atoms_per_cpu_s"] / out["bare_atoms_per_cpu_s"], 2
    )
    out["describe"], out["bare"] = desc, bare
    return out


def select_summary(rec: dict, rows_per_config: float) -> dict:
    """The per-pick figures of one select run."""
    adds, soap = max(1, rec["adds"]), rec["soap_configs"]
    return {
        "first_pick_s": round(rec["first_pick_s"], 2),
        "ms_per_pick": ms(rec["per_pick_s"]),
        "wall_s": round(rec["wall_s"], 2),
        "cpu_s": round(rec["cpu_s"], 2),
        "configs_evaluated_per_pick": round(rec["evaluated"] / adds, 1),
        "soap_configs_per_pick": None if soap is None else round(soap / adds, 1),
        "soap_rows_per_pick": None if soap is None else round(soap * rows_per_config / adds),
        "peak_rss_gb": gb(rec["peak_rss"]),
        "blocks": rec["blocks"],
        "cached_blocks": rec["cached_blocks"],
        "spill_gb": gb(rec["spill_bytes"] or 0),
        "load": [rec["load_before"], rec["load_after"]],
    }


def table(a) -> None:
    """The equal-total-atoms table: results/cells.json."""
    rows, runs = [], {}
    for label, repeat in SIZES:
        pool, _ = make_pool(a.cache, label, repeat, a.atoms)
        store = pool.with_suffix(".h5")
        print(f"{label}: {pool.name}", flush=True)
        d = describe_pair(pool, store)
        n, atoms, soap_rows = store_counts(store)
        mem = child("select", store=store, picks=a.n, memory_limit="none")
        stream = child("select", store=store, picks=a.n, memory_limit=a.memory_limit)
        if mem["picks"] != stream["picks"]:
            sys.exit(f"{label}: streamed picks differ from the in-memory ones")
        per = soap_rows / n
        m, s = select_summary(mem, per), select_summary(stream, per)
        bound = child("bound", store=store)
        rows.append(
            {
                "cells": label,
                "atoms_per_config": round(atoms / n, 1),
                "configs": n,
                "atoms": atoms,
                "describe_atoms_per_s": d["describe_atoms_per_s"],
                "bare_quippy_atoms_per_s": d["bare_atoms_per_s"],
                "describe_vs_bare": d["describe_vs_bare"],
                "describe_vs_bare_cpu": d["describe_vs_bare_cpu"],
                "select_load_s": m["first_pick_s"],
                "ms_per_pick": m["ms_per_pick"],
                "ms_per_pick_streamed": s["ms_per_pick"],
                "soap_rows_per_pick_memory": m["soap_rows_per_pick"],
                "soap_rows_per_pick_streamed": s["soap_rows_per_pick"],
                "peak_rss_gb": m["peak_rss_gb"],
                "peak_rss_streamed_gb": s["peak_rss_gb"],
                "cs_bound_share_of_d2": round(bound["min"], 4),
            }
        )
        runs[label] = {"describe": d, "memory": m, "streamed": s}
        print(json.dumps(rows[-1]), flush=True)
    doc = {
        "title": f"cost per stage against atoms per config: pools of ~{a.atoms} atoms, "
        f"select -n {a.n}",
        "benchmark": "benchmarks/bench_cells.py",
        "source": f"{_machine()}; one core per stage (OMP_NUM_THREADS=1, MLPDESIGN_THREADS=1); "
        f"streamed: --memory-limit {a.memory_limit}; in-memory and streamed picks identical; "
        "ms per pick: after the first pick; SOAP rows per pick: rows whose SOAP products "
        "were computed, per added point; cs_bound_share_of_d2: the smallest ratio of the "
        "Cauchy-Schwarz bound (pair term exact, SOAP bounded) to D², config 0 to configs "
        "1-499",
        "rows": rows,
        "runs": runs,
    }
    _write(a.out or HERE / "results" / "cells.json", doc)


def big(a) -> None:
    """The streamed run of 10 000 ~100-atom cells: results/cells_stream.json."""
    label, repeat = BIG
    n_cfg = a.big_configs
    pool = a.cache / f"{label.replace(' ', '_')}_{n_cfg}.xyz"
    if not pool.exists():
        supercell_pool(pool, n_cfg, repeat, 1)
    store = pool.with_suffix(".h5")
    rec: dict = {"cells": label, "configs": n_cfg}
    if not store.exists() or a.redescribe:
        d = describe_pair(pool, store, jobs=a.jobs, bare_limit=a.bare_limit)
        rec["describe"], rec["describe_jobs"] = d, a.jobs
    n, atoms, soap_rows = store_counts(store)
    rec.update(atoms=atoms, atoms_per_config=round(atoms / n, 1), soap_rows=soap_rows)
    rec["store_gb"] = gb(store.stat().st_size)
    per = soap_rows / n
    rec["cs_bound_share_of_d2"] = child("bound", store=store)
    s = child("select", store=store, picks=a.big_picks, memory_limit=a.big_limit)
    rec["streamed"] = select_summary(s, per)
    if a.big_memory:
        m = child("select", store=store, picks=a.big_picks, memory_limit="none")
        rec["memory"] = select_summary(m, per)
        rec["memory"]["same_picks"] = m["picks"] == s["picks"]
    if a.compare_with:  # the same store and limit, another checkout's mlpdesign
        k = min(a.compare_picks, a.big_picks)
        old = child(
            "select",
            pythonpath=str(a.compare_with),
            store=store,
            picks=k,
            memory_limit=a.big_limit,
        )
        new_k = (s["marks"][k - 1] - s["marks"][0]) / max(1, k - 1)
        rec["compare_with"] = {
            "pythonpath": str(a.compare_with),
            "picks": k,
            **select_summary(old, per),
            "same_picks": old["picks"] == s["picks"][:k],
            "psi_max_abs_diff": float(np.max(np.abs(np.subtract(old["psi"][1:], s["psi"][1:k])))),
            "psi_bitwise_equal": old["psi"] == s["psi"][:k],
            "ms_per_pick_new_same_picks": ms(new_k),
            "per_pick_old_over_new": round(old["per_pick_s"] / new_k, 2),
        }
    doc = {
        "title": f"select -n {a.big_picks} streamed (--memory-limit {a.big_limit}) on "
        f"{n} x ~{round(atoms / n)}-atom cells ({atoms} atoms)",
        "benchmark": "benchmarks/bench_cells.py --big",
        "source": f"{_machine()}; describe --jobs {a.jobs}; select on one core "
        "(OMP_NUM_THREADS=1, MLPDESIGN_THREADS=1)",
        **rec,
    }
    _write(a.out or HERE / "results" / "cells_stream.json", doc)


def _machine() -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=20_000, help="atoms per pool (table)")
    ap.add_argument("-n", type=int, default=100, help="picks (table)")
    ap.add_argument("--memory-limit", default="600M", help="streamed runs of the table")
    ap.add_argument("--big", action="store_true", help="the 10^4 x ~100-atom streamed run")
    ap.add_argument("--big-configs", type=int, default=10_000)
    ap.add_argument("--big-picks", type=int, default=200)
    ap.add_argument("--big-limit", default="1G")
    ap.add_argument("--jobs", type=int, default=2, help="describe processes of --big")
    ap.add_argument("--bare-limit", type=int, default=200, help="frames of --big's bare loop")
    ap.add_argument("--redescribe", action="store_true", help="--big: describe again")
    ap.add_argument("--compare-with", type=Path, help="--big: also select with this checkout")
    ap.add_argument("--compare-picks", type=int, default=50, help="picks of --compare-with")
    ap.add_argument("--big-memory", action="store_true", help="--big: also in memory")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mlpdesign-bench/cells"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    for k in ("pool", "store", "picks", "limit"):
        ap.add_argument(f"--{k}", help=argparse.SUPPRESS)
    a, _ = ap.parse_known_args()
    if a.worker:
        a.jobs, a.picks = int(a.jobs), int(a.picks or 0)
        a.limit = int(a.limit) if a.limit else None
        print("BENCH " + json.dumps(WORKERS[a.worker](a)), flush=True)
        return
    a.cache.mkdir(parents=True, exist_ok=True)
    (big if a.big else table)(a)


if __name__ == "__main__":
    main()
