"""benchmarks/md_study.py (issue 17 item 7) end to end on a tiny MD pool: select, write,
label, fit, score, the per-origin numbers, the tables, the figure and the docs section (three
designs fitted; every design's select options run), so the study cannot rot between its
(long) runs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ["OPT", "STR", "RND"]  # fitted here (a gap_fit each); all are selected below


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, eam_file):
    """The study on 5 runs x 3 frames of 16 atoms, 5 picks, a tiny GAP, three designs."""
    from conftest import SMALL_GAP

    mod = load("md_study", ROOT / "benchmarks" / "md_study.py")
    work = tmp_path_factory.mktemp("md_study")
    settings = dict(gap=SMALL_GAP, picks=5, snapshots=3, every=2, n_sparse=10, cells={})
    settings["designs"] = DESIGNS
    result = mod.study(work / "work", [1], eam=eam_file, **settings)
    return mod, work, result


def test_every_design_runs_and_is_measured_per_origin(tiny):
    mod, _, result = tiny
    origins = ["bulk_300K", "bulk_1500K", "vacancy_300K", "vacancy_1500K", "slab_300K"]
    assert result["origins"] == origins
    (seed,) = result["per_seed"]
    assert seed["frames_per_origin"] == dict.fromkeys(sorted(origins), 3)
    assert list(seed["designs"]) == DESIGNS
    for name, d in seed["designs"].items():
        assert sum(d["picks_per_origin"].values()) == 5, name
        assert set(d["rmse_mev_per_atom"]) == set(origins)
        assert all(math.isfinite(v) and v >= 0 for v in d["rmse_mev_per_atom"].values())
        assert d["worst_frame"]["origin"] in origins
        assert d["worst_frame"]["abs_err_mev_per_atom"] >= d["rmse_all"]
        # the labels (label --eam) are the MD's own EAM energies
        assert d["label_vs_md_max_abs_mev_per_atom"] < 1e-3
        assert sum(d["score"]["top_var_per_origin"].values()) == 5
    # one pick per origin: each run's share of 5
    assert set(seed["designs"]["STR"]["picks_per_origin"].values()) == {1}
    assert seed["stratify_by_source_same_picks_as_STR"] is True
    assert seed["designs"]["RND"]["rmse_all"] > 0


def test_tables_figure_and_docs_section(tiny):
    mod, work, result = tiny
    assert [r["design"] for r in result["rows"]] == DESIGNS
    assert [r["design"] for r in result["score_rows"]] == DESIGNS
    assert result["summary"]["RND"]["rmse_all_over_rnd"]["mean"] == pytest.approx(1.0)
    out, png = work / "md_study.json", work / "md_study.png"
    mod.write_json(result, out)
    mod.main(["--from-json", "-o", str(out), "--figure", str(png)])  # tables again, figure
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, ensure_ascii=False))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    docs = load("make_docs", ROOT / "benchmarks" / "make_docs.py")
    text = docs.md_study({"md_study.json": json.loads(out.read_text())})
    assert "| STR |" in text and "v300 in top σ²" in text
    page = "<!-- generated: md-study -->\nold\n<!-- end generated -->\n"
    assert "old" not in docs.render(page, {"md_study.json": result})


def test_a_rerun_reuses_every_step(tiny, eam_file):
    """Same settings, same work folder: nothing is run again and the numbers are the same."""
    from conftest import SMALL_GAP

    mod, work, result = tiny
    again = mod.run_seed(
        1,
        {
            "gap": SMALL_GAP, "picks": 5, "snapshots": 3, "every": 2, "n_sparse": 10,
            "designs": DESIGNS, "cells": {}, "jobs": 1, "eam": eam_file,
        },
        work / "work",
    )  # fmt: skip
    assert again["designs"] == result["per_seed"][0]["designs"]
    assert again["times_s"]["describe"] == 0.0
    assert all(again["times_s"][n]["select"] == 0.0 for n in DESIGNS)


def test_every_design_selects(tiny):
    """The select options of every design of the study run on the tiny pool's store."""
    import ase.io

    mod, work, _ = tiny
    d = work / "work" / "seed-1"
    origin = [
        a.info["origin"] for p in sorted((d / "md").glob("*.traj")) for a in ase.io.read(p, ":")
    ]
    for name in mod.DESIGNS:
        out = work / f"sel-{name}.json"
        mod.step(out, "select", d / "pool.h5", "-n", 5, *mod.design_args(name, 1), log=work / "log")
        picks = json.loads(out.read_text())["index"]
        assert len(set(picks)) == 5, name
        if name.startswith("STR"):
            assert sorted(origin[i] for i in picks) == sorted(set(origin)), name
