"""`mlpdesign tune` on the paper's Zr pool around its published descriptor (paper, section 3).

Generates the default pool (10^5 candidates, seed 1, hcp/fcc/bcc, eps 0.05), tunes on a
500-candidate sample over atom_sigma, SOAP cutoff, l_max = n_max and theta_uniform, with the
plain (normalised) kernel and with --balance, and records per setting the fractions, the
median D² and the pair term's share of D² in benchmarks/results/tune_paper_zr.json (plus
the recommended setting of each kernel and the paper's). A second, kernel-only scan of
theta_uniform from 0.1 to 0.5 at the paper's SOAP (one describe) goes to
benchmarks/results/tune_paper_zr_theta.json. Figures: docs/tune_fractions.png (the grid, plain
kernel) and docs/tune_theta_histograms.png (the theta scan).

    python benchmarks/tune_paper.py [--jobs 2] [--pool 100000] [--sample 500]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARY = [
    "soap:atom_sigma=0.1,0.15,0.3,0.5",
    "soap:cutoff=5.0,6.8",
    "soap:l_max,n_max=6,10",
    "distance_2b:theta_uniform=0.2,0.3,0.5",
]
PAPER = {"soap:atom_sigma": "0.15", "soap:cutoff": "6.8", "soap:l_max,n_max": "10"}
PAPER["distance_2b:theta_uniform"] = "0.3"
THETAS = "0.1,0.15,0.2,0.25,0.3,0.4,0.5"


def mlpdesign(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mlpdesign", *args], check=True, cwd=ROOT)


def rows(summary: dict, kernel: str) -> list[dict]:
    out = []
    for r in summary["settings"]:
        v = {**PAPER, **r["values"]}
        out.append(
            {
                "kernel": kernel,
                "atom_sigma": v["soap:atom_sigma"],
                "soap_cutoff": v["soap:cutoff"],
                "l_max=n_max": v["soap:l_max,n_max"],
                "theta": v["distance_2b:theta_uniform"],
                "overlap_%": round(100 * r["overlap_fraction"], 4),
                "orthogonal_%": round(100 * r["orthogonal_fraction"], 4),
                "median_D2": round(r["quantiles"]["50%"], 4),
                "pair_share_of_D2_%": round(100 * r["terms"][0]["d2_share"], 3),
                "pick": "rule"
                if r["index"] == summary["recommended"]["index"]
                else ("paper" if v == PAPER else ""),
                "tied": r["index"] in summary["tied"],
            }
        )
    return out


def tune(pool: Path, tmp: str, name: str, vary: list[str], extra: list[str], a) -> tuple:
    """One `mlpdesign tune` run: (summary, output folder, command as recorded, seconds)."""
    out = Path(tmp) / f"tune-{name}"
    args = ["tune", str(pool), "--sample", str(a.sample), "--seed", "1"]
    args += [x for v in vary for x in ("--vary", v)] + extra
    args += ["-j", str(a.jobs), "-o", str(out), "--format", "none", "-q"]
    t0 = time.perf_counter()
    mlpdesign(*args)
    secs = round(time.perf_counter() - t0, 1)
    cmd = "mlpdesign " + shlex.join(args).replace(tmp + "/", "")
    return json.loads((out / "summary.json").read_text()), out, cmd, secs


def record(name: str, title: str, runs: list, a) -> None:
    """benchmarks/results/NAME.json from the runs [(kernel, summary, cmd, secs)]."""
    result = {"title": title, "benchmark": "benchmarks/tune_paper.py"}
    result["source"] = f"mlpdesign generate -n {a.pool} --seed 1 -o pool.xyz; then " + "; ".join(
        f"`{cmd}`" for _, _, cmd, _ in runs
    )
    result["rows"] = [row for kernel, s, _, _ in runs for row in rows(s, kernel)]
    for kernel, s, _, secs in runs:
        result[f"recommended_{kernel}"] = s["recommended"]["values"]
        result[f"wall_s_{kernel}"] = secs
    result["paper"] = PAPER
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory(prefix="tune-paper-") as tmp:
        pool = Path(tmp) / "pool.xyz"
        mlpdesign("generate", "-n", str(a.pool), "--seed", "1", "-o", str(pool), "-q")
        grid = []
        for kernel, extra in (("plain", []), ("balance", ["--balance"])):
            s, out, cmd, secs = tune(pool, tmp, kernel, VARY, extra, a)
            grid.append((kernel, s, cmd, secs))
            if kernel == "plain":
                shutil.copy(out / "fractions.png", docs / "tune_fractions.png")
        s, out, cmd, secs = tune(pool, tmp, "theta", [f"distance_2b:theta_uniform={THETAS}"], [], a)
        shutil.copy(out / "histograms.png", docs / "tune_theta_histograms.png")
    record("tune_paper_zr", "tune on the paper's Zr pool around its published descriptor", grid, a)
    title = "tune on the paper's Zr pool: theta_uniform scan at the paper's SOAP"
    record("tune_paper_zr_theta", title, [("plain", s, cmd, secs)], a)


if __name__ == "__main__":
    main()
