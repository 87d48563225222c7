"""Calibrate ``fit``'s estimate of gap_fit's peak memory against real gap_fit runs.

Small real fits (seconds each on 2 cores) that vary one thing at a time: configurations,
sparse points, SOAP size, cell size (2-atom cells, 96-atom bulk, a slab), forces or energies
only, one element or an alloy (Cu-Zr with the alloy default model: per-pair distance_2b,
per-species SOAP over both species). Each is fitted by ``mlpdesign.gap.fit.fit`` (gap_fit's
peak is the summed VmHWM of its processes, ``fit_memory.HighWater``) and its counts
(descriptor sizes, gradient points, sparse points, targets) taken by ``fit_memory.estimate``.
The factors of ``fit_memory.CALIBRATION`` are a non-negative least-squares fit of the peaks
to those counts (relative errors weighted equally), rounded; the script prints the runs, the
fitted and the module's factors, each run's estimate/peak ratio, and the estimate for the
larger fits measured in earlier sessions (their reported peaks beside it), and writes
benchmarks/results/fit_memory.json.

    python benchmarks/fit_memory.py            # about 5 minutes on 2 cores
    python benchmarks/fit_memory.py --only A,B # some runs
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import write_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlpdesign.gap import fit_memory  # noqa: E402
from mlpdesign.gap.fit import FitOptions, fit, fit_specs  # noqa: E402
from mlpdesign.gap.label import (  # noqa: E402
    eam_calculator,
    label_frames,
    labelled_set,
    write_labelled,
)
from mlpdesign.gap.strings import DEFAULT_GAP, alloy_specs, parse_gap, render_gap  # noqa: E402
from mlpdesign.generate.pool import PoolSpec, generate  # noqa: E402
from mlpdesign.io.frames import read_configs  # noqa: E402

EAM = ROOT / "third_party" / "Zr_mm.eam.fs"
OUT = ROOT / "benchmarks" / "results" / "fit_memory.json"
SMALL_SOAP = DEFAULT_GAP.replace("l_max=10 n_max=10", "l_max=4 n_max=4")
D2B_ONLY = DEFAULT_GAP.split(":")[0].strip()
ALLOY = render_gap(alloy_specs(parse_gap(DEFAULT_GAP), [29, 40]))
A, C = 3.232, 5.147

#: name -> (set, gap string, soap sparse points, what it varies); sets: NAME_LABELS with
#: LABELS "efv" (energies, forces, virials), "ef" (no virials) or "e" (energies only)
RUNS = {
    "A": ("zr2_100_efv", DEFAULT_GAP, 100, "100 strained 1-2 atom cells, paper model"),
    "B": ("zr2_300_efv", DEFAULT_GAP, 100, "300 cells: 3x the atoms"),
    "C": ("zr2_300_efv", DEFAULT_GAP, 400, "300 cells, 400 sparse points"),
    "D": ("zr2_300_efv", SMALL_SOAP, 100, "SOAP l_max=n_max=4 (d=51)"),
    "E": ("zr2_300_efv", D2B_ONLY, 100, "distance_2b only"),
    "F": ("zr2_300_e", DEFAULT_GAP, 100, "energies only (no forces, no virials)"),
    "G": ("zr96_3_efv", DEFAULT_GAP, 100, "3 rattled 96-atom hcp cells"),
    "H": ("slab_3_ef", DEFAULT_GAP, 100, "3 rattled 64-atom (0001) slabs, pbc T T F (no virial)"),
    "I": ("cuzr16_10_efv", ALLOY, 100, "10 Cu-Zr 16-atom cells, alloy model (5 terms)"),
    "J": ("cuzr16_25_efv", ALLOY, 100, "25 Cu-Zr 16-atom cells, alloy model"),
    "K": ("zr96_3_ef", DEFAULT_GAP, 100, "G without virials"),
    "L": ("zr2_300_ef", DEFAULT_GAP, 100, "B without virials"),
}
FACTORS = ("base", "grad", "virial", "x", "cov")


def _rattled(atoms, n: int, seed: int, stdev: float = 0.08) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = atoms.copy()
        a.positions += rng.normal(0.0, stdev, a.positions.shape)
        a.info["candidate_id"] = k
        out.append(a)
    return out


def _cuzr(n: int, seed: int) -> list:
    """Cu-Zr 16-atom cells: hcp Zr 2x2x2 at 90 % of the volume, half the sites Cu."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    base = bulk("Zr", "hcp", a=A * 0.965, c=C * 0.965).repeat((2, 2, 2))
    frames = _rattled(base, n, seed)
    for a in frames:
        z = a.numbers.copy()
        z[rng.permutation(len(z))[: len(z) // 2]] = 29
        a.numbers = z
    return frames


def build_sets(work: Path) -> dict[str, Path]:
    """The labelled sets of :data:`RUNS` (EAM labels for Zr; Lennard-Jones stand-ins, whose
    values do not change gap_fit's memory, for Cu-Zr)."""
    from ase.build import bulk, hcp0001
    from ase.calculators.lj import LennardJones

    eam = eam_calculator(EAM)
    sets: dict[str, Path] = {}
    for n in (100, 300):
        generate(work / f"p{n}.xyz", n, PoolSpec(seed=7))
    slab = hcp0001("Zr", size=(4, 4, 4), a=A, c=C, vacuum=6.0)
    slab.pbc = (True, True, False)
    slab.info.pop("adsorbate_info", None)
    lj = LennardJones(sigma=2.5, epsilon=0.1, rc=7.0)
    frames = {
        "zr2_100": (read_configs(work / "p100.xyz", assign_ids=False), eam),
        "zr2_300": (read_configs(work / "p300.xyz", assign_ids=False), eam),
        "zr96_3": (_rattled(bulk("Zr", "hcp", a=A, c=C).repeat((4, 4, 3)), 3, 1), eam),
        "slab_3": (_rattled(slab, 3, 2), eam),
        "cuzr16_10": (_cuzr(10, 3), lj),
        "cuzr16_25": (_cuzr(25, 4), lj),
    }
    for name in sorted({r[0] for r in RUNS.values()}):
        base, labels = name.rsplit("_", 1)
        todo, calc = frames[base]
        sets[name] = work / f"{name}.xyz"
        made = label_frames(todo, calc, forces="f" in labels, virial="v" in labels)
        write_labelled(sets[name], made)
    return sets


def counts(labelled: Path, options: FitOptions) -> fit_memory.MemoryEstimate:
    """``fit_memory.estimate`` of a set, as ``fit`` computes it."""
    frames, _ = labelled_set(labelled)
    specs = fit_specs(options, n_atoms=sum(len(a) for a in frames))
    return fit_memory.estimate(specs, frames)


def calibrate(rows: list[dict]) -> dict[str, float]:
    """Non-negative least squares of peak bytes on the columns, each run weighted by 1/peak."""
    from scipy.optimize import nnls

    a = np.array([r["columns"] for r in rows], dtype=float)
    b = np.array([r["peak_mib"] * fit_memory.MIB for r in rows], dtype=float)
    w = 1.0 / b
    sol, _ = nnls(a * w[:, None], b * w)
    return dict(zip(FACTORS, (float(v) for v in sol), strict=True))


def predicted(cols: list[float], cal: dict[str, float]) -> float:
    return sum(cal[k] * c for k, c in zip(FACTORS, cols, strict=True))


def earlier_fits(work: Path) -> list[dict]:
    """Estimates for the larger fits of earlier sessions (rebuilt sets of the same kind and
    size, counts only: no fit), beside the peaks those sessions reported."""
    from ase.build import bulk

    out = []
    generate(work / "p1000.xyz", 1000, PoolSpec(seed=1))
    p1000 = read_configs(work / "p1000.xyz", assign_ids=False)
    zr96 = _rattled(bulk("Zr", "hcp", a=A, c=C).repeat((4, 4, 3)), 30, 5, stdev=0.15)
    b2 = bulk("CuZr", "cesiumchloride", a=3.26)
    cuzr = _rattled(b2.repeat((3, 3, 3)), 15, 6, 0.15) + _rattled(b2.repeat((4, 4, 3)), 15, 7, 0.15)
    cases = [
        ("1000 strained Zr cells, paper model, soap 500 sparse", p1000, DEFAULT_GAP, "3.4-4.3 GB"),
        ("30 Zr MD frames of 96 atoms, paper model", zr96, DEFAULT_GAP, "6.6 GB"),
        ("30 Cu-Zr MD frames of 54-96 atoms, alloy model", cuzr, ALLOY, "20.7 GB"),
    ]
    for what, frames, gap, reported in cases:
        opts = FitOptions(gap=gap)
        specs = fit_specs(opts, n_atoms=sum(len(a) for a in frames))
        est = fit_memory.estimate(specs, frames, True, True)
        out.append(
            {
                "what": what,
                "reported_peak": reported,
                "estimate_gib": round(est.bytes / (1 << 30), 2),
                "counts": est.summary(),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(RUNS)
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fit-memory-") as tmp:
        work = Path(tmp)
        sets = build_sets(work)
        for name in names:
            set_name, gap, n_soap, what = RUNS[name]
            opts = FitOptions(gap=gap, n_sparse={"soap": n_soap} if "soap" in gap else {})
            est = counts(sets[set_name], opts)
            res = fit(sets[set_name], work / f"model-{name}", opts, reuse=False)
            row = {
                "run": name,
                "what": what,
                "peak_mib": round(res.peak_rss_mib, 1),
                "wall_s": round(res.wall_s, 1),
                "counts": est.summary(),
                "n_obs": est.n_obs,
                "columns": est.columns(),
            }
            rows.append(row)
            print(f"{name}: {what}: peak {row['peak_mib']:.0f} MiB in {row['wall_s']:.0f} s")
        earlier = earlier_fits(work)
    fitted = calibrate(rows) if len(rows) >= len(FACTORS) else None
    cal = fit_memory.CALIBRATION
    print(f"\nfitted factors: {fitted}\nmodule factors: {cal}")
    for r in rows:
        r["estimate_mib"] = round(predicted(r["columns"], cal) / fit_memory.MIB, 1)
        r["ratio"] = round(r["estimate_mib"] / r["peak_mib"], 3)
        print(
            f"  {r['run']}: peak {r['peak_mib']:7.0f} MiB, estimate {r['estimate_mib']:7.0f}"
            f" MiB, ratio {r['ratio']:.2f}   ({r['what']})"
        )
    for e in earlier:
        print(
            f"  earlier: {e['what']}: reported {e['reported_peak']}, estimate "
            f"{e['estimate_gib']} GiB"
        )
    doc = {
        "benchmark": "benchmarks/fit_memory.py",
        "what": "gap_fit peak memory (summed VmHWM of its processes) of small real fits vs "
        "mlpdesign.gap.fit_memory.estimate; factors = NNLS fit weighted by 1/peak",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": [round(x, 2) for x in load0],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%d"),
        "calibration": cal,
        "fitted": fitted,
        "ratio_range": [min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)],
        "rows": rows,
        "earlier_fits": earlier,
    }
    write_results(OUT, doc, args.no_write)


if __name__ == "__main__":
    main()
