"""``--force`` replaces files, never a folder or a VASP run holding results."""

from __future__ import annotations

import os
from pathlib import Path

import ase.io
import pytest
from clihelpers import one_line_error, run


@pytest.fixture
def train(tmp_path, small_pool) -> Path:
    path = tmp_path / "train.xyz"
    ase.io.write(path, ase.io.read(small_pool, index=":4"), format="extxyz")
    return path


def folder_with_work(path: Path) -> Path:
    """A folder holding somebody's files, which no --force may delete."""
    (path / "run-1").mkdir(parents=True)
    (path / "run-1" / "OUTCAR").write_text("precious\n")
    (path / "notes.txt").write_text("mine\n")
    return path


def assert_untouched(path: Path) -> None:
    assert (path / "run-1" / "OUTCAR").read_text() == "precious\n"
    assert (path / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("command", ["generate", "describe", "select", "write", "label"])
def test_force_never_replaces_a_folder_with_a_file(command, tmp_path, small_pool, small_store):
    out = folder_with_work(tmp_path / "runs")
    args = {
        "generate": ["generate", "-n", "3"],
        "describe": ["describe", small_pool],
        "select": ["select", small_store, "-n", "3"],
        "write": ["write", small_pool, tmp_path / "sel.h5"],
        "label": ["label", small_pool, "--calculator", "ase.calculators.emt:EMT"],
    }[command]
    if command == "write":
        assert run("select", small_store, "-n", "3", "-o", tmp_path / "sel.h5").exit_code == 0
    err = one_line_error(run(*args, "-o", out, "--force"))
    assert "is a folder" in err and str(out) in err
    assert_untouched(out)


def test_vasp_force_keeps_runs_with_results(train, tmp_path):
    out = tmp_path / "runs"
    assert run("vasp", train, "-o", out).exit_code == 0
    names = (out / "runs.txt").read_text().split()
    done, fresh = out / names[0], out / names[1]
    (done / "OUTCAR").write_text("finished run\n")
    (done / "vasprun.xml").write_text("<modeling/>\n")
    (done / "INCAR").write_text("ENCUT = 123\n")  # what the finished run used
    (fresh / "INCAR").write_text("stale\n")
    (out / "my-notes.txt").write_text("keep me\n")
    res = run("vasp", train, "-o", out, "--force", "--incar", "ENCUT=500")
    assert res.exit_code == 0, res.stderr
    assert f"kept 1 runs that already have results: {names[0]}" in res.stderr
    assert (done / "OUTCAR").read_text() == "finished run\n"
    assert (done / "vasprun.xml").read_text() == "<modeling/>\n"
    assert (done / "INCAR").read_text() == "ENCUT = 123\n"
    assert "ENCUT = 500" in (fresh / "INCAR").read_text()
    assert (out / "my-notes.txt").read_text() == "keep me\n"
    assert (out / "runs.txt").read_text().split() == names
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or p.name.endswith(".old")]


def test_vasp_refuses_a_file_output_even_with_force(train, tmp_path):
    target = tmp_path / "afile.txt"
    target.write_text("data\n")
    err = one_line_error(run("vasp", train, "-o", target, "--force"))
    assert "not a folder" in err and str(target) in err
    assert target.read_text() == "data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt", "train.xyz"]


def test_report_force_keeps_other_files(small_store, tmp_path):
    sel = tmp_path / "sel.h5"
    assert run("select", small_store, "-n", "5", "-o", sel).exit_code == 0
    out = tmp_path / "report"
    assert run("report", small_store, sel, "--random", "2", "-o", out, "-q").exit_code == 0
    (out / "mine.txt").write_text("keep\n")
    res = run("report", small_store, sel, "--random", "2", "-o", out, "-q", "--force")
    assert res.exit_code == 0, res.stderr
    assert (out / "mine.txt").read_text() == "keep\n" and (out / "metrics.json").is_file()


def test_output_folders_honour_the_umask(train, tmp_path):
    old = os.umask(0o022)
    try:
        assert run("vasp", train, "-o", tmp_path / "runs").exit_code == 0
    finally:
        os.umask(old)
    assert (tmp_path / "runs").stat().st_mode & 0o777 == 0o755
