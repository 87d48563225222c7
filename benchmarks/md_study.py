"""Designs that see dilute defects (issue 17, item 7): cross-validation on an EAM MD pool of Zr.

Per seed: the MD pool of ``examples/md_pool/md_pool.py`` (hcp bulk at 300 K and 1500 K, the
same cell with a vacancy at both, a (0001) slab; one ``.traj`` per origin, the MD seed varied
by seed), described once with a cheap GAP string (the same string the models are fitted with,
so each design uses the model's own kernel); then, for each design of ``DESIGNS``, the same
number of picks, ``write`` -> ``label --eam`` -> ``fit`` (gap_fit) -> energies of the whole
pool predicted by the model and compared with the MD's own EAM energies: energy RMSE per
origin (meV/atom), the worst frame, the picks per origin, and ``score`` of the pool against
the picks (does the kernel flag the frames the model gets wrong?). Everything but the
prediction runs through the ``mlpdesign`` CLI (in-process), as a user would run it.

    nice python benchmarks/md_study.py                 # 3 seeds, 5 x 60 frames, 30 picks
    python benchmarks/md_study.py --from-json          # tables and figure again from the JSON

The work folder keeps every intermediate (pools, stores, selections, labelled sets, models);
a rerun reuses what its inputs have not changed. Results: benchmarks/results/md_study.json,
figure docs/md_study.png, the table in docs/md-pools.md (``make docs``).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "md_study.json"
FIGURE = ROOT / "docs" / "md_study.png"

#: The study's model: the paper's cut-offs and kernels with a cheap SOAP (l_max = n_max = 4,
#: atom_sigma 0.5); describe, select and fit all use it.
GAP = (
    "distance_2b cutoff=7.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=6.8 l_max=4 n_max=4 normalize=T atom_sigma=0.5 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)
#: design name -> select options ({seed} is the pool's seed)
DESIGNS = {
    "OPT": ["--no-stratify"],
    "STR": ["--stratify-by", "origin"],
    "BAL": ["--balance", "--no-stratify"],
    "MAXENT": ["--criterion", "maxent", "--no-stratify"],
    "PERATOM": ["--no-normalize", "--per-atom", "--no-stratify"],
    "STR-MAXENT": ["--stratify-by", "origin", "--criterion", "maxent"],
    "RND": ["--criterion", "random", "--seed", "{seed}"],
}
#: what each design is, for the table
ABOUT = {
    "OPT": "plain max-min (--no-stratify)",
    "STR": "max-min stratified by origin (--stratify-by origin)",
    "BAL": "max-min, each kernel term normalised on its own (--balance)",
    "MAXENT": "MaxEnt, greedy max log det (--criterion maxent)",
    "PERATOM": "max-min on the per-atom mean kernel (--no-normalize --per-atom)",
    "STR-MAXENT": "MaxEnt stratified by origin",
    "RND": "random (--criterion random --seed SEED)",
}
#: the cells of the study: 96-atom bulk (95 with the vacancy), 80-atom slab
CELLS = {"repeat": (4, 2, 3), "layers": 5, "slab_size": (4, 4)}


def md_pool_module():
    """examples/md_pool/md_pool.py as a module."""
    path = ROOT / "examples" / "md_pool" / "md_pool.py"
    spec = importlib.util.spec_from_file_location("md_pool", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mlpdesign(*args, log: Path) -> None:
    """Run ``mlpdesign ARGS`` in this process; stop the study with its message if it fails."""
    import click

    from mlpdesign.cli import cli

    argv = [str(a) for a in args]
    with open(log, "a") as fh:
        fh.write("$ mlpdesign " + shlex.join(argv) + "\n")
    try:
        cli.main(args=argv, prog_name="mlpdesign", standalone_mode=False)
    except click.ClickException as e:
        sys.exit(f"md_study: mlpdesign {argv[0]} failed: {e.format_message()}")


def _key(args) -> str:
    """A step's cache key: its arguments, each input file with its size and mtime."""
    lines = []
    for a in map(str, args):
        lines.append(a)
        p = Path(a)
        if p.is_file():
            st = p.stat()
            lines.append(f"  {st.st_size} {st.st_mtime_ns}")
    return "\n".join(lines) + "\n"


def step(out: Path, *args, log: Path) -> float:
    """``mlpdesign ARGS`` writing ``out`` (``-o out --force`` added), unless ``out`` exists
    from the same arguments and inputs; seconds taken (0 when reused)."""
    stamp = out.with_name(out.name + ".key")
    key = _key(args)
    if out.exists() and stamp.is_file() and stamp.read_text() == key:
        return 0.0
    t0 = time.perf_counter()
    mlpdesign(*args, "-o", out, "--force", "-q", log=log)
    stamp.write_text(key)
    return time.perf_counter() - t0


def make_pool(d: Path, eam: Path, seed: int, snapshots: int, every: int, cells: dict) -> list:
    """The MD pool of one seed under ``d/md`` (reused when made with the same settings)."""
    md = d / "md"
    stamp = md / "settings.json"
    want = json.dumps({"seed": seed, "snapshots": snapshots, "every": every, **cells})
    paths = sorted(md.glob("*.traj"))
    if paths and stamp.is_file() and stamp.read_text() == want:
        return paths
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in cells.items()}
    paths = md_pool_module().make_pool(md, eam, snapshots, every, seed, **kw)
    stamp.write_text(want)
    return paths


def design_args(name: str, seed: int) -> list[str]:
    return [a.replace("{seed}", str(seed)) for a in DESIGNS[name]]


def run_design(name: str, d: Path, paths: list, cfg: dict, log: Path) -> dict:
    """select -> write -> label -> fit -> score of one design; its files and stage times."""
    store, t = d / "pool.h5", {}
    sel, xyz, lab = d / f"{name}.json", d / f"{name}.xyz", d / f"{name}-labelled.xyz"
    t["select"] = step(
        sel, "select", store, "-n", cfg["picks"], *design_args(name, cfg["seed"]), log=log
    )
    t["write"] = step(xyz, "write", *paths, sel, log=log)
    t["label"] = step(lab, "label", xyz, "--eam", cfg["eam"], log=log)
    model = d / "models" / name
    model.parent.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    mlpdesign("fit", lab, "--store", store, "--n-sparse", f"soap={cfg['n_sparse']}",
              "-o", model, "--reuse", "-q", log=log)  # fmt: skip
    t["fit_call"] = time.perf_counter() - t0
    t["fit_gap_fit"] = json.loads((model / "fit.json").read_text())["wall_s"]
    score = d / f"{name}-score.json"
    t["score"] = step(score, "score", store, "--train", sel, "--top", 0, log=log)
    return {"selection": sel, "labelled": lab, "model": model / "gap.xml", "score": score, "t": t}


def rms(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.sqrt(np.mean(x * x))) if x.size else float("nan")


def pool_frames(paths: list) -> tuple[list, np.ndarray, np.ndarray]:
    """Every frame of the pool (in store order), its origin and its MD (EAM) energy per atom."""
    import ase.io

    frames = [a for p in paths for a in ase.io.read(p, ":")]
    origin = np.array([a.info["origin"] for a in frames])
    ref = np.array([a.get_potential_energy() / len(a) for a in frames])
    return frames, origin, ref


def evaluate(name: str, run: dict, e_pred: np.ndarray, frames, origin, ref) -> dict:
    """One design's numbers on the whole pool: RMSE per origin, the worst frame, picks per
    origin, the labels against the MD's energies, and the score of the pool."""
    import ase.io

    sel = json.loads(run["selection"].read_text())
    ids = [int(i) for i in sel["index"]]  # positions in the pool, in store (file) order
    picked = np.zeros(len(frames), bool)
    picked[ids] = True
    err = (e_pred / np.array([len(a) for a in frames]) - ref) * 1e3  # meV/atom
    origins = sorted(set(origin))
    worst = int(np.argmax(np.abs(err)))
    lab = ase.io.read(run["labelled"], ":")
    label_diff = max(
        abs(a.info["dft_energy"] / len(a) - ref[i]) for a, i in zip(lab, ids, strict=True)
    )
    sc = json.loads(run["score"].read_text())["pool"]
    var, psi = np.array(sc["var"], float), np.array(sc["psi"], float)
    top = np.argsort(-var, kind="stable")[: len(ids)]
    return {
        "picks_per_origin": {o: int(picked[origin == o].sum()) for o in origins},
        "rmse_mev_per_atom": {o: rms(err[origin == o]) for o in origins},
        "rmse_all": rms(err),
        "rmse_not_picked": rms(err[~picked]),
        "worst_frame": {
            "abs_err_mev_per_atom": float(abs(err[worst])),
            "origin": str(origin[worst]),
            "pool_index": worst,
            "picked": bool(picked[worst]),
        },
        "total_atoms": int(sel["total_atoms"]),
        "label_vs_md_max_abs_mev_per_atom": float(label_diff * 1e3),
        "score": {
            "median_var_per_origin": {o: float(np.median(var[origin == o])) for o in origins},
            "median_psi_per_origin": {o: float(np.median(psi[origin == o])) for o in origins},
            "top_var_per_origin": dict(collections.Counter(str(origin[i]) for i in top)),
            "spearman_var_abs_err": spearman(var[~picked], np.abs(err[~picked])),
        },
    }


def spearman(a, b) -> float:
    """Rank correlation (ties broken by order; enough for a diagnostic)."""
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable")
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable")
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else float("nan")


def run_seed(seed: int, cfg: dict, work: Path) -> dict:
    """The pool of one seed, every design on it, and the whole pool predicted by each model."""
    from mlpdesign.gap.model import load_gap, predict_energies

    d = work / f"seed-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    log, t = d / "commands.log", {}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    paths = make_pool(d, cfg["eam"], 100 * seed, cfg["snapshots"], cfg["every"], cfg["cells"])
    t["md"] = time.perf_counter() - t0
    t["describe"] = step(
        d / "pool.h5", "describe", *paths, "--gap", cfg["gap"], "-j", cfg["jobs"], log=log
    )
    runs = {n: run_design(n, d, paths, {**cfg, "seed": seed}, log) for n in cfg["designs"]}
    t0 = time.perf_counter()
    frames, origin, ref = pool_frames(paths)
    e = predict_energies([load_gap(runs[n]["model"]) for n in runs], frames)
    t["predict"] = time.perf_counter() - t0
    designs = {n: evaluate(n, runs[n], e[i], frames, origin, ref) for i, n in enumerate(runs)}
    src = d / "STR-source.json"  # --stratify-by source: one stratum per file = per origin here
    step(src, "select", d / "pool.h5", "-n", cfg["picks"], "--stratify-by", "source", log=log)
    same = None
    if "STR" in runs:
        same = (
            json.loads(src.read_text())["candidate_id"]
            == json.loads(runs["STR"]["selection"].read_text())["candidate_id"]
        )
    for n in runs:
        t[n] = {k: round(v, 2) for k, v in runs[n]["t"].items()}
    t = {k: round(v, 2) if isinstance(v, float) else v for k, v in t.items()}
    return {
        "seed": seed,
        "md_seed": 100 * seed,
        "random_seed": seed,
        "n_frames": len(frames),
        "atoms_per_frame": {
            o: int(len(frames[int(np.argmax(origin == o))])) for o in sorted(set(origin))
        },
        "frames_per_origin": dict(collections.Counter(map(str, origin))),
        "designs": designs,
        "stratify_by_source_same_picks_as_STR": same,
        "times_s": t,
        "load_start": round(load0, 2),
        "load_end": round(os.getloadavg()[0], 2),
    }


ORDER = ["bulk_300K", "bulk_1500K", "vacancy_300K", "vacancy_1500K", "slab_300K"]


def origins_of(per_seed: list[dict]) -> list[str]:
    """The origins in display order (the study's five first, any other after)."""
    found = sorted({o for r in per_seed for o in r["frames_per_origin"]})
    return [o for o in ORDER if o in found] + [o for o in found if o not in ORDER]


def mean_sd(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise(per_seed: list[dict]) -> dict:
    """Per design, over the seeds: RMSE per origin and of the pool, the worst frame, the
    picks per origin, and its all-pool RMSE over random's (seed by seed)."""
    origins = origins_of(per_seed)
    names = list(per_seed[0]["designs"])
    out = {}
    for n in names:
        ds = [r["designs"][n] for r in per_seed]
        s = {
            "rmse_mev_per_atom": {
                o: mean_sd([x["rmse_mev_per_atom"][o] for x in ds]) for o in origins
            },
            "rmse_all": mean_sd([x["rmse_all"] for x in ds]),
            "rmse_not_picked": mean_sd([x["rmse_not_picked"] for x in ds]),
            "worst_frame": mean_sd([x["worst_frame"]["abs_err_mev_per_atom"] for x in ds]),
            "worst_frame_origins": [x["worst_frame"]["origin"] for x in ds],
            "picks_per_origin": {o: [x["picks_per_origin"][o] for x in ds] for o in origins},
        }
        if "RND" in names:
            s["rmse_all_over_rnd"] = mean_sd(
                [
                    x["rmse_all"] / r["designs"]["RND"]["rmse_all"]
                    for x, r in zip(ds, per_seed, strict=True)
                ]
            )
        out[n] = s
    return out


def table_rows(summary: dict, origins: list[str]) -> list[dict]:
    """One flat row per design (means over the seeds; meV/atom) for the docs' table."""
    rows = []
    for n, s in summary.items():
        row = {"design": n}
        row["picks " + "/".join(short(o) for o in origins)] = "/".join(
            f"{statistics.mean(s['picks_per_origin'][o]):.3g}" for o in origins
        )
        for o in origins:
            row[f"RMSE {short(o)}"] = fmt(s["rmse_mev_per_atom"][o])
        row["RMSE pool"] = fmt(s["rmse_all"])
        if "rmse_all_over_rnd" in s:
            row["pool RMSE / RND"] = fmt(s["rmse_all_over_rnd"])
        row["worst frame"] = fmt(s["worst_frame"])
        where = collections.Counter(s["worst_frame_origins"]).most_common()
        row["worst frame in"] = ", ".join(f"{short(o)} {k}x" for o, k in where)
        rows.append(row)
    return rows


def score_rows(per_seed: list[dict], defect: str = "vacancy_300K") -> list[dict]:
    """Per design, seed by seed: its picks of ``defect``, how many ``defect`` frames
    ``score`` puts among the N largest sigma^2 (N = picks), and the rank correlation of
    sigma^2 with the model's |dE| over the frames not picked."""
    rows = []
    for n in per_seed[0]["designs"]:
        ds = [r["designs"][n] for r in per_seed]
        rows.append(
            {
                "design": n,
                f"{short(defect)} picks": "/".join(
                    str(d["picks_per_origin"].get(defect, 0)) for d in ds
                ),
                f"{short(defect)} in top σ²": "/".join(
                    str(d["score"]["top_var_per_origin"].get(defect, 0)) for d in ds
                ),
                "median σ² (×1e-6)": "/".join(
                    f"{statistics.median(d['score']['median_var_per_origin'].values()) * 1e6:.2f}"
                    for d in ds
                ),
                "Spearman(σ², abs ΔE)": "/".join(
                    f"{d['score']['spearman_var_abs_err']:.2f}" for d in ds
                ),
            }
        )
    return rows


def tables(result: dict) -> dict:
    """The result with its summary and tables (re)derived from its per-seed numbers."""
    per_seed = result["per_seed"]
    origins = origins_of(per_seed)
    summary = summarise(per_seed)
    derived = ("origins", "rows", "score_rows", "summary", "per_seed")
    out = {k: v for k, v in result.items() if k not in derived}
    out.update(origins=origins, rows=table_rows(summary, origins))
    out.update(score_rows=score_rows(per_seed), summary=summary, per_seed=per_seed)
    return out


def short(origin: str) -> str:
    """bulk_300K -> b300, vacancy_1500K -> v1500, slab_300K -> s300."""
    head, _, temp = origin.partition("_")
    return head[:1] + temp.removesuffix("K")


def fmt(ms: dict) -> str:
    return f"{ms['mean']:.2f} ± {ms['sd']:.2f}"


def figure(result: dict, path: Path) -> None:
    """RMSE per origin per design (mean over the seeds, each seed a dot) and the picks per
    origin per design (mean over the seeds), from the result JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_seed, origins = result["per_seed"], result["origins"]
    names = list(per_seed[0]["designs"])
    groups = origins + ["whole pool"]
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [2.3, 1]}, constrained_layout=True
    )
    w = 0.8 / len(names)
    for j, n in enumerate(names):
        vals = [[r["designs"][n]["rmse_mev_per_atom"][o] for r in per_seed] for o in origins]
        vals.append([r["designs"][n]["rmse_all"] for r in per_seed])
        x = np.arange(len(groups)) + (j - (len(names) - 1) / 2) * w
        ax.bar(x, [np.mean(v) for v in vals], w, color=f"C{j}", label=n)
        for xi, v in zip(x, vals, strict=True):
            ax.plot([xi] * len(v), v, "k.", ms=3)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("energy RMSE (meV/atom), whole pool")
    ax.set_title(f"GAP error per origin ({len(per_seed)} seeds: bar mean, dots each seed)")
    ax.legend(fontsize=8, ncol=2)
    bottom = np.zeros(len(names))
    for k, o in enumerate(origins):
        v = np.array(
            [np.mean([r["designs"][n]["picks_per_origin"][o] for r in per_seed]) for n in names]
        )
        bx.barh(np.arange(len(names)), v, left=bottom, color=plt.cm.Set2(k), label=o)
        bottom += v
    bx.set_yticks(np.arange(len(names)), names)
    bx.invert_yaxis()
    bx.set_xlabel(f"picks per origin (mean over seeds; {result['settings']['picks']} in all)")
    bx.set_title("where the picks went")
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (gap_fit, describe workers)."""
    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def study(work: Path, seeds: list[int], **settings) -> dict:
    """The whole study: every seed, then the summary; the result JSON's content."""
    cfg = {
        "gap": GAP,
        "picks": 30,
        "snapshots": 60,
        "every": 5,
        "n_sparse": 100,
        "designs": list(DESIGNS),
        "cells": CELLS,
        "jobs": 1,
        "eam": ROOT / "third_party" / "Zr_mm.eam.fs",
    }
    cfg.update(settings)
    cfg["cells"] = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg["cells"].items()}
    work.mkdir(parents=True, exist_ok=True)
    t0, c0, load0 = time.perf_counter(), cpu_s(), os.getloadavg()
    per_seed = []
    for seed in seeds:
        per_seed.append(run_seed(seed, cfg, work))
        print(f"seed {seed}: {brief(per_seed[-1])}", flush=True)
    shown = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()}
    shown["eam"] = Path(cfg["eam"]).name
    return tables(
        {
            "title": "Designs on an EAM MD pool of Zr: energy RMSE per origin (meV/atom)",
            "benchmark": "benchmarks/md_study.py",
            "settings": {
                **shown,
                "seeds": seeds,
                "design_options": {n: DESIGNS[n] for n in cfg["designs"]},
            },
            "designs_about": {n: ABOUT[n] for n in cfg["designs"]},
            "per_seed": per_seed,
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(cpu_s() - c0, 1),
            "load_start": [round(x, 2) for x in load0],
            "load_end": [round(x, 2) for x in os.getloadavg()],
            "nproc": os.cpu_count(),
        }
    )


def brief(r: dict) -> str:
    """One line per seed: each design's pool RMSE and its 300 K vacancy picks."""
    parts = []
    for n, d in r["designs"].items():
        v = d["picks_per_origin"].get("vacancy_300K", 0)
        parts.append(f"{n} {d['rmse_all']:.2f} (v300 picks {v})")
    return "pool RMSE meV/atom: " + ", ".join(parts)


def write_json(result: dict, path: Path) -> None:
    """The result file, atomically (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3", help="pool seeds (MD seed 100*s, random seed s)")
    p.add_argument("--snapshots", type=int, default=60, help="frames per MD run (60)")
    p.add_argument("--every", type=int, default=5, help="MD steps (2 fs) between frames (5)")
    p.add_argument("--picks", type=int, default=30, help="picks per design (30)")
    p.add_argument("--n-sparse", type=int, default=100, help="SOAP sparse points of the fits")
    p.add_argument("--designs", default=",".join(DESIGNS), help="designs, comma-separated")
    p.add_argument("--jobs", type=int, default=1, help="describe workers (1)")
    p.add_argument("--eam", type=Path, default=ROOT / "third_party" / "Zr_mm.eam.fs")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mlpdesign-md-study")
    p.add_argument("-o", "--output", type=Path, default=RESULT)
    p.add_argument("--figure", type=Path, default=FIGURE)
    p.add_argument(
        "--from-json", action="store_true", help="redo the tables and figure from -o (no runs)"
    )
    a = p.parse_args(argv)
    if a.from_json:
        result = tables(json.loads(a.output.read_text()))
        write_json(result, a.output)
        figure(result, a.figure)
        return
    designs = [n.strip() for n in a.designs.split(",") if n.strip()]
    if not designs or set(designs) - set(DESIGNS):
        sys.exit(f"--designs: choose from {', '.join(DESIGNS)}")
    if not a.eam.is_file():
        sys.exit(f"{a.eam}: no such file; run 'make eam' first")
    seeds = [int(s) for s in a.seeds.split(",")]
    result = study(
        a.work, seeds, picks=a.picks, snapshots=a.snapshots, every=a.every,
        n_sparse=a.n_sparse, designs=designs, jobs=a.jobs, eam=a.eam,
    )  # fmt: skip
    write_json(result, a.output)
    figure(result, a.figure)
    for row in result["rows"]:
        print(row)
    print(f"{result['wall_s']} s wall, {result['cpu_s']} s CPU; {a.output}, {a.figure}")


if __name__ == "__main__":
    main()
