"""A stand-in for VASP: runs a classical calculator on a run folder's POSCAR and writes
``vasprun.xml`` (and ``OUTCAR``) the way VASP lays them out, so that ``collect`` is tested
on files ASE reads exactly as it reads VASP's.

The helpers are imported by test_collect.py and test_gap_command.py; the tests here check
that the stand-in files carry what they should (ASE reads back the calculator's numbers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.units import GPa

KBAR = 0.1 * GPa  # eV/A^3 per kBar


def lj_calculator():
    """A self-contained classical potential for Zr-like cells (no data files)."""
    from ase.calculators.lj import LennardJones

    return LennardJones(sigma=2.9, epsilon=0.15, rc=6.5, smooth=True)


def read_nelm(run: Path) -> int:
    """NELM from the run's INCAR (VASP's default 60 if unset)."""
    for line in (run / "INCAR").read_text().splitlines():
        key, _, val = line.partition("=")
        if key.strip().upper() == "NELM":
            return int(val.split()[0])
    return 60


def _v(row) -> str:
    return "<v>" + "".join(f" {x:16.8f}" for x in row) + " </v>"


def _crystal(atoms: Atoms) -> list[str]:
    rec = np.linalg.inv(np.asarray(atoms.cell)).T
    return (
        ["   <crystal>", '    <varray name="basis" >']
        + [f"     {_v(r)}" for r in atoms.cell]
        + [
            "    </varray>",
            f'    <i name="volume">   {atoms.get_volume():16.8f} </i>',
            '    <varray name="rec_basis" >',
        ]
        + [f"     {_v(r)}" for r in rec]
        + ["    </varray>", "   </crystal>"]
    )


def _structure(atoms: Atoms, name: str | None = None) -> list[str]:
    head = f'  <structure name="{name}" >' if name else "  <structure>"
    return (
        [head]
        + _crystal(atoms)
        + ['   <varray name="positions" >']
        + [f"    {_v(r)}" for r in atoms.get_scaled_positions()]
        + ["   </varray>", "  </structure>"]
    )


def _energy(e_fr: float, e_0: float, indent: str) -> list[str]:
    return [
        f"{indent}<energy>",
        f'{indent} <i name="e_fr_energy"> {e_fr:16.8f} </i>',
        f'{indent} <i name="e_wo_entrp"> {e_0:16.8f} </i>',
        f'{indent} <i name="e_0_energy"> {e_0:16.8f} </i>',
        f"{indent}</energy>",
    ]


def vasprun_text(
    atoms: Atoms,
    energy: float,
    forces: np.ndarray,
    stress: np.ndarray,
    nelm: int,
    n_scsteps: int,
    entropy: float = -0.002,
) -> str:
    """vasprun.xml of a single-point run, laid out as VASP 6 writes it.

    ``stress`` is ASE's (3x3, eV/A^3, tensile positive); VASP stores -stress in kBar.
    The free energy is ``energy``; sigma->0 energy is ``energy - entropy/2``-like.
    """
    e0 = energy - 0.5 * entropy
    symbols = atoms.get_chemical_symbols()
    types = list(dict.fromkeys(symbols))
    lines = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        "<modeling>",
        " <generator>",
        '  <i name="program" type="string">vasp </i>',
        '  <i name="version" type="string">6.3.2  </i>',
        " </generator>",
        " <incar>",
        '  <i type="string" name="PREC">accurate</i>',
        '  <i name="ENCUT">    600.00000000</i>',
        f'  <i type="int" name="NELM">    {nelm}</i>',
        '  <i type="int" name="ISMEAR">     1</i>',
        " </incar>",
        " <kpoints>",
        '  <generation param="Auto" >',
        '   <i name="length">     60.00000000</i>',
        '   <v type="int" name="divisions">      12       12        7 </v>',
        "  </generation>",
        '  <varray name="kpointlist" >',
        "   <v>       0.00000000       0.00000000       0.00000000 </v>",
        "  </varray>",
        '  <varray name="weights" >',
        "   <v>       1.00000000 </v>",
        "  </varray>",
        " </kpoints>",
        " <parameters>",
        '  <separator name="electronic" >',
        '   <i name="ENCUT">    600.00000000</i>',
        '   <separator name="electronic convergence" >',
        f'    <i type="int" name="NELM">    {nelm}</i>',
        '    <i name="EDIFF">      0.00000100</i>',
        "   </separator>",
        "  </separator>",
        " </parameters>",
        " <atominfo>",
        f"  <atoms>      {len(atoms)} </atoms>",
        f"  <types>       {len(types)} </types>",
        '  <array name="atoms" >',
        '   <dimension dim="1">ion</dimension>',
        '   <dimension dim="2">field</dimension>',
        '   <field type="string">element</field>',
        '   <field type="int">atomtype</field>',
        "   <set>",
    ]
    lines += [f"    <rc><c>{s:2s}</c><c>{types.index(s) + 1:4d}</c></rc>" for s in symbols]
    lines += ["   </set>", "  </array>", " </atominfo>"]
    lines += _structure(atoms, "initialpos")
    lines += [" <calculation>"]
    for k in range(n_scsteps):
        de = 10.0 ** (-k) if k < n_scsteps - 1 else 0.0
        lines += ["  <scstep>", '   <time name="dav">    0.01    0.01</time>']
        lines += _energy(energy + de, e0 + de, "   ")
        lines += ["  </scstep>"]
    lines += _structure(atoms)
    lines += ['  <varray name="forces" >'] + [f"   {_v(r)}" for r in forces] + ["  </varray>"]
    lines += ['  <varray name="stress" >'] + [f"   {_v(r)}" for r in -stress / KBAR]
    lines += ["  </varray>"]
    lines += _energy(energy, e0, "  ")
    lines += ['  <time name="totalsc">    0.10    0.10</time>', " </calculation>"]
    lines += _structure(atoms, "finalpos")
    lines += ["</modeling>"]
    return "\n".join(lines) + "\n"


def _labels(run: Path, calc=None) -> dict:
    """``run/POSCAR`` labelled by ``calc`` (default Lennard-Jones): the returned labels."""
    import ase.io

    atoms = ase.io.read(run / "POSCAR", format="vasp")
    atoms.calc = calc or lj_calculator()
    e = float(atoms.get_potential_energy())
    f, s = atoms.get_forces(), atoms.get_stress(voigt=False)
    return {"energy": e, "forces": f, "stress": s, "atoms": atoms}


def fake_vasp_run(
    run: Path, calc=None, converged: bool = True, cut_at: float | None = None
) -> dict:
    """Run ``calc`` on ``run/POSCAR`` and write ``run/vasprun.xml``; return the labels.

    ``converged=False`` uses all NELM electronic steps; ``cut_at`` (0..1) truncates the
    file at that fraction, as a killed VASP leaves it. Returned labels are in POSCAR order.
    """
    lab = _labels(run, calc)
    atoms, e, f, s = lab["atoms"], lab["energy"], lab["forces"], lab["stress"]
    nelm = read_nelm(run)
    text = vasprun_text(atoms, e, f, s, nelm, n_scsteps=9 if converged else nelm)
    if cut_at is not None:
        text = text[: int(len(text) * cut_at)]
    (run / "vasprun.xml").write_text(text)
    return lab


def outcar_text(
    atoms: Atoms,
    energy: float,
    forces: np.ndarray,
    stress: np.ndarray,
    nelm: int,
    n_elec: int,
    finished: bool = True,
) -> str:
    """An OUTCAR with the blocks ASE's reader uses, laid out as VASP 6 prints them."""
    symbols = atoms.get_chemical_symbols()
    types = list(dict.fromkeys(symbols))
    counts = [symbols.count(t) for t in types]
    out = [" vasp.6.3.2 18Jan22 (build Mar 01 2022) complex", ""]
    out += [f"   POTCAR:    PAW_PBE {t}_sv 04Jan2005" for t in types]
    out += [f"   VRHFIN ={t}: 4s4p5s4d" for t in types]
    out += [f"   TITEL  = PAW_PBE {t}_sv 04Jan2005" for t in types]
    out += [
        "",
        "   ions per type =" + "".join(f"{c:6d}" for c in counts),
        "",
        f"   NELM   =    {nelm};   NELMIN=  2; NELMDL= -5     # of ELM steps",
        "",
    ]
    out += [
        " Dimension of arrays:",
        f"   k-points           NKPTS =      1   number of ions     NIONS = {len(atoms):6d}",
        "",
    ]
    out += ["      direct lattice vectors                 reciprocal lattice vectors"]
    rec = np.linalg.inv(np.asarray(atoms.cell)).T
    for a, b in zip(atoms.cell, rec, strict=True):
        out.append(
            "   " + "".join(f"{x:13.9f}" for x in a) + "   " + "".join(f"{x:13.9f}" for x in b)
        )
    out.append("")
    for k in range(1, n_elec + 1):
        out += [
            f"----------------------------------------- Iteration      1({k:4d})  "
            "---------------------------------------",
            "",
        ]
    if n_elec < nelm:
        out += [
            "------------------------ aborting loop because EDIFF is reached "
            "----------------------------------------",
            "",
        ]
    s_kb = -stress / KBAR  # VASP's sign, kBar
    out += [
        "  FORCE on cell =-STRESS in cart. coord.  units (eV):",
        "  Direction    XX          YY          ZZ          XY          YZ          ZX",
        "  " + "-" * 86,
        "  in kB  "
        + "".join(
            f"{x:12.5f}"
            for x in (s_kb[0, 0], s_kb[1, 1], s_kb[2, 2], s_kb[0, 1], s_kb[1, 2], s_kb[0, 2])
        ),
        "",
        "",
    ]
    out += ["      direct lattice vectors                 reciprocal lattice vectors"]
    for a, b in zip(atoms.cell, rec, strict=True):
        out.append(
            "   " + "".join(f"{x:13.9f}" for x in a) + "   " + "".join(f"{x:13.9f}" for x in b)
        )
    out += [
        "",
        "",
        " POSITION                                       TOTAL-FORCE (eV/Angst)",
        " " + "-" * 83,
    ]
    for p, f in zip(atoms.positions, forces, strict=True):
        out.append(
            " " + "".join(f"{x:13.5f}" for x in p) + "    " + "".join(f"{x:14.6f}" for x in f)
        )
    out += [
        " " + "-" * 83,
        "",
        "",
        "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
        "  ---------------------------------------------------",
        f"  free  energy   TOTEN  = {energy:18.8f} eV",
        "",
        f"  energy  without entropy= {energy:18.8f}  energy(sigma->0) = {energy:18.8f}",
        "",
    ]
    if finished:
        out += [
            "",
            " General timing and accounting informations for this job:",
            " ========================================================",
            "",
            "                  Total CPU time used (sec):        1.000",
            "",
        ]
    return "\n".join(out) + "\n"


def fake_vasp_outcar(run: Path, calc=None, converged: bool = True, finished: bool = True) -> dict:
    """Like :func:`fake_vasp_run` but writes only an OUTCAR."""
    lab = _labels(run, calc)
    atoms, e, f, s = lab["atoms"], lab["energy"], lab["forces"], lab["stress"]
    nelm = read_nelm(run)
    (run / "OUTCAR").write_text(
        outcar_text(atoms, e, f, s, nelm, 9 if converged else nelm, finished)
    )
    return lab


# ---------------------------------------------------------------------------- self-checks


@pytest.fixture
def run_dir(tmp_path) -> Path:
    from ase.build import bulk

    from mlpdesign.dft.vasp import incar_settings, write_run

    atoms = bulk("Zr", "hcp", a=3.232, c=5.147)
    atoms.set_cell(
        atoms.cell.array @ np.array([[1.01, 0.02, 0], [0.02, 0.98, 0.01], [0, 0.01, 1.02]]).T,
        scale_atoms=True,
    )
    atoms.info = {"candidate_id": 3, "config_type": "hcp"}
    write_run(tmp_path / "000003", atoms, "000003", incar_settings("paper"), 60)
    return tmp_path / "000003"


@pytest.mark.parametrize("writer", ["vasprun", "outcar"])
def test_stand_in_files_read_back_through_ase(run_dir, writer):
    import ase.io

    if writer == "vasprun":
        lab = fake_vasp_run(run_dir)
        got = ase.io.read(run_dir / "vasprun.xml", format="vasp-xml", index=-1)
    else:
        lab = fake_vasp_outcar(run_dir)
        got = ase.io.read(run_dir / "OUTCAR", format="vasp-out", index=-1)
    assert got.get_chemical_symbols() == lab["atoms"].get_chemical_symbols()
    assert np.allclose(got.cell, lab["atoms"].cell, atol=1e-7)
    assert got.calc.get_property("free_energy") == pytest.approx(lab["energy"], abs=1e-7)
    assert np.allclose(got.get_forces(), lab["forces"], atol=1e-5)
    assert np.allclose(got.get_stress(voigt=False), lab["stress"], atol=1e-6)
    assert np.abs(lab["forces"]).max() > 1e-3  # the deformed hcp cell has real forces
    assert np.abs(lab["stress"]).max() > 1e-4


def make_selection(
    path: Path, pool: Path | None, ids, psi=None, pool_sha256: str | None = None
) -> Path:
    """A selection file written by the select stage's writer (format from the suffix)."""
    from mlpdesign.io.atomic import file_sha256
    from mlpdesign.io.selection import Selection, write_selection

    ids = np.asarray(ids, dtype=np.int64)
    if psi is None:
        psi = np.concatenate([[np.inf], np.linspace(1.0, 0.1, len(ids) - 1)])
    sha = pool_sha256 if pool_sha256 is not None else file_sha256(pool)
    sel = Selection(
        candidate_id=ids,
        index=ids,
        psi=np.asarray(psi, dtype=np.float64),
        attrs={
            "method": "maxmin",
            "pool_sha256": sha,
            "seed": 1,
            "n_requested": len(ids),
            "command": "test",
        },
    )
    return write_selection(path, sel)
