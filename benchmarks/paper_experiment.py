"""The paper's cross-validation (section 4, figs. 5-6) with EAM labels standing in for DFT.

For each seed pair (s1, s2): two independent pools of --pool candidates; from each, --pick
configurations by each design of ``--variants``: STR = ``select --stratify`` (max-min within
each structure's share of the pool; select's default), OPT = ``select --no-stratify`` (the
paper's plain max-min on the default kernel), BAL = ``select --balance --no-stratify`` (each
descriptor's kernel normalised on its own), ENT / ENS = ``select --criterion maxent`` plain /
stratified, EXC = ENS refined by ``--refine exchange``, and RND = ``select --random``; EAM
labels (Mendelev-Ackland Zr); one GAP per set; every model tested on every set (``crossval``).
Printed per pair and design: each model's worst off-sample 0.99 quantile of |dE|/atom and
the ratio worst(design)/worst(RND) (the paper: optimised sets have the lower worst case,
target < 0.7), then the spread over the pairs and which design won. Everything runs through
the ``mlpdesign`` CLI, as a user would run it.

    python benchmarks/paper_experiment.py --jobs 2          # paper settings, 3 seed pairs
    python benchmarks/paper_experiment.py --quick --jobs 2  # l_max=n_max=6, atom_sigma 0.3,
                                                            # 200 sparse points, one seed pair
    python benchmarks/paper_experiment.py --pool 100000 --jobs 2   # the paper's pool size
    python benchmarks/paper_experiment.py --quick --pairs 1:2,3:4,5:6 --variants stratify
    python benchmarks/paper_experiment.py --quick --variants maxent,maxent-stratified,exchange

The work folder keeps every intermediate (pools, stores, selections, labelled sets, models);
a second run reuses them (files by their command and inputs, fits by their input hash,
cross-validations by their models' hashes), so an interrupted run continues where it
stopped and a finished one reprints in seconds; a changed option reruns what it touches.
The RND fits are shared by all designs. Per pair, ``result.json`` (and ``summary.json`` for
the run) hold the matrices, the ratios, each model's off-sample 0.99 quantile by structure
with its training-set composition, and the stage times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The paper's model (l_max = n_max = 10, atom_sigma 0.15; 500 SOAP sparse points).
PAPER_GAP = (
    "distance_2b cutoff=7.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=6.8 l_max=10 n_max=10 normalize=T atom_sigma=0.15 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)
QUICK_GAP = (
    "distance_2b cutoff=7.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=6.8 l_max=6 n_max=6 normalize=T atom_sigma=0.3 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)


DEFAULT_SIGMA = "0.002,0.05,0.05"
#: kernel variant -> name of its optimised sets
VARIANTS = {"stratify": "STR", "maxmin": "OPT", "balance": "BAL", "stratify-balance": "SBL"}
VARIANTS.update({"maxent": "ENT", "maxent-stratified": "ENS", "exchange": "EXC"})
#: their select options (STR is select's default on pools with structure labels)
FLAGS = {
    "STR": ["--stratify"],
    "OPT": ["--no-stratify"],
    "BAL": ["--balance", "--no-stratify"],
    "SBL": ["--balance", "--stratify"],
    "ENT": ["--criterion", "maxent", "--no-stratify"],  # greedy MaxEnt (D-optimal)
    "ENS": ["--criterion", "maxent", "--stratify"],
    # ENS, exchanged (at most 200 swaps: with 1000 points a maxent step is ~1 s)
    "EXC": ["--criterion", "maxent", "--stratify", "--refine", "exchange", "--max-swaps", "200"],
}


def mlpdesign(*args: str, log: Path | None = None) -> None:
    """Run one ``mlpdesign`` command; stop the experiment with its message if it fails."""
    cmd = [sys.executable, "-c", "from mlpdesign.cli import main; main()", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if log is not None:
        with _LOG_LOCK, open(log, "a") as fh:
            fh.write("$ mlpdesign " + " ".join(map(str, args)) + "\n" + res.stdout + res.stderr)
    if res.returncode != 0:
        sys.exit(f"mlpdesign {args[0]} failed: {res.stderr.strip().splitlines()[-1:]}")


_LOG_LOCK = threading.Lock()


def _key(out: Path, args) -> str:
    """A step's cache key: its arguments, each input file with its size and mtime."""
    lines = []
    for a in map(str, args):
        lines.append(a)
        p = Path(a)
        if p != out and p.is_file():
            st = p.stat()
            lines.append(f"  {st.st_size} {st.st_mtime_ns}")
    return "\n".join(lines) + "\n"


def step(out: Path, *args: str, log: Path) -> float:
    """Run a command that writes ``out`` unless ``out`` exists from the same arguments and
    inputs (``<out>.key``); return seconds. A step rerun upstream gives its output a new
    mtime, so what depends on it reruns too. An output from before keys is kept (and keyed)."""
    stamp = out.with_name(out.name + ".key")
    key = _key(out, args)
    if out.exists() and (not stamp.is_file() or stamp.read_text() == key):
        if not stamp.is_file():
            stamp.write_text(key)
        return 0.0
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    mlpdesign(*args, log=log)
    stamp.write_text(_key(out, args))
    return time.perf_counter() - t0


def parallel(jobs: int, fn, items) -> list:
    """``fn`` over ``items``, ``jobs`` at a time (each call runs CLI subprocesses)."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        return list(ex.map(fn, items))


def run_pair(s1: int, s2: int, a: argparse.Namespace, gap: str, n_sparse: int, work: Path) -> dict:
    """One seed pair: pools, designs, labels, fits and the two cross-validations.

    Independent commands run ``--jobs`` at a time: the six selections, the six
    write + label chains, the six fits (``fit -f``: kept when their inputs are unchanged;
    crossval then reuses them) and the two cross-validations. ``describe`` uses ``-j`` itself.
    """
    d = work / f"pair-{s1}-{s2}"
    d.mkdir(parents=True, exist_ok=True)
    log = d / "commands.log"
    t: dict = {}
    t_pair = time.perf_counter()

    def timed(key: str, fn, items) -> list:
        t0 = time.perf_counter()
        out = parallel(a.jobs, fn, items)
        t[key] = round(time.perf_counter() - t0, 1)
        return out

    pools = ((1, s1), (2, s2))
    timed(
        "generate",
        lambda p: step(
            d / f"pool{p[0]}.xyz",
            "generate",
            "-n",
            a.pool,
            "--seed",
            p[1],
            "-o",
            d / f"pool{p[0]}.xyz",
            "-q",
            log=log,
        ),
        pools,
    )
    t0 = time.perf_counter()
    for i, _ in pools:  # each describe already uses --jobs workers
        pool, store = d / f"pool{i}.xyz", d / f"pool{i}.h5"
        step(store, "describe", pool, "--gap", gap, "-j", a.jobs, "-o", store, "-q", log=log)
    t["describe"] = round(time.perf_counter() - t0, 1)
    kinds = {**FLAGS, "RND": ["--random", "--seed"]}
    variants = tuple((v, VARIANTS[v]) for v in a.variants)
    kinds = {k: x for k, x in kinds.items() if k == "RND" or k in dict(variants).values()}
    designs = [(k, i, seed) for i, seed in pools for k in kinds]

    def select(job) -> None:
        kind, i, seed = job
        extra = [*kinds[kind], seed] if kind == "RND" else kinds[kind]
        sel = d / f"{kind.lower()}{i}.h5"
        step(sel, "select", d / f"pool{i}.h5", "-n", a.pick, *extra, "-o", sel, "-q", log=log)

    def label(job) -> None:
        kind, i, _ = job
        sel, xyz = d / f"{kind.lower()}{i}.h5", d / f"{kind.lower()}{i}.xyz"
        step(xyz, "write", d / f"pool{i}.xyz", sel, "-o", xyz, "-q", log=log)
        lab = d / f"{kind.lower()}{i}-labelled.xyz"
        step(lab, "label", xyz, "--eam", a.eam, "-o", lab, "-q", log=log)

    sets = {f"{k}{i}": d / f"{k.lower()}{i}-labelled.xyz" for k, i, _ in designs}
    fit_opts = ["--store", d / "pool1.h5", "--n-sparse", f"soap={n_sparse}", "--sigma", a.sigma]
    # one models folder per gap_fit setting; RND fits are shared by both variants
    tag = "" if a.sigma == DEFAULT_SIGMA else "-sigma" + a.sigma.replace(",", "_")
    models = d / f"models{tag}"

    def fit(name: str) -> None:
        mlpdesign("fit", sets[name], *fit_opts, "-o", models / name, "-f", "-q", log=log)

    timed("select", select, designs)
    timed("label", label, designs)
    models.mkdir(exist_ok=True)
    timed("fit", fit, list(sets))

    def cv(v) -> None:
        variant, opt = v
        names = [f"{opt}1", f"{opt}2", "RND1", "RND2"]
        # cached: the same four models (by their input hashes) give the same matrix
        key = "\n".join(
            n + " " + json.loads((models / n / "fit.json").read_text())["inputs_sha256"]
            for n in names
        )
        stamp = d / f"cv-{variant}{tag}" / "experiment-key.txt"
        if stamp.is_file() and stamp.read_text() == key:
            return
        mlpdesign(
            "crossval",
            *(f"{n}={sets[n]}" for n in names),
            *fit_opts,
            "--models-dir",
            models,
            "-o",
            d / f"cv-{variant}{tag}",
            *(["--no-figure"] if a.no_figure else []),
            "--force",
            "-j",
            "1",
            "-q",
            log=log,
        )
        stamp.write_text(key)

    timed("crossval", cv, variants)
    results = {}
    for variant, opt in variants:
        names = [f"{opt}1", f"{opt}2", "RND1", "RND2"]
        m = json.loads((d / f"cv-{variant}{tag}" / "matrix.json").read_text())
        worst = {n: m["worst_off_sample_q99"][n]["value"] for n in names}
        w_opt = max(worst[f"{opt}1"], worst[f"{opt}2"])
        w_rnd = max(worst["RND1"], worst["RND2"])
        results[variant] = {
            "worst_off_sample_q99": worst,
            "worst_set": {n: m["worst_off_sample_q99"][n]["set"] for n in names},
            "q99_matrix": {r: {c: m["matrix"][r][c]["q99"] for c in names} for r in names},
            "rmse_matrix": {r: {c: m["matrix"][r][c]["rmse"] for c in names} for r in names},
            "worst_opt": w_opt,
            "worst_rnd": w_rnd,
            "ratio": w_opt / w_rnd,
            "fit_s": {n: m["fits"][n]["wall_s"] for n in names},
            "on_sample_q99": {n: m["matrix"][n][n]["q99"] for n in names},
            "by_structure": by_structure(d / f"cv-{variant}{tag}", m, names),
        }
    fit_s = {}
    for n in sets:
        info = json.loads((models / n / "fit.json").read_text())
        fit_s[n] = info["wall_s"]
    t["fit_wall_s_each"] = fit_s
    t["pair_total"] = round(time.perf_counter() - t_pair, 1)
    out = {"seeds": [s1, s2], "sigma": a.sigma, "results": results, "times_s": t}
    # the first (uncached) run's stage times survive reruns that reuse its outputs
    path = d / f"result{tag}.json"
    prev = json.loads(path.read_text()) if path.is_file() else {}
    out["first_run_times_s"] = prev.get("first_run_times_s", prev.get("times_s", t))
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def by_structure(cv: Path, m: dict, names: list[str]) -> dict:
    """Per model: its training set's structure counts and the 0.99 quantile of |dE|/atom
    per structure, pooled over the sets it was not trained on (where the worst case lives)."""
    import numpy as np
    from ase.io import read

    pred = json.loads((cv / "predictions.json").read_text())
    kind = {
        s: np.array([a.info.get("structure", a.info.get("config_type", "?")) for a in read(p, ":")])
        for s, p in m["sets"].items()
    }
    out = {}
    for n in names:
        err = {s: np.abs(np.array(pred[s]["predicted"][n]) - pred[s]["reference"]) for s in names}
        q = {}
        for k in sorted(set(np.concatenate([kind[s] for s in names]))):
            e = np.concatenate([err[s][kind[s] == k] for s in names if s != n])
            if e.size:
                q[str(k)] = float(np.quantile(e, 0.99))
        counts = {str(k): int((kind[n] == k).sum()) for k in sorted(set(kind[n]))}
        out[n] = {"train_counts": counts, "off_sample_q99": q}
    return out


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return (
        f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} "
        f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="l_max=n_max=6, atom_sigma 0.3, 200 SOAP sparse points"
    )
    p.add_argument("--pool", type=int, default=5000, help="candidates per pool (default 5000)")
    p.add_argument("--pick", type=int, default=1000, help="configurations per set (1000)")
    p.add_argument(
        "--pairs",
        default=None,
        help="seed pairs, e.g. 1:2,3:4,5:6 (default: that, or 1:2 with --quick)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="describe workers and commands (selections, labels, fits) at once (default 1)",
    )
    p.add_argument(
        "--sigma",
        default=DEFAULT_SIGMA,
        help=f"gap_fit default_sigma E,F,V (default {DEFAULT_SIGMA}, mlpdesign fit's)",
    )
    p.add_argument("--no-figure", action="store_true", help="skip the parity plots")
    p.add_argument(
        "--variants",
        default="stratify,maxmin,balance",
        help="designs of the optimised sets: stratify (select's default, STR), maxmin "
        "(--no-stratify, the paper's, OPT), balance (--balance --no-stratify, BAL), "
        "stratify-balance (--balance --stratify, SBL), maxent (--criterion maxent "
        "--no-stratify, ENT), maxent-stratified (--criterion maxent --stratify, ENS), "
        "exchange (ENS refined by --refine exchange, EXC); default: the first three",
    )
    p.add_argument(
        "--eam",
        type=Path,
        default=ROOT / "third_party" / "Zr_mm.eam.fs",
        help="EAM potential for the stand-in labels (make eam fetches it)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="work folder (default: <tmp>/mlpdesign-paper-experiment-<setting>)",
    )
    a = p.parse_args()
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if not a.variants or set(a.variants) - set(VARIANTS):
        sys.exit(f"--variants: choose from {', '.join(VARIANTS)}")
    if not a.eam.is_file():
        sys.exit(f"{a.eam}: no such file; run 'make eam' first")
    gap, n_sparse = (QUICK_GAP, 200) if a.quick else (PAPER_GAP, 500)
    setting = "quick" if a.quick else "paper"
    work = a.work or Path(tempfile.gettempdir()) / f"mlpdesign-paper-experiment-{setting}"
    work.mkdir(parents=True, exist_ok=True)
    a.pairs = a.pairs or ("1:2" if a.quick else "1:2,3:4,5:6")
    pairs = [tuple(int(x) for x in s.split(":")) for s in a.pairs.split(",")]
    print(
        f"setting {setting}: pools of {a.pool}, sets of {a.pick}, {len(pairs)} seed pairs, "
        f"SOAP sparse points {n_sparse}; work folder {work}"
    )
    print(f"gap: {gap}")
    t0 = time.perf_counter()
    runs = []
    for s1, s2 in pairs:
        r = run_pair(s1, s2, a, gap, n_sparse, work)
        runs.append(r)
        for variant in a.variants:
            opt, v = VARIANTS[variant], r["results"][variant]
            w = "  ".join(f"{n} {x * 1e3:7.2f}" for n, x in v["worst_off_sample_q99"].items())
            print(
                f"pair {s1}:{s2} {variant:8s} worst off-sample q99 (meV/atom): {w}   "
                f"worst({opt})/worst(RND) = {v['ratio']:.3f}",
                flush=True,
            )
            for n, b in v["by_structure"].items():
                q = "  ".join(f"{k} {x * 1e3:.2f}" for k, x in b["off_sample_q99"].items())
                print(f"    {n}: trained on {b['train_counts']}; off-sample q99 by structure {q}")
        print(f"pair {s1}:{s2} times (s): {r['times_s']}", flush=True)
    total = time.perf_counter() - t0
    summary = {
        "setting": setting,
        "gap": gap,
        "n_sparse_soap": n_sparse,
        "pool": a.pool,
        "pick": a.pick,
        "runs": runs,
        "total_s": round(total, 1),
    }
    summary["sigma"] = a.sigma
    ratios = {v: [r["results"][v]["ratio"] for r in runs] for v in a.variants}
    summary["ratios"] = ratios
    print("\nworst(design)/worst(RND) over seed pairs (below 1: the design beats random):")
    for v in a.variants:
        print(f"  {v:8s} {spread(ratios[v])}")
    if len(a.variants) >= 2:
        means = {v: statistics.mean(ratios[v]) for v in a.variants}
        win = min(a.variants, key=lambda v: means[v])
        wins = sum(
            all(ratios[win][i] <= ratios[v][i] for v in a.variants) for i in range(len(runs))
        )
        others = ", ".join(f"{v} {means[v]:.3f}" for v in a.variants if v != win)
        print(
            f"  lower mean ratio: {win} ({means[win]:.3f} vs {others}; lowest in "
            f"{wins} of {len(runs)} pairs)"
        )
        summary["winner"] = win
    head = "| seeds | worst RND |" + "".join(
        f" worst {VARIANTS[v]} | {VARIANTS[v]}/RND |" for v in a.variants
    )
    print("\n" + head + " first run (s) |")
    print("|---" * (head.count("|") - 1) + "|---|")
    for r in runs:
        res = r["results"]
        cells = "".join(
            f" {res[v]['worst_opt'] * 1e3:.2f} | {res[v]['ratio']:.3f} |" for v in a.variants
        )
        print(
            f"| {r['seeds'][0]}:{r['seeds'][1]} | {res[a.variants[0]]['worst_rnd'] * 1e3:.2f} |"
            f"{cells} {r['first_run_times_s'].get('pair_total', 0):.0f} |"
        )
    tag = "" if a.sigma == DEFAULT_SIGMA else "-sigma" + a.sigma.replace(",", "_")
    path = work / f"summary{tag}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\ntotal {total:.0f} s; summary in {path} (worst off-sample q99 in meV/atom)")


if __name__ == "__main__":
    main()
