"""``crossval``: one model per set, every model on every set, the paper's statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clihelpers import TINY_GAP, one_line_error, run

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.crossval import error_stats, parse_sets, worst_off_sample
from mlpdesign.gap.label import eam_calculator, label, read_labelled, write_labelled
from mlpdesign.generate.pool import PoolSpec, generate

FIT = ["--gap", TINY_GAP, "--n-sparse", "soap=15"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory, eam_file) -> dict[str, Path]:
    """Two labelled sets of 20 configurations from independent pools."""
    d = tmp_path_factory.mktemp("cv")
    calc = eam_calculator(eam_file)
    out = {}
    for name, seed in (("A", 21), ("B", 22)):
        generate(d / f"{name}_pool.xyz", 20, PoolSpec(seed=seed))
        label(d / f"{name}_pool.xyz", d / f"{name}.xyz", calc)
        out[name] = d / f"{name}.xyz"
    return out


def test_crossval_end_to_end(sets, tmp_path):
    cv = tmp_path / "cv"
    res = run("crossval", f"A={sets['A']}", f"B={sets['B']}", *FIT, "-o", cv, "-q", "-j", "2")
    assert res.exit_code == 0, res.stderr
    assert "worst off" in res.output
    for name in (
        "matrix.json",
        "predictions.json",
        "parity.png",
        "models/A/gap.xml",
        "models/B/gap.xml",
        "models/A/gap_fit.log",
    ):
        assert (cv / name).is_file(), name
    m = json.loads((cv / "matrix.json").read_text())
    p = json.loads((cv / "predictions.json").read_text())
    assert m["models"] == ["A", "B"] and m["units"] == "eV/atom" and m["quantile"] == 0.99
    for model in "AB":
        for s in "AB":
            ref = np.array(p[s]["reference"])
            pred = np.array(p[s]["predicted"][model])
            err = pred - ref
            st = m["matrix"][model][s]
            # the statistics, recomputed directly from the predictions
            assert st["n"] == 20
            assert st["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-12)
            assert st["std"] == pytest.approx(np.std(np.abs(err)), rel=1e-12)
            assert st["q99"] == pytest.approx(np.quantile(np.abs(err), 0.99), rel=1e-12)
        frames = read_labelled(sets[model])
        lab = np.array([a.info["dft_energy"] / len(a) for a in frames])
        np.testing.assert_allclose(p[model]["reference"], lab, rtol=0, atol=1e-12)
    # worst off-sample: the other set (only one here)
    assert m["worst_off_sample_q99"]["A"] == {"value": m["matrix"]["A"]["B"]["q99"], "set": "B"}
    assert m["worst_off_sample_q99"]["B"] == {"value": m["matrix"]["B"]["A"]["q99"], "set": "A"}
    # fits are real: the training error is small compared with the energy spread
    assert m["matrix"]["A"]["A"]["rmse"] < 0.02
    assert not m["fits"]["A"]["reused"] and m["fits"]["A"]["wall_s"] > 0

    # an existing folder is refused without --force, like every command's output
    before = {p: p.read_bytes() for p in cv.rglob("*") if p.is_file()}
    line = one_line_error(run("crossval", f"A={sets['A']}", f"B={sets['B']}", *FIT, "-o", cv))
    assert f"{cv} exists (a crossval folder); use --force" in line
    assert {p: p.read_bytes() for p in cv.rglob("*") if p.is_file()} == before

    # second run (-f): nothing changed -> both models reused, same matrix
    fit_json = (cv / "models/A/fit.json").read_bytes()
    res = run(
        "crossval", f"A={sets['A']}", f"B={sets['B']}", *FIT, "-o", cv, "-q", "--no-figure", "-f"
    )
    assert res.exit_code == 0, res.stderr
    m2 = json.loads((cv / "matrix.json").read_text())
    assert m2["fits"]["A"]["reused"] and m2["fits"]["B"]["reused"]
    assert m2["matrix"] == m["matrix"]
    assert (cv / "models/A/fit.json").read_bytes() == fit_json

    # a changed input (one more config in B) refits B only
    changed = tmp_path / "B2.xyz"
    write_labelled(changed, read_labelled(sets["B"]) + read_labelled(sets["A"])[:1])
    assert len(read_labelled(changed)) == 21
    res = run(
        "crossval", f"A={sets['A']}", f"B={changed}", *FIT, "-o", cv, "-q", "--no-figure", "-f"
    )
    assert res.exit_code == 0, res.stderr
    m3 = json.loads((cv / "matrix.json").read_text())
    assert m3["fits"]["A"]["reused"] and not m3["fits"]["B"]["reused"]
    assert m3["matrix"]["A"]["B"]["n"] == 21


def test_error_stats_and_worst():
    st = error_stats(np.array([0.01, -0.02, 0.0, 0.03]))
    assert st["rmse"] == pytest.approx(np.sqrt((1 + 4 + 0 + 9) / 4) * 0.01)
    assert st["max"] == pytest.approx(0.03) and st["mae"] == pytest.approx(0.015)
    matrix = {
        "X": {"X": {"q99": 0.1}, "Y": {"q99": 0.3}, "Z": {"q99": 0.2}},
        "Y": {"X": {"q99": 0.5}, "Y": {"q99": 0.9}, "Z": {"q99": 0.4}},
        "Z": {"X": {"q99": 0.1}, "Y": {"q99": 0.1}, "Z": {"q99": 0.0}},
    }
    w = worst_off_sample(matrix)
    assert w == {
        "X": {"value": 0.3, "set": "Y"},
        "Y": {"value": 0.5, "set": "X"},
        "Z": {"value": 0.1, "set": "Y"},
    }  # own set (diagonal) never counts
    assert worst_off_sample({"X": {"X": {"q99": 1.0}}}) == {"X": None}


def test_parse_sets(sets):
    assert list(parse_sets([f"OPT1={sets['A']}", f"RND1={sets['B']}"])) == ["OPT1", "RND1"]
    for bad, msg in (
        (["nofile"], "expected NAME=FILE"),
        ([f"A={sets['A']}", f"A={sets['B']}"], "given twice"),
        ([f"a/b={sets['A']}"], "use letters"),
        (["A=/no/such.xyz"], "no such"),
    ):
        with pytest.raises(MlpdesignError, match=msg):
            parse_sets(bad)


def test_set_without_labels(sets, small_pool, tmp_path):
    line = one_line_error(
        run("crossval", f"A={sets['A']}", f"P={small_pool}", *FIT, "-o", tmp_path / "cv")
    )
    assert "has no dft_energy label" in line
    assert not (tmp_path / "cv").exists()  # refused before any fit


def test_refuses_foreign_folder(sets, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    line = one_line_error(run("crossval", f"A={sets['A']}", *FIT, "-o", other))
    assert f"{other} exists (not empty); use --force" in line
    assert sorted(p.name for p in other.iterdir()) == ["precious.txt"]
    (other / "matrix.json").mkdir()  # a folder where crossval writes a file: refused at once
    line = one_line_error(run("crossval", f"A={sets['A']}", *FIT, "-o", other, "-f"))
    assert f"{other / 'matrix.json'} is a folder; --force replaces files, never a folder" in line
    assert sorted(p.name for p in other.iterdir()) == ["matrix.json", "precious.txt"]


def test_force_replaces_only_its_own_files_and_no_reuse_refits(sets, tmp_path):
    """With -f crossval writes into a folder holding other work and deletes none of it;
    --no-reuse (old spelling --refit, hidden) refits; an empty folder needs no -f."""
    cv = tmp_path / "cv"
    cv.mkdir()  # empty: no --force needed
    res = run("crossval", f"A={sets['A']}", *FIT, "-o", cv, "-q", "--no-figure")
    assert res.exit_code == 0, res.stderr
    (cv / "notes.txt").write_text("mine")
    (cv / "mine").mkdir()
    (cv / "mine" / "keep.dat").write_text("k")
    (cv / "models" / "A" / "extra.txt").write_text("e")
    (cv / "models" / "OLD").mkdir()
    (cv / "models" / "OLD" / "gap.xml").write_text("old model")
    for flag in ("--no-reuse", "--refit"):
        res = run("crossval", f"A={sets['A']}", *FIT, "-o", cv, "-q", "--no-figure", "-f", flag)
        assert res.exit_code == 0, res.stderr
        m = json.loads((cv / "matrix.json").read_text())
        assert not m["fits"]["A"]["reused"], flag
    assert (cv / "notes.txt").read_text() == "mine" and (cv / "mine/keep.dat").read_text() == "k"
    assert (cv / "models/A/extra.txt").is_file() and (cv / "models/A/gap.xml").is_file()
    assert (cv / "models/OLD/gap.xml").read_text() == "old model"
    assert not list(cv.glob(".*")) and not list(tmp_path.glob(".cv*"))  # no temporaries, locks
    help_text = run("crossval", "--help").output
    assert "--no-reuse" in help_text and "--refit" not in help_text


def test_shared_models_dir_changed_inputs_need_force(sets, tmp_path):
    """A shared --models-dir: an unchanged model is reused without -f; a model of other
    inputs is refused before any fit runs (one line), and refitted with -f."""
    models = tmp_path / "models"
    res = run("crossval", f"A={sets['A']}", *FIT, "--models-dir", models, "-o", tmp_path / "cv1")
    assert res.exit_code == 0, res.stderr
    res = run("crossval", f"A={sets['A']}", *FIT, "--models-dir", models, "-o", tmp_path / "cv2")
    assert res.exit_code == 0, res.stderr
    assert json.loads((tmp_path / "cv2/matrix.json").read_text())["fits"]["A"]["reused"]
    gap = (models / "A/gap.xml").read_bytes()
    line = one_line_error(
        run("crossval", f"A={sets['B']}", *FIT, "--models-dir", models, "-o", tmp_path / "cv3")
    )
    assert f"{models / 'A'} holds a model of other inputs; use --force" in line
    assert not (tmp_path / "cv3").exists() and (models / "A/gap.xml").read_bytes() == gap


def test_gap_fit_failure_in_crossval(sets, tmp_path):
    line = one_line_error(
        run(
            "crossval",
            f"A={sets['A']}",
            *FIT,
            "--gap-fit-arg",
            "nope=1",
            "-o",
            tmp_path / "cv",
            "-q",
        )
    )
    assert "gap_fit failed" in line and "unknown key nope" in line
    assert not (tmp_path / "cv" / "matrix.json").exists()


def test_second_run_on_one_output_fails_at_once(sets, tmp_path):
    """crossval locks its output folder for the whole run, like every command."""
    import fcntl
    import os

    from mlpdesign.io.lock import lock_path

    cv = tmp_path / "cv"
    fd = os.open(lock_path(cv), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        line = one_line_error(run("crossval", f"A={sets['A']}", *FIT, "-o", cv, "-q"))
        assert "being written by another mlpdesign run (pid 4242)" in line and str(cv) in line
        assert not cv.exists()
    finally:
        os.close(fd)
