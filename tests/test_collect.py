"""``collect``: VASP outputs (stand-ins written by a real calculator) back to a training set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from click.testing import CliRunner
from test_vasp_fakerun import fake_vasp_outcar, fake_vasp_run, lj_calculator, make_selection

from mlpdesign.cli import cli
from mlpdesign.dft.collect import collect, collect_runs, find_runs
from mlpdesign.dft.vasp import write_vasp_inputs
from mlpdesign.errors import MlpdesignError, PartialFailure
from mlpdesign.gap.label import read_labelled

IDS = [17, 3, 38, 0, 25, 9, 31, 12]


@pytest.fixture
def runs(tmp_path, small_pool) -> Path:
    """write -> vasp for 8 picks of the small pool: the run folder and the train file."""
    from mlpdesign.io.write import write_training_set

    sel = make_selection(tmp_path / "sel.h5", small_pool, IDS)
    write_training_set(small_pool, sel, tmp_path / "train.xyz")
    write_vasp_inputs(tmp_path / "train.xyz", tmp_path / "runs")
    return tmp_path / "runs"


def run_all(runs: Path, skip=()) -> None:
    for name in (runs / "runs.txt").read_text().split():
        if name not in skip:
            fake_vasp_run(runs / name)


def expected_labels(train: Path) -> list[dict]:
    """Energy, forces and virial of each configuration, straight from the calculator."""
    out = []
    for a in ase.io.read(train, index=":"):
        a.calc = lj_calculator()
        out.append(
            {
                "energy": a.get_potential_energy(),
                "forces": a.get_forces(),
                "virial": -a.get_stress(voigt=False) * a.get_volume(),
                "atoms": a,
            }
        )
    return out


def test_round_trip_write_vasp_collect(tmp_path, runs):
    run_all(runs)
    res = collect([runs], tmp_path / "labelled.xyz")
    assert res.written == len(IDS) and res.failed == []
    got = ase.io.read(tmp_path / "labelled.xyz", index=":")
    want = expected_labels(tmp_path / "train.xyz")
    assert [int(a.info["candidate_id"]) for a in got] == IDS  # selection order
    for g, w in zip(got, want, strict=True):
        assert g.calc is None  # labels stay in info/arrays, not in a calculator
        assert g.get_chemical_symbols() == w["atoms"].get_chemical_symbols()
        assert np.array_equal(g.cell.array, w["atoms"].cell.array)
        assert np.array_equal(g.positions, w["atoms"].positions)
        assert g.info["dft_energy"] == pytest.approx(w["energy"], abs=2e-8)
        assert np.allclose(g.arrays["dft_forces"], w["forces"], atol=2e-8)
        assert np.shape(g.info["dft_virial"]) == (9,)
        # vasprun.xml holds stress in kBar with 8 decimals: ~1e-8 kBar * volume
        assert np.allclose(np.reshape(g.info["dft_virial"], (3, 3)), w["virial"], atol=1e-9)
        for key in (
            "candidate_id",
            "config_type",
            "structure",
            "selection_rank",
            "min_distance",
            "strain_eigenvalues",
        ):
            assert np.array_equal(np.asarray(g.info[key]), np.asarray(w["atoms"].info[key]))
        assert np.allclose(g.info["F"], w["atoms"].info["F"]) and np.shape(g.info["F"]) == (9,)
    # the shared reader of labelled sets accepts it
    assert len(read_labelled(tmp_path / "labelled.xyz", need_forces=True)) == len(IDS)


def test_virial_sign_is_minus_stress_times_volume(tmp_path):
    """A compressed cell pushes outwards: ASE stress < 0, virial > 0 (QUIP's convention)."""
    a = bulk("Zr", "fcc", a=4.2)
    a.info["candidate_id"] = 1
    a.set_cell(a.cell * 0.97, scale_atoms=True)
    ase.io.write(tmp_path / "c.xyz", a, format="extxyz")
    write_vasp_inputs(tmp_path / "c.xyz", tmp_path / "runs")
    lab = fake_vasp_run(tmp_path / "runs" / "000001")
    assert np.all(np.diag(lab["stress"]) < 0)
    text = (tmp_path / "runs" / "000001" / "vasprun.xml").read_text()
    stress_block = text.split('<varray name="stress" >')[1].split("</varray>")[0]
    assert float(stress_block.split()[1]) > 0  # VASP's own sign: positive under compression
    (r,) = collect_runs([tmp_path / "runs"])
    v = np.reshape(r.atoms.info["dft_virial"], (3, 3))
    assert np.all(np.diag(v) > 0)
    assert np.allclose(v, -lab["stress"] * a.get_volume(), atol=1e-9)


def test_mixed_species_forces_follow_input_order(tmp_path):
    a = bulk("Zr", "hcp", a=3.2, c=5.1).repeat((1, 1, 2))
    a.symbols[1] = "Ti"
    a.symbols[2] = "Ti"
    a.positions[0] += [0.05, -0.03, 0.02]
    a.info["candidate_id"] = 4
    ase.io.write(tmp_path / "m.xyz", a, format="extxyz")
    write_vasp_inputs(tmp_path / "m.xyz", tmp_path / "runs")
    fake_vasp_run(tmp_path / "runs" / "000004")
    (r,) = collect_runs([tmp_path / "runs"])
    ref = a.copy()
    ref.calc = lj_calculator()
    assert r.atoms.get_chemical_symbols() == ["Zr", "Ti", "Ti", "Zr"]
    assert np.allclose(r.atoms.arrays["dft_forces"], ref.get_forces(), atol=2e-8)
    assert np.abs(ref.get_forces()).max() > 1e-3


def test_outcar_only_run(tmp_path, runs):
    run_all(runs)
    name = (runs / "runs.txt").read_text().split()[1]
    (runs / name / "vasprun.xml").unlink()
    lab = fake_vasp_outcar(runs / name)
    results = {r.name: r for r in collect_runs([runs])}
    got = results[name].atoms
    assert got is not None, results[name].reason
    assert got.info["dft_energy"] == pytest.approx(lab["energy"], abs=1e-7)
    assert np.allclose(got.arrays["dft_forces"], lab["forces"], atol=1e-5)
    assert np.allclose(
        np.reshape(got.info["dft_virial"], (3, 3)), -lab["stress"] * got.get_volume(), atol=1e-5
    )


def test_failed_runs_are_listed_and_nothing_is_written(tmp_path, runs):
    names = (runs / "runs.txt").read_text().split()
    run_all(runs, skip=names[:7])
    fake_vasp_run(runs / names[0], converged=False)  # all NELM electronic steps used
    fake_vasp_run(runs / names[1], cut_at=0.7)  # killed while writing
    # names[2]: never ran
    (runs / names[3] / "vasprun.xml").write_text("")  # crashed at start
    fake_vasp_run(runs / names[4])
    text = (runs / names[4] / "vasprun.xml").read_text()
    (runs / names[4] / "vasprun.xml").write_text(text.replace("</calculation>", "</calc>"))
    fake_vasp_outcar(runs / names[5], finished=False)  # OUTCAR of a crashed run
    shutil.rmtree(runs / names[6])  # directory gone
    results = {r.name: r for r in collect_runs([runs])}
    reasons = {n: results[n].reason for n in names}
    assert "not electronically converged" in reasons[names[0]]
    assert "NELM=100" in reasons[names[0]]
    assert "cut off mid-write" in reasons[names[1]]
    assert "no vasprun.xml or OUTCAR" in reasons[names[2]]
    assert "empty" in reasons[names[3]]
    assert "not valid XML" in reasons[names[4]]
    assert "OUTCAR is incomplete" in reasons[names[5]]
    assert "missing" in reasons[names[6]]
    assert reasons[names[7]] == "" and results[names[7]].atoms is not None
    assert all("\n" not in r for r in reasons.values())
    with pytest.raises(PartialFailure, match="7 of 8 runs failed"):
        collect([runs], tmp_path / "labelled.xyz")
    assert not (tmp_path / "labelled.xyz").exists()
    res = collect([runs], tmp_path / "labelled.xyz", allow_failed=True)
    assert res.written == 1 and len(res.failed) == 7
    (only,) = ase.io.read(tmp_path / "labelled.xyz", index=":")
    assert f"{int(only.info['candidate_id']):06d}" == names[7]


def test_unconverged_outcar(tmp_path, runs):
    name = (runs / "runs.txt").read_text().split()[0]
    fake_vasp_outcar(runs / name, converged=False)
    r = {x.name: x for x in collect_runs([runs])}[name]
    assert "not electronically converged" in r.reason


def test_results_of_another_structure_are_refused(tmp_path, runs):
    a, b = (runs / "runs.txt").read_text().split()[:2]
    fake_vasp_run(runs / b)
    shutil.copy(runs / b / "vasprun.xml", runs / a / "vasprun.xml")
    r = {x.name: x for x in collect_runs([runs])}[a]
    assert "differs from input.xyz" in r.reason


def _unreadable(monkeypatch, path: Path) -> None:
    """Make ``path`` unreadable: by permissions, and for root (who reads anything) by
    making the permission check report what it would for another user."""
    os.chmod(path, 0)
    if os.geteuid() == 0:
        import mlpdesign.dft.collect as vo

        real = os.access
        monkeypatch.setattr(
            vo.os,
            "access",
            lambda p, mode, *a, **k: False if Path(p) == path else real(p, mode, *a, **k),
        )


def test_unreadable_run_directory(tmp_path, runs, monkeypatch):
    run_all(runs)
    name = (runs / "runs.txt").read_text().split()[0]
    _unreadable(monkeypatch, runs / name)
    try:
        r = {x.name: x for x in collect_runs([runs])}[name]
        assert "run folder not readable" in r.reason
        # the run folder itself given: one clear line, exit 2
        res = CliRunner().invoke(cli, ["collect", str(runs / name), "-o", str(tmp_path / "x.xyz")])
        assert res.exit_code == 2
        assert res.stderr == f"mlpdesign: error: {runs / name}: folder not readable\n"
    finally:
        os.chmod(runs / name, 0o755)
    assert not (tmp_path / "x.xyz").exists()


def test_energy_choice(tmp_path, runs):
    run_all(runs)
    free = collect_runs([runs])[0].atoms.info["dft_energy"]
    sigma0 = collect_runs([runs], energy="sigma0")[0].atoms.info["dft_energy"]
    assert sigma0 == pytest.approx(free + 0.001, abs=1e-7)  # stand-in's entropy term
    with pytest.raises(MlpdesignError, match="unknown energy"):
        collect_runs([runs], energy="total")


def test_finding_runs(tmp_path, runs):
    run_all(runs)
    names = (runs / "runs.txt").read_text().split()
    one = find_runs([runs / names[0]])
    assert one == [(str(runs / names[0]), runs / names[0])]
    assert find_runs([runs / names[0] / "vasprun.xml"]) == one  # the run by its output file
    (runs / "runs.txt").unlink()  # without the list: sub-folders that look like runs
    assert [n for n, _ in find_runs([runs])] == sorted(names)
    with pytest.raises(MlpdesignError, match="no such folder"):
        find_runs([tmp_path / "nope"])
    with pytest.raises(MlpdesignError, match="not a folder"):
        find_runs([tmp_path / "train.xyz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MlpdesignError, match="neither a VASP run nor a folder of runs"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(MlpdesignError, match="given twice"):
        find_runs([runs, runs / names[0]])


def test_cli_collect(tmp_path, runs):
    runner = CliRunner()
    names = (runs / "runs.txt").read_text().split()
    run_all(runs, skip=names[:1])
    fake_vasp_run(runs / names[0], cut_at=0.5)
    out = tmp_path / "labelled.xyz"
    r = runner.invoke(cli, ["collect", str(runs), "-o", str(out), "-q"])
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[0] == (
        f"mlpdesign: failed run {names[0]}: vasprun.xml is cut off mid-write "
        "(no closing </modeling>): VASP was killed or is still running"
    )
    assert lines[1].startswith("mlpdesign: error: 1 of 8 runs failed") and len(lines) == 2
    assert not out.exists()
    r = runner.invoke(cli, ["collect", str(runs), "-o", str(out), "--allow-failed"])
    assert r.exit_code == 0, r.output
    assert f"wrote 7 of 8 runs to {out}; 1 failed runs left out" in r.stderr
    assert len(ase.io.read(out, index=":")) == 7
    r = runner.invoke(cli, ["collect", str(tmp_path / "nope"), "-o", str(tmp_path / "x.xyz")])
    assert r.exit_code == 2
    assert r.stderr == f"mlpdesign: error: {tmp_path / 'nope'}: no such folder\n"
    r = runner.invoke(cli, ["collect", str(runs), "-o", str(out)])
    assert r.exit_code == 2 and "exists" in r.stderr
    r = runner.invoke(cli, ["collect", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output
