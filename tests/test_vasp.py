"""``vasp``: run directories with POSCAR, INCAR, KPOINTS (and POTCAR) through ASE's writers."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from click.testing import CliRunner

from mlpdesign.cli import cli
from mlpdesign.dft.vasp import (
    PRESETS,
    incar_settings,
    parse_incar_overrides,
    read_sort_file,
    species_sort,
    write_vasp_inputs,
)
from mlpdesign.errors import MlpdesignError


def read_incar(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


@pytest.fixture
def train(tmp_path, small_pool) -> Path:
    frames = ase.io.read(small_pool, index=":5")
    for r, a in enumerate(frames):
        a.info["selection_rank"] = r
    path = tmp_path / "train.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_paper_preset_run_folders(tmp_path, train, monkeypatch):
    monkeypatch.delenv("VASP_PP_PATH", raising=False)
    res = write_vasp_inputs(train, tmp_path / "runs")
    frames = ase.io.read(train, index=":")
    names = [f"{int(a.info['candidate_id']):06d}" for a in frames]
    assert res.runs == names and not res.potcar
    assert (tmp_path / "runs" / "runs.txt").read_text().split() == names
    slurm = (tmp_path / "runs" / "submit.slurm").read_text()
    assert "#SBATCH --array=1-5" in slurm and "runs.txt" in slurm
    for a, name in zip(frames, names, strict=True):
        d = tmp_path / "runs" / name
        assert sorted(p.name for p in d.iterdir()) == [
            "INCAR",
            "KPOINTS",
            "POSCAR",
            "ase-sort.dat",
            "input.xyz",
        ]
        incar = read_incar(d / "INCAR")
        assert incar["ENCUT"] == "600" and incar["ISMEAR"] == "1"
        assert (incar["NSW"], incar["IBRION"], incar["ISIF"]) == ("0", "-1", "2")
        assert incar["SYSTEM"] == f"mlpdesign {name}"
        kp = (d / "KPOINTS").read_text().splitlines()
        assert kp[1:4] == ["0", "Auto", "60"]  # VASP's fully automatic mesh, length 60
        pos = ase.io.read(d / "POSCAR", format="vasp")
        assert np.allclose(pos.cell.array, a.cell.array, atol=1e-12)
        assert np.allclose(pos.positions, a.positions, atol=1e-10)
        sent = ase.io.read(d / "input.xyz")
        assert set(sent.info) == set(a.info)
        for k, v in a.info.items():
            assert np.array_equal(np.asarray(sent.info[k]), np.asarray(v)), k


def test_incar_overrides_and_removal(tmp_path, train):
    res = write_vasp_inputs(
        train,
        tmp_path / "runs",
        incar=["encut=500", "LREAL=", "lwave=T", "NCORE=4"],
        kpoints_length=40,
    )
    incar = read_incar(tmp_path / "runs" / res.runs[0] / "INCAR")
    assert incar["ENCUT"] == "500" and "LREAL" not in incar
    assert incar["LWAVE"] == ".TRUE." and incar["NCORE"] == "4"
    assert (tmp_path / "runs" / res.runs[0] / "KPOINTS").read_text().splitlines()[3] == "40"
    assert res.warnings == []


@pytest.mark.parametrize(
    "item, msg",
    [
        ("ENCUT", "expected KEY=VALUE"),
        ("1X=2", "expected KEY=VALUE"),
        ("NSW=zero", "expected an integer"),
        ("ENCUT=lots", "expected a number"),
        ("LWAVE=maybe", ".TRUE. or .FALSE."),
        ("ENCUT=500 # c", "comment"),
    ],
)
def test_bad_incar_overrides(item, msg):
    with pytest.raises(MlpdesignError, match=msg):
        parse_incar_overrides([item])


def test_unknown_incar_key_warns_and_duplicates_refused():
    got, warn = parse_incar_overrides(["MYTAG=3"])
    assert got == {"MYTAG": "3"} and "MYTAG" in warn[0]
    with pytest.raises(MlpdesignError, match="given twice"):
        parse_incar_overrides(["ENCUT=1", "encut=2"])
    with pytest.raises(MlpdesignError, match="unknown preset"):
        incar_settings("fast")
    assert incar_settings("paper", {"ISMEAR": "0"})["ISMEAR"] == "0"
    assert PRESETS["paper"]["ISMEAR"] == "1"  # the preset itself is not modified


def test_mixed_species_are_grouped_and_mapped_back(tmp_path):
    a = bulk("Zr", "hcp", a=3.2, c=5.1).repeat((1, 1, 2))
    a.symbols[1] = "Ti"
    a.symbols[3] = "Ti"
    a.info["candidate_id"] = 12
    assert a.get_chemical_symbols() == ["Zr", "Ti", "Zr", "Ti"]
    path = tmp_path / "mixed.xyz"
    ase.io.write(path, a, format="extxyz")
    write_vasp_inputs(path, tmp_path / "runs")
    d = tmp_path / "runs" / "000012"
    pos = ase.io.read(d / "POSCAR", format="vasp")
    assert pos.get_chemical_symbols() == ["Zr", "Zr", "Ti", "Ti"]
    sort, resort = read_sort_file(d / "ase-sort.dat")
    assert sort.tolist() == [0, 2, 1, 3]
    assert np.allclose(pos[resort].positions, a.positions)
    assert species_sort(a)[0].tolist() == sort.tolist()


def test_potcar_only_with_vasp_pp_path(tmp_path, train, monkeypatch):
    pp = tmp_path / "pp"
    (pp / "potpaw_PBE" / "Zr_sv").mkdir(parents=True)
    (pp / "potpaw_PBE" / "Zr_sv" / "POTCAR").write_text("  PAW_PBE Zr_sv 04Jan2005\n fake\n")
    monkeypatch.setenv("VASP_PP_PATH", str(pp))
    res = write_vasp_inputs(train, tmp_path / "runs")
    assert res.potcar
    for name in res.runs:
        assert (tmp_path / "runs" / name / "POTCAR").read_text().startswith("  PAW_PBE Zr_sv")
    # no Zr_sv_GW POTCAR: one clear line, nothing written
    with pytest.raises(MlpdesignError, match=r"no POTCAR for Zr.*setups=GW.*Zr_sv_GW"):
        write_vasp_inputs(train, tmp_path / "runs2", setups="GW")
    assert not (tmp_path / "runs2").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".runs2")] == []


def test_bad_inputs(tmp_path, train):
    with pytest.raises(MlpdesignError, match="no such configuration file"):
        write_vasp_inputs(tmp_path / "nope.xyz", tmp_path / "runs")
    (tmp_path / "runs").mkdir()
    with pytest.raises(MlpdesignError, match="exists"):
        write_vasp_inputs(train, tmp_path / "runs")
    dup = ase.io.read(train, index=":2")
    dup[1].info["candidate_id"] = dup[0].info["candidate_id"]
    ase.io.write(tmp_path / "dup.xyz", dup, format="extxyz")
    with pytest.raises(MlpdesignError, match="occurs twice"):
        write_vasp_inputs(tmp_path / "dup.xyz", tmp_path / "r2")
    mol = Atoms("Zr2", positions=[[0, 0, 0], [0, 0, 3]])
    ase.io.write(tmp_path / "mol.xyz", mol, format="extxyz")
    with pytest.raises(MlpdesignError, match="not a periodic 3-D cell"):
        write_vasp_inputs(tmp_path / "mol.xyz", tmp_path / "r3")
    (tmp_path / "junk.xyz").write_text("this is not\nan xyz file\n")
    with pytest.raises(MlpdesignError, match="junk.xyz: line 1: expected the number of atoms"):
        write_vasp_inputs(tmp_path / "junk.xyz", tmp_path / "r4")
    with pytest.raises(MlpdesignError, match="kpoints-length"):
        write_vasp_inputs(train, tmp_path / "r5", kpoints_length=0)


def test_frames_without_ids_are_numbered(tmp_path):
    frames = [bulk("Zr", "hcp", a=3.2, c=5.1), bulk("Zr", "bcc", a=3.5)]
    ase.io.write(tmp_path / "x.xyz", frames, format="extxyz")
    res = write_vasp_inputs(tmp_path / "x.xyz", tmp_path / "runs")
    assert res.runs == ["frame-000000", "frame-000001"]


def test_cli_vasp(tmp_path, train, monkeypatch):
    monkeypatch.delenv("VASP_PP_PATH", raising=False)
    runner = CliRunner()
    r = runner.invoke(
        cli,
        [
            "vasp",
            str(train),
            "-o",
            str(tmp_path / "runs"),
            "--incar",
            "ENCUT=520",
            "--incar",
            "MYTAG=1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "wrote 5 VASP runs" in r.stderr and "without POTCAR" in r.stderr
    assert "warning: INCAR key MYTAG" in r.stderr
    r = runner.invoke(cli, ["vasp", str(train), "-o", str(tmp_path / "r2"), "--incar", "NSW=x"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "expected an integer" in r.stderr
    assert not (tmp_path / "r2").exists()
    r = runner.invoke(cli, ["vasp", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output
