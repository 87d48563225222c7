"""``fit``: gap_fit end to end on a tiny labelled set, and its failures as one line."""

from __future__ import annotations

import json

import pytest
from clihelpers import TINY_GAP, fit_tiny, one_line_error, run

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.fit import FitOptions, fit, fit_specs, gap_fit_args, parse_sigma
from mlpdesign.gap.strings import DEFAULT_GAP, gap_fit_argument, parse_gap


def test_fit_end_to_end(labelled, tmp_path):
    out = tmp_path / "model"
    res = fit_tiny(labelled, out)
    assert res.exit_code == 0, res.stderr
    assert "fitted 40 configurations" in res.stderr and "peak memory" in res.stderr
    for name in ("gap.xml", "gap_fit.log", "fit.json", "train.xyz"):
        assert (out / name).is_file(), name
    assert list(out.glob("gap.xml.sparseX.*")), "sparse points in separate files"
    assert (out / "train.xyz").read_bytes() == labelled.read_bytes()
    info = json.loads((out / "fit.json").read_text())
    assert info["n_configs"] == 40 and info["wall_s"] > 0 and info["peak_rss_mib"] > 1
    cmd = info["command"]
    assert "e0_method=average" in cmd and "energy_parameter_name=dft_energy" in cmd
    assert "force_parameter_name=dft_forces" in cmd and "virial_parameter_name=dft_virial" in cmd
    assert "default_sigma={0.002 0.05 0.05 0.0}" in cmd
    gap = next(a for a in cmd if a.startswith("gap={"))
    assert "n_sparse=20 sparse_method=cur_points" in gap  # soap: option
    assert "n_sparse=20 sparse_method=uniform" in gap  # distance_2b: default
    log = (out / "gap_fit.log").read_text()
    assert "Bye-Bye" in log  # gap_fit's own log, complete
    # same inputs again: the model is kept without --force (as crossval does), by default
    fit_json = (out / "fit.json").read_bytes()
    for extra in ((), ("--reuse",)):  # --reuse: the old opt-in spelling, now a no-op
        res = fit_tiny(labelled, out, *extra)
        assert res.exit_code == 0, res.stderr
        assert "inputs unchanged, model kept" in res.stderr
        assert (out / "fit.json").read_bytes() == fit_json
    opts = FitOptions(gap=TINY_GAP, n_sparse={"soap": 20})
    again = fit(labelled, out, opts)
    assert again.reused and again.wall_s == pytest.approx(info["wall_s"])
    # other inputs, or --no-reuse, into an existing model: refused without --force
    line = one_line_error(
        run("fit", labelled, "--gap", TINY_GAP, "--n-sparse", "soap=21", "-o", out)
    )
    assert f"{out} holds a fit (its inputs differ); use --force" in line
    line = one_line_error(fit_tiny(labelled, out, "--no-reuse"))
    assert "(--no-reuse); use --force" in line
    assert (out / "fit.json").read_bytes() == fit_json
    (out / "notes.txt").write_text("mine")
    res = fit_tiny(labelled, out, "--no-reuse", "-f")
    assert res.exit_code == 0, res.stderr
    assert "fitted 40 configurations" in res.stderr
    assert json.loads((out / "fit.json").read_text())["inputs_sha256"] == info["inputs_sha256"]
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces files only
    help_text = run("fit", "--help").output
    assert "--no-reuse" in help_text and "--reuse " not in help_text


def test_gap_fit_arguments():
    opts = FitOptions(
        gap=DEFAULT_GAP,
        e0=-6.5,
        sigma=(0.001, 0.1, 0.05, 0.0),
        seed=3,
        n_sparse={"2": 100},
        sparse_method={"distance_2b": "random"},
    )
    specs = fit_specs(opts, n_atoms=50)  # many-body sparse points capped by the atoms
    assert specs[0].kernel["n_sparse"] == 20 and specs[0].kernel["sparse_method"] == "random"
    assert specs[1].kernel["n_sparse"] == 50 and specs[1].kernel["sparse_method"] == "cur_points"
    args = gap_fit_args(specs, opts)
    assert "e0=-6.5" in args and "e0_method=average" not in args
    assert "default_sigma={0.001 0.1 0.05 0.0}" in args and "rnd_seed=3" in args
    assert args[1] == gap_fit_argument(specs) and "Z={{40}}" in args[1]
    same = [(s.descriptor, s.kernel) for s in parse_gap(args[1])]
    assert same == [(s.descriptor, dict(s.kernel, add_species=False)) for s in specs]
    assert fit_specs(FitOptions(gap=DEFAULT_GAP))[1].kernel["n_sparse"] == 500  # paper


def test_gap_fit_failure_is_one_line_with_its_message(labelled, tmp_path):
    out = tmp_path / "model"
    res = run(
        "fit",
        labelled,
        "--gap",
        TINY_GAP,
        "--n-sparse",
        "soap=20",
        "--gap-fit-arg",
        "bogus_key=1",
        "-o",
        out,
        "-q",
    )
    line = one_line_error(res)
    assert "gap_fit failed (exit 1): param_read_line: unknown key bogus_key" in line
    assert not out.exists()  # nothing half-written
    kept = tmp_path / "model.gap_fit.log"
    assert kept.is_file() and "bogus_key" in line + kept.read_text()


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--n-sparse", "angle_3b=5"], "has no descriptor 'angle_3b'"),
        (["--n-sparse", "soap"], "expects NAME=VALUE"),
        (["--n-sparse", "soap=0"], "must be at least 1"),
        (["--sigma", "0.1,x"], "--sigma expects numbers"),
        (["--sparse-method", "soap=bogus"], "unknown sparse_method=bogus"),
    ],
)
def test_bad_fit_options(labelled, tmp_path, args, msg):
    line = one_line_error(run("fit", labelled, "--gap", TINY_GAP, *args, "-o", tmp_path / "m"))
    assert msg in line
    assert not (tmp_path / "m").exists()


def test_set_without_labels(small_pool, tmp_path):
    line = one_line_error(run("fit", small_pool, "--gap", TINY_GAP, "-o", tmp_path / "m"))
    assert "configuration 0 has no dft_energy label" in line


def test_species_not_covered_by_soap(labelled, tmp_path):
    gap = TINY_GAP.replace("Z={40}", "Z={13}")
    line = one_line_error(run("fit", labelled, "--gap", gap, "-o", tmp_path / "m"))
    assert "contains Z=[40]" in line and "soap has Z=[13]" in line


def test_store_and_gap_exclusive(labelled, tmp_path):
    line = one_line_error(
        run("fit", labelled, "--gap", TINY_GAP, "--store", labelled, "-o", tmp_path / "m")
    )
    assert "--store or --gap, not both" in line


def test_parse_sigma():
    assert parse_sigma("0.002,0.05,0.05") == (0.002, 0.05, 0.05, 0.0)
    with pytest.raises(MlpdesignError):
        parse_sigma("0,1,1")


def test_fit_killed_while_replacing_a_model_is_never_reused(labelled, tmp_path, monkeypatch):
    """A refit (-f) that dies while its files replace an old model's leaves no fit.json:
    the half-replaced model is never taken for a fit of either inputs, and is refitted."""
    import errno
    import os

    import mlpdesign.io.atomic as atomic

    out = tmp_path / "model"
    old = ["--gap", TINY_GAP, "--n-sparse", "soap=20"]
    new = ["--gap", TINY_GAP, "--n-sparse", "soap=21"]
    assert run("fit", labelled, *old, "-o", out, "-q").exit_code == 0
    real = atomic.merge_into

    def dies_after_one_file(src, dest):
        first = sorted(src.iterdir())[0]
        os.replace(first, dest / first.name)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic, "merge_into", dies_after_one_file)
    one_line_error(run("fit", labelled, *new, "-o", out, "-q", "-f"))
    monkeypatch.setattr(atomic, "merge_into", real)
    assert not (out / "fit.json").exists()
    for opts in (old, new):  # neither the old nor the new inputs see a fit to keep
        res = run("fit", labelled, *opts, "-o", out)
        assert "model kept" not in res.stderr and res.exit_code == 2, res.stderr
    res = run("fit", labelled, *new, "-o", out, "-f")
    assert res.exit_code == 0 and "fitted 40 configurations" in res.stderr, res.stderr
    assert "n_sparse=21" in " ".join(json.loads((out / "fit.json").read_text())["command"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no lock, no temporary


def test_model_and_crossval_folders_honour_the_umask(labelled, tmp_path):
    """Model and crossval folders (built in mkdtemp's 0700 folders) get the umask's modes."""
    import os

    old = os.umask(0o002)
    try:
        gap = ["--gap", TINY_GAP, "--n-sparse", "soap=20"]
        assert run("fit", labelled, *gap, "-o", tmp_path / "m", "-q").exit_code == 0
        cv = tmp_path / "cv"
        res = run("crossval", f"A={labelled}", *gap, "-o", cv, "-q", "--no-figure")
        assert res.exit_code == 0, res.stderr
    finally:
        os.umask(old)
    for d in (tmp_path / "m", cv, cv / "models", cv / "models/A"):
        assert d.stat().st_mode & 0o777 == 0o775, d
    for f in (tmp_path / "m/fit.json", tmp_path / "m/gap.xml", cv / "matrix.json"):
        assert f.stat().st_mode & 0o777 == 0o664, f
