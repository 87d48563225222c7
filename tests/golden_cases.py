"""Select and report runs whose picks, Psi and metrics were captured before the "one engine"
restructure (commit 296a177), so every engine path is pinned: in memory, streamed, MPI,
stratified, plain, balance, given, continue, random, float32.

``python tests/golden_cases.py OUT.json`` runs them all and writes what they give; the test
(test_golden.py) runs them again and compares with tests/data/golden.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
GAP = (
    "distance_2b cutoff=5.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=5.0 l_max=4 n_max=4 normalize=T atom_sigma=0.5 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)
SELECT = {
    "default": ["-n", "25"],
    "plain": ["-n", "25", "--no-stratify"],
    "balance": ["-n", "25", "--balance"],
    "float32": ["-n", "25", "--dtype", "float32", "--no-stratify"],
    "random": ["-n", "25", "--random", "--seed", "3"],
    "first-random": ["-n", "20", "--first", "random", "--seed", "5", "--no-stratify"],
    "given": ["-n", "20", "--given", "{given}"],
    "streamed": ["-n", "25", "--memory-limit", "3M", "--block-rows", "64"],
    "streamed-plain": ["-n", "25", "--no-stratify", "--memory-limit", "3M", "--block-rows", "50"],
    "streamed-given": [
        "-n",
        "20",
        "--given",
        "{given}",
        "--memory-limit",
        "3M",
        "--block-rows",
        "64",
    ],
}
MPI = {"mpi3": ["-n", "25"], "mpi3-plain": ["-n", "25", "--no-stratify", "--block-rows", "40"]}


def sh(*args, mpi: int = 0) -> None:
    cmd = [str(BIN / "mlpdesign"), *map(str, args)]
    if mpi:
        cmd = [str(BIN / "mpiexec"), "-n", str(mpi), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}\n{res.stderr[-2000:]}")


def picks(path: Path) -> dict:
    try:
        from mlpdesign.io.selection import load_selection
    except ImportError:  # the layout before the restructure, where the golden file came from
        from mlpdesign.selection import load_selection

    s = load_selection(path)
    attrs = {
        k: v
        for k, v in s.attrs.items()
        if k not in ("command", "store_path", "versions", "pool_path", "given")
    }
    return {
        "index": [int(i) for i in s.index],
        "psi": [float(x).hex() for x in s.psi],
        "attrs": {k: str(v) for k, v in sorted(attrs.items())},
    }


def run_all(work: Path) -> dict:
    """Every case on a fresh 80-candidate pool (seed 11) in ``work``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pool, store = work / "pool.xyz", work / "pool.h5"
    sh("generate", "-n", "80", "--seed", "11", "-o", pool)
    sh("describe", pool, "-o", store, "--gap", GAP, "-q")
    given = work / "given.xyz"
    sh("generate", "-n", "6", "--seed", "99", "-o", given)
    out: dict = {}
    for name, args in {**SELECT, **MPI}.items():
        sel = work / f"{name}.h5"
        args = [a.format(given=given) for a in args]
        sh("select", store, *args, "-o", sel, "-q", mpi=3 if name in MPI else 0)
        out[name] = picks(sel)
    sh("select", store, "-n", "10", "-o", work / "ten.h5", "-q")
    sh("select", store, "-n", "25", "--continue", work / "ten.h5", "-o", work / "cont.h5", "-q")
    out["continue"] = picks(work / "cont.h5")
    for name, extra, mpi in (
        ("report", [], 0),
        ("report-streamed", ["--memory-limit", "6M", "--block-rows", "64"], 0),
        ("report-mpi", [], 3),
    ):
        rep = work / name
        sh(
            "report",
            store,
            work / "default.h5",
            work / "random.h5",
            "--random",
            "4",
            "-o",
            rep,
            "-q",
            "--format",
            "none",
            *extra,
            mpi=mpi,
        )
        metrics = json.loads((rep / "metrics.json").read_text())
        metrics.pop("pool", None)
        for d in metrics["designs"]:
            d.pop("path", None)
        out[name] = metrics
        out[name + "-figures"] = sorted(p.name for p in rep.iterdir())
    shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    check = sys.argv[1] == "--check"
    target = Path(sys.argv[-1])
    res = run_all(target.with_suffix(".work"))
    if not check:
        target.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    else:  # to the bit, against a capture made on this machine
        old = json.loads(target.read_text())
        bad = [c for c in old if res.get(c) != old[c]]
        print("identical to the bit" if not bad else f"differ: {bad}")
        sys.exit(1 if bad else 0)
