"""Write the generated sections of README.md and docs/*.md from benchmarks/results/*.json.

Every measured number in the docs lives in a JSON file here; this script is the only thing that
puts them into the Markdown, between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``
markers, so two pages cannot quote two different numbers.

    python benchmarks/make_docs.py            # rewrite the sections in place
    python benchmarks/make_docs.py --check    # exit 1 if a committed page is out of date
    python benchmarks/make_docs.py --out DIR  # write the pages into DIR instead

Paper-experiment summaries (files with ``runs``) get their own tables; any other JSON is
rendered with a generic table (``rows``: a list of objects) or a key/value list, so new result
files appear in docs/benchmarks.md without touching this script.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [
    "README.md",
    "docs/benchmarks.md",
    "docs/paper-experiment.md",
    "docs/algorithm.md",
    "docs/scaling.md",
    "docs/cli.md",
    "docs/tune.md",
    "docs/md-pools.md",
]
SECTION = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
LABELS = {"stratify": "STR", "maxmin": "OPT", "default": "OPT", "balance": "BAL"}
LABELS["stratify-balance"] = "SBL"
LABELS.update({"maxent": "ENT", "maxent-stratified": "ENS", "exchange": "EXC"})


def load_results(results: Path = RESULTS) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def is_experiment(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("runs"), list)


def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value).replace("|", "\\|")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def generic(name: str, data) -> str:
    """Any result JSON: its title, a table of its ``rows`` (or of its scalar keys), its source."""
    if not isinstance(data, dict):
        data = {"value": data}
    out = [f"### {data.get('title', name)}\n", f"`benchmarks/results/{name}`"]
    if data.get("benchmark"):
        out[-1] += f", from `{data['benchmark']}`"
    if data.get("source"):
        out[-1] += f"; source: {data['source']}"
    out.append("\n\n")
    rows = data.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        out.append(table(keys, [[r.get(k, "") for k in keys] for r in rows]))
    skip = {"title", "benchmark", "source", "rows"}
    rest = [[k, v] for k, v in data.items() if k not in skip]
    if rest:
        out.append(("\n" if isinstance(rows, list) else "") + table(["key", "value"], rest))
    return "".join(out)


def experiment_rows(results: dict[str, dict]):
    """(file, data, seeds, variant, result) for every design of every run."""
    for name, data in results.items():
        if not is_experiment(data):
            continue
        for run in data["runs"]:
            for variant, res in run.get("results", {}).items():
                yield name, data, run, variant, res


def mev(x: float) -> str:
    return f"{1000 * x:.2f}"


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else ""
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def paper_main(
    results: dict[str, dict], name: str = "paper_experiment_paper_pool100000.json"
) -> str:
    """The paper's setting at the paper's pool size: worst RND, worst design, ratio per pair."""
    data = results.get(name)
    if data is None:
        return f"(no {name})\n"
    variants = list(dict.fromkeys(v for r in data["runs"] for v in r["results"]))
    header = ["seeds", "worst RND"]
    for v in variants:
        lab = LABELS.get(v, v)
        header += [f"worst {lab}", f"{lab}/RND"]
    rows, ratios = [], {v: [] for v in variants}
    for run in data["runs"]:
        res = run["results"]
        row = [":".join(map(str, run["seeds"])), mev(res[variants[0]]["worst_rnd"])]
        for v in variants:
            row += [mev(res[v]["worst_opt"]), f"{res[v]['ratio']:.3f}"]
            ratios[v].append(res[v]["ratio"])
        rows.append(row)
    rows.append(["mean ± sd", ""] + sum([["", mean_sd(ratios[v])] for v in variants], []))
    note = (
        f"\nPools of {data['pool']:,}".replace(",", " ")
        + f", {data['pick']} per set; worst off-sample 0.99 quantile of |ΔE|/atom in meV/atom; "
        "worst RND is from the first design's cross-validation, each ratio uses its own.\n"
    )
    return table(header, rows) + note


def paper_all(results: dict[str, dict]) -> str:
    """Every design of every recorded run, one row each."""
    rows = []
    for name, data, run, variant, res in experiment_rows(results):
        rows.append(
            [
                f"`{name}`",
                data.get("setting", ""),
                data.get("pool", ""),
                data.get("pick", ""),
                ":".join(map(str, run.get("seeds", []))),
                run.get("sigma", ""),
                LABELS.get(variant, variant),
                mev(res["worst_opt"]),
                mev(res["worst_rnd"]),
                f"{res['ratio']:.3f}",
            ]
        )
    header = ["file", "setting", "pool", "pick", "seeds", "sigma", "design"]
    header += ["worst design", "worst RND", "ratio"]
    return table(header, rows)


def paper_means(results: dict[str, dict]) -> str:
    """Mean ± sd of design/RND over the seed pairs of each file and design."""
    groups: dict[tuple, list[float]] = {}
    for name, data, _run, variant, res in experiment_rows(results):
        key = (name, data.get("setting", ""), data.get("pool", ""), data.get("pick", ""))
        groups.setdefault(key + (LABELS.get(variant, variant),), []).append(res["ratio"])
    rows = [[f"`{k[0]}`", *k[1:], len(v), mean_sd(v)] for k, v in groups.items()]
    header = ["file", "setting", "pool", "pick", "design", "pairs", "design/RND"]
    return table(header, rows)


def headline(results: dict[str, dict]) -> str:
    data = results.get("paper_experiment_paper_pool100000.json")
    if data is None:
        return ""
    r = {
        v: [run["results"][v]["ratio"] for run in data["runs"]] for v in data["runs"][0]["results"]
    }
    parts = ", ".join(f"{LABELS.get(v, v)} {statistics.mean(x):.3f}" for v, x in r.items())
    pool = f"{data['pool']:,}".replace(",", " ")
    return (
        f"Worst-case error of designed sets / random sets, paper setting, pools of {pool}, "
        f"{len(data['runs'])} seed pairs (mean; below 1 the design wins): {parts}.\n"
    )


def is_tune(name: str) -> bool:
    return name.startswith("tune_")


TUNE_COLS = ["kernel", "pick", "atom_sigma", "soap_cutoff", "l_max=n_max", "theta"]
TUNE_COLS += ["overlap_%", "orthogonal_%", "median_D2", "pair_share_of_D2_%"]


def tune_section(results: dict[str, dict]) -> str:
    """docs/tune.md: the rule's pick vs the paper's on the grid, and the theta scan."""
    out = []
    grid = results.get("tune_paper_zr.json")
    if grid:
        picks = [r for r in grid["rows"] if r["pick"]]
        out.append(table(TUNE_COLS, [[str(r[k]) for k in TUNE_COLS] for r in picks]))
        for kernel in dict.fromkeys(r["kernel"] for r in grid["rows"]):
            rows = [r for r in grid["rows"] if r["kernel"] == kernel]
            n_tied = sum(1 for r in rows if r.get("tied"))
            out.append(
                f"\n{kernel}: {len(rows)} settings, {n_tied} tied with the pick, "
                f"{grid.get(f'wall_s_{kernel}', '?')} s."
            )
        out.append(f"\n\nSource (`benchmarks/results/tune_paper_zr.json`): {grid['source']}\n")
    scan = results.get("tune_paper_zr_theta.json")
    if scan:
        cols = ["theta", "pick", "overlap_%", "orthogonal_%", "median_D2", "pair_share_of_D2_%"]
        out.append("\n" + table(cols, [[str(r[k]) for k in cols] for r in scan["rows"]]))
        out.append(f"\nSource (`benchmarks/results/tune_paper_zr_theta.json`): {scan['source']}\n")
    return "".join(out) or "(no tune results)\n"


def md_study(results: dict[str, dict]) -> str:
    """docs/md-pools.md: the designs on the MD pool (issue 17, item 7), from md_study.json."""
    data = results.get(MD_STUDY)
    if data is None:
        return f"(no {MD_STUDY})\n"
    st = data["settings"]
    rows = data["rows"]
    out = [table(list(rows[0]), [list(r.values()) for r in rows])]
    out.append(
        f"\nMean ± sd over {len(st['seeds'])} seeds ({', '.join(map(str, st['seeds']))}), "
        f"{st['picks']} picks "
        f"per design; RMSE of the energy per atom over every frame of the pool (meV/atom); "
        "the worst frame is the largest |ΔE|/atom in the pool.\n\n"
    )
    srows = data["score_rows"]  # seed by seed
    out.append(table(list(srows[0]), [list(r.values()) for r in srows]))
    out.append(
        "\nSeed by seed, separated by /. Source: "
        f"`benchmarks/results/{MD_STUDY}`, from `{data['benchmark']}` "
        f"({data['wall_s']:.0f} s wall, {data['cpu_s']:.0f} s CPU, load {data['load_start'][0]}"
        f"–{data['load_end'][0]} on {data['nproc']} cores).\n"
    )
    return "".join(out)


MD_STUDY = "md_study.json"
CELLS, CELLS_STREAM = "cells.json", "cells_stream.json"


def cells(results: dict[str, dict]) -> str:
    """docs/scaling.md, docs/benchmarks.md: every stage against atoms per config and the
    streamed run of ~10^6 atoms in ~100-atom cells (issue 17, item 4)."""
    out = []
    data = results.get(CELLS)
    if data is not None:
        rows = data["rows"]
        out.append(f"**{data['title']}**\n\n")
        out.append(table(list(rows[0]), [list(r.values()) for r in rows]))
        out.append(f"\nSource: `benchmarks/results/{CELLS}`, from `{data['benchmark']}`; ")
        out.append(f"{data['source']}.\n")
    big = results.get(CELLS_STREAM)
    if big is not None:
        out.append(f"\n**{big['title']}**\n\n")
        runs = [("streamed (this code)", big["streamed"], True)]
        if "memory" in big:
            runs.append(("in memory", big["memory"], big["memory"].get("same_picks")))
        if "compare_with" in big:
            old = big["compare_with"]
            name = f"streamed, before the bound ({old['picks']} picks)"
            runs.append((name, old, old.get("same_picks")))
        keys = ["first_pick_s", "ms_per_pick", "wall_s", "configs_evaluated_per_pick"]
        keys += ["soap_rows_per_pick", "peak_rss_gb", "cached_blocks", "blocks", "spill_gb"]
        body = [[name, *[r.get(k) for k in keys], same] for name, r, same in runs]
        out.append(table(["run", *keys, "same picks"], body))
        d = big.get("describe")
        if d:
            out.append(
                f"\ndescribe --jobs {big.get('describe_jobs', 1)}: "
                f"{d['describe_atoms_per_s']} atoms/s; a bare quippy loop on one process "
                f"{d['bare_atoms_per_s']} atoms/s ({d['describe_vs_bare_cpu']}x per CPU second). "
            )
        out.append(
            f"\n{big['configs']} configs, {big['atoms']} atoms, store {big['store_gb']} GB. "
            f"Source: `benchmarks/results/{CELLS_STREAM}`, from `{big['benchmark']}`; "
            f"{big['source']}.\n"
        )
    return "".join(out) or "(no cells results)\n"


def speed(results: dict[str, dict]) -> str:
    own = {MD_STUDY, CELLS, CELLS_STREAM}  # files with a section of their own
    parts = [
        generic(n, d)
        for n, d in results.items()
        if not is_experiment(d) and not is_tune(n) and n not in own
    ]
    return "\n".join(parts) if parts else "(no results)\n"


def select_speed(results: dict[str, dict]) -> str:
    data = results.get("speed_select.json")
    return generic("speed_select.json", data) if data else ""


RENDER = {
    "headline": headline,
    "speed": speed,
    "select-speed": select_speed,
    "paper-main": paper_main,
    "paper-maxent": lambda r: paper_main(r, "paper_experiment_paper_pool100000_maxent.json"),
    "paper-all": paper_all,
    "paper-means": paper_means,
    "tune": tune_section,
    "md-study": md_study,
    "cells": cells,
}


def render(text: str, results: dict[str, dict]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name.startswith("result-"):  # one results file, rendered as docs/benchmarks.md does
            key = name.removeprefix("result-") + ".json"
            if key not in results:
                raise SystemExit(f"make_docs: no benchmarks/results/{key} for section {name!r}")
            return m.group(1) + generic(key, results[key]) + m.group(4)
        if name not in RENDER:
            raise SystemExit(f"make_docs: unknown generated section {name!r}")
        return m.group(1) + RENDER[name](results) + m.group(4)

    return SECTION.sub(sub, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a page is out of date")
    ap.add_argument("--out", type=Path, help="write the pages under this folder")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    results = load_results(args.results)
    stale = []
    for page in PAGES:
        src = ROOT / page
        if not src.exists():
            continue
        old = src.read_text()
        new = render(old, results)
        if args.check:
            if new != old:
                stale.append(page)
            continue
        dst = (args.out / page) if args.out else src
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst != src or new != old:
            dst.write_text(new)
    if stale:
        print("out of date (run `make docs`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
