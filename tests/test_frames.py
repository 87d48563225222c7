"""The one reader (mlpdesign.io.frames): any file ASE reads, several inputs, ids and sources,
physical checks, isolated configurations, labels kept through write."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from clihelpers import one_line_error, run
from conftest import SMALL_GAP
from test_scale import mpirun, needs_mpi
from test_vasp_fakerun import lj_calculator, outcar_text, vasprun_text

from mlpdesign.describe.runner import DescriptorCalculator
from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import parse_gap
from mlpdesign.io.atomic import file_sha256
from mlpdesign.io.extxyz import Frame
from mlpdesign.io.frames import MIN_DISTANCE, check_frame, open_pool, pool_checksum
from mlpdesign.io.store import open_store

#: distance_2b + SOAP for Cu/Zr/H/C: small and quick
GAP2 = (
    "distance_2b cutoff=4.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=4.0 l_max=3 n_max=3 normalize=T atom_sigma=0.5 n_Z=2 Z={1 6} "
    "n_species=2 species_Z={1 6} covariance_type=dot_product zeta=4 delta=0.3"
)


def _zr_frames(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = bulk("Zr", "hcp", a=3.23, c=5.15)
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
        out.append(a)
    return out


def test_cli_inputs_default_is_the_readers():
    from mlpdesign.cli.inputs import MIN_DISTANCE as CLI_DEFAULT

    assert CLI_DEFAULT == MIN_DISTANCE == 0.5


def test_several_inputs_ids_sources_checksum_and_write_back(tmp_path, small_pool):
    """An extxyz pool with ids + a .traj without ids + a glob: one pool, ids on read,
    sources in the store, a checksum over every input, and write reads the picks back."""
    frames = ase.io.read(small_pool, index=":")
    a, md = tmp_path / "a.xyz", tmp_path / "md"
    md.mkdir()
    ase.io.write(a, frames[:30], format="extxyz")  # candidate_id 0..29
    traj = _zr_frames(4)
    for k, t in enumerate(traj):
        t.calc = SinglePointCalculator(t, energy=-8.5 - k, forces=np.full((2, 3), 0.01 * k))
    ase.io.write(md / "run1.traj", traj)
    ase.io.write(md / "run2.xyz", _zr_frames(3, seed=1), format="extxyz")
    store = tmp_path / "pool.h5"
    one = tmp_path / "one.h5"
    r = run("describe", a, md / "run1.traj", str(md / "run*.xyz"), "-o", store, "--gap", SMALL_GAP)
    assert r.exit_code == 0, r.stderr
    assert run("describe", a, "-o", one, "--gap", SMALL_GAP, "-q").exit_code == 0
    with open_store(store) as s, open_store(one) as o:
        assert s.n_configs == 37
        assert s.candidate_id.tolist() == list(range(37))  # 0..29 own, 30..36 given on read
        assert s.pool_files == [str(a), str(md / "run1.traj"), str(md / "run2.xyz")]
        assert s.source_file.tolist() == [0] * 30 + [1] * 4 + [2] * 3
        assert s.source_frame.tolist() == list(range(30)) + [0, 1, 2, 3, 0, 1, 2]
        paths = [a, md / "run1.traj", md / "run2.xyz"]
        assert s.pool_sha256 == pool_checksum(paths) != file_sha256(a)
        assert o.pool_sha256 == file_sha256(a) and o.pool_files == [str(a)]
        np.testing.assert_array_equal(s.rows(1, 0, 30), o.rows(1))  # same rows for a.xyz
    sel = tmp_path / "sel.h5"
    assert run("select", store, "-n", "8", "-o", sel, "-q").exit_code == 0
    out = tmp_path / "train.xyz"
    r = run("write", a, md / "run1.traj", str(md / "run*.xyz"), sel, "-o", out)
    assert r.exit_code == 0, r.stderr
    got = ase.io.read(out, index=":")
    with open_store(store) as s:
        picked = s.candidate_id  # ids equal positions here
    from mlpdesign.io.selection import load_selection

    ids = load_selection(sel).candidate_id.tolist()
    assert [g.info["candidate_id"] for g in got] == ids
    for g, cid in zip(got, ids, strict=True):
        c = int(np.flatnonzero(picked == cid)[0])
        ref = frames[c] if c < 30 else traj[c - 30] if c < 34 else None
        if ref is not None:
            np.testing.assert_allclose(g.positions, ref.positions, atol=1e-7)
        if 30 <= c < 34:  # the .traj frames keep their energies and forces
            assert g.get_potential_energy() == pytest.approx(-8.5 - (c - 30))
            np.testing.assert_allclose(g.get_forces(), traj[c - 30].get_forces())
    # the inputs in another order, or one missing: another pool
    r = run("write", md / "run1.traj", a, str(md / "run*.xyz"), sel, "-o", tmp_path / "x.xyz")
    assert "different pool" in one_line_error(r)
    r = run("write", a, sel, "-o", tmp_path / "x.xyz")
    assert "different pool" in one_line_error(r)


def test_duplicate_ids_and_inputs_are_refused(tmp_path, small_pool):
    r = run("describe", small_pool, small_pool, "-o", tmp_path / "p.h5")
    assert "given twice" in one_line_error(r)
    copy = tmp_path / "copy.xyz"
    copy.write_bytes(small_pool.read_bytes())
    r = run("describe", small_pool, copy, "-o", tmp_path / "p.h5")
    msg = one_line_error(r)
    assert "candidate_id 0 appears twice" in msg and "copy.xyz: frame 0" in msg
    r = run("describe", str(tmp_path / "nothing-*.xyz"), "-o", tmp_path / "p.h5")
    assert "no pool file matches" in one_line_error(r)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02 not a structure")
    assert "not a file format ASE reads" in one_line_error(run("describe", junk, "-o", "x.h5"))
    assert not (tmp_path / "p.h5").exists()


def test_isolated_molecules_rows_equal_quippy(tmp_path):
    """Plain XYZ molecules (no lattice, pbc F) are described as isolated configurations:
    the direct distance_2b path and the QUIP path give quippy's own rows."""
    mols = [molecule(m) for m in ("CH4", "C2H6", "C6H6")]
    for m in mols:
        m.rattle(0.01, seed=3)
        assert not m.pbc.any() and m.cell.rank == 0
    path = tmp_path / "mols.xyz"
    ase.io.write(path, mols, format="xyz")  # plain XYZ: no Lattice, no candidate_id
    specs = parse_gap(GAP2)
    fast, ref = DescriptorCalculator(specs), DescriptorCalculator(specs, fast=False)
    pool = open_pool(path)
    for m, fr in zip(mols, pool.frames(0, 3), strict=True):
        for (r1, w1), (r2, w2) in zip(fast.compute(fr), ref.compute(m), strict=True):
            assert r1.shape == r2.shape and r1.shape[0] > 0
            np.testing.assert_allclose(r1, r2, atol=1e-7)
            np.testing.assert_allclose(w1, w2, atol=1e-12)
    store = tmp_path / "mols.h5"
    assert run("describe", path, "-o", store, "--gap", GAP2, "-q").exit_code == 0
    with open_store(store) as s:
        assert s.candidate_id.tolist() == [0, 1, 2]
        assert s.n_atoms.tolist() == [5, 8, 12]
        d = [m.get_all_distances()[np.triu_indices(len(m), 1)] for m in mols]
        pairs = sum(2 * int((x < 4).sum()) for x in d)
        assert s.n_rows(0) == pairs


def test_isolated_direction_of_a_slab_keeps_its_distances():
    """pbc T T F with a zero third vector: completed, same pairs as a vacuum-padded cell."""
    slab = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    slab.pbc = [True, True, False]
    padded = slab.copy()
    slab.cell[2] = 0.0
    padded.cell[2] = [0, 0, 40.0]
    fr = check_frame(Frame.from_atoms(slab), "slab")
    assert np.linalg.det(fr.cell) != 0 and np.array_equal(fr.cell[:2], slab.cell[:2])
    specs = parse_gap(SMALL_GAP)
    calc = DescriptorCalculator(specs)
    for (r1, w1), (r2, w2) in zip(calc.compute(fr), calc.compute(padded), strict=True):
        np.testing.assert_allclose(r1, r2, atol=1e-10)
        np.testing.assert_allclose(w1, w2, atol=1e-12)


def _frame_text(cell: str, atoms: list[str], pbc: str = "T T T") -> str:
    head = f'Lattice="{cell}" Properties=species:S:1:pos:R:3 pbc="{pbc}"'
    return f"{len(atoms)}\n{head}\n" + "\n".join(atoms) + "\n"


GOOD = _frame_text("3.2 0 0 0 3.2 0 0 0 5.1", ["Zr 0 0 0", "Zr 1.6 1.6 2.5"])


@pytest.mark.parametrize(
    "bad, message",
    [
        (_frame_text("3.2 0 0 0 3.2 0 0 0 5.1", ["Zr 0 0 0", "Zr nan 1 1"]), "non-finite"),
        (_frame_text("3.2 0 0 0 3.2 0 0 0 inf", ["Zr 0 0 0"]), "cell holds a non-finite"),
        (_frame_text("3.2 0 0 0 3.2 0 0 0 5.1", ["Zr 0 0 0", "Zr 0 0 0"]), "atoms 0 and 1 are 0"),
        (_frame_text("0.3 0 0 0 3.2 0 0 0 5.1", ["Zr 0 0 0"]), "its own periodic image"),
        (_frame_text("3.2 0 0 3.2 0 0 0 0 5.1", ["Zr 0 0 0"]), "linearly dependent"),
        (_frame_text("0 0 0 0 0 0 0 0 0", ["Zr 0 0 0"]), "cell vector 1 is zero but periodic"),
    ],
)
def test_unphysical_frames_are_one_line_before_any_work(tmp_path, bad, message):
    pool = tmp_path / "bad.xyz"
    pool.write_text(GOOD * 3 + bad + GOOD)
    out = tmp_path / "out.h5"
    msg = one_line_error(run("describe", pool, "-o", out, "--gap", SMALL_GAP, "--chunk-size", "1"))
    assert "bad.xyz: frame 3: " in msg and message in msg, msg
    assert not out.exists() and not (tmp_path / "out.h5.partial").exists()


def test_min_distance_option(tmp_path):
    pool = tmp_path / "close.xyz"
    pool.write_text(_frame_text("6 0 0 0 6 0 0 0 6", ["Zr 0 0 0", "Zr 1.2 0 0"]))
    out = tmp_path / "o.h5"
    assert "closer than --min-distance 1.5 A" in one_line_error(
        run("describe", pool, "-o", out, "--gap", SMALL_GAP, "--min-distance", "1.5")
    )
    assert run("describe", pool, "-o", out, "--gap", SMALL_GAP, "-q").exit_code == 0
    with open_store(out) as s:
        assert "--min-distance" not in s.attrs["command"]
    with pytest.raises(MlpdesignError, match="--min-distance must be"):
        open_pool(pool, min_distance=-1)


def test_structure_labels_kept_at_full_length(tmp_path):
    frames = _zr_frames(4)
    for k, a in enumerate(frames):
        a.info["structure"] = ["hcp_bulk_300K", "hcp_bulk_1500K"][k % 2]
    pool = tmp_path / "md.xyz"
    ase.io.write(pool, frames, format="extxyz")
    store = tmp_path / "md.h5"
    assert run("describe", pool, "-o", store, "--gap", SMALL_GAP, "-q").exit_code == 0
    with open_store(store) as s:
        assert [x.decode() for x in s.structure] == ["hcp_bulk_300K", "hcp_bulk_1500K"] * 2
    parts = [tmp_path / f"part{i}.h5" for i in (1, 2)]
    for i, p in enumerate(parts, 1):
        r = run("describe", pool, "-o", p, "--gap", SMALL_GAP, "--shard", f"{i}/2", "-q")
        assert r.exit_code == 0, r.stderr
    assert run("merge", *parts, "-o", tmp_path / "merged.h5", "-q").exit_code == 0
    from mlpdesign.io.store import stores_equal

    assert stores_equal(store, tmp_path / "merged.h5") == []


@pytest.mark.parametrize("name", ["vasprun.xml", "OUTCAR"])
def test_vasp_outputs_are_inputs_and_keep_their_labels(tmp_path, name):
    """VASP outputs are pool inputs too: their energy and forces come back on write."""
    atoms = bulk("Zr", "hcp", a=3.23, c=5.15).repeat((1, 1, 2))
    atoms.rattle(0.03, seed=2)
    atoms.calc = lj_calculator()
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    src = tmp_path / "run" / name
    src.parent.mkdir()
    text = (
        vasprun_text(atoms, e, f, s, 60, n_scsteps=9)
        if name == "vasprun.xml"
        else outcar_text(atoms, e, f, s, 60, 9)
    )
    src.write_text(text)
    want = ase.io.read(src)
    store, sel = tmp_path / "v.h5", tmp_path / "sel.h5"
    r = run("describe", src, "-o", store, "--gap", SMALL_GAP, "-q")
    assert r.exit_code == 0, r.stderr
    assert run("select", store, "-n", "1", "-o", sel, "-q").exit_code == 0
    out = tmp_path / "t.xyz"
    assert run("write", src, sel, "-o", out, "-q").exit_code == 0
    (got,) = ase.io.read(out, index=":")
    assert got.info["candidate_id"] == 0
    assert got.get_potential_energy() == pytest.approx(want.get_potential_energy(), abs=1e-7)
    np.testing.assert_allclose(got.get_forces(), want.get_forces(), atol=1e-7)
    np.testing.assert_allclose(got.get_forces(), f, atol=1e-5)


def test_given_set_in_any_ase_format(tmp_path, small_store, small_pool):
    """select --given takes a .traj (described through the same reader)."""
    given = ase.io.read(small_pool, index=":3")
    for a in given:
        a.info.pop("candidate_id")
    ase.io.write(tmp_path / "given.traj", given)
    sel = tmp_path / "sel.h5"
    r = run("select", small_store, "-n", "5", "--given", tmp_path / "given.traj", "-o", sel, "-q")
    assert r.exit_code == 0, r.stderr
    from mlpdesign.io.selection import load_selection

    ids = load_selection(sel).candidate_id.tolist()
    assert len(ids) == 5 and not {0, 1, 2} & set(ids)  # the given frames are not picked again


@needs_mpi
def test_several_inputs_under_mpi_equal_the_serial_store(tmp_path, small_pool):
    """mpiexec describe of an extxyz + a .traj: ASE must not read in its MPI mode (rank 0
    reads alone), and the store equals the serial one."""
    from mlpdesign.io.store import stores_equal

    frames = ase.io.read(small_pool, index=":8")
    for a in frames:
        a.info.pop("candidate_id")
    ase.io.write(tmp_path / "b.traj", frames)
    ins = [small_pool, tmp_path / "b.traj"]
    assert run("describe", *ins, "-o", tmp_path / "s.h5", "--gap", SMALL_GAP).exit_code == 0
    mpirun(2, "describe", *ins, "-o", tmp_path / "m.h5", "--gap", SMALL_GAP, "-q")
    assert stores_equal(tmp_path / "s.h5", tmp_path / "m.h5") == []


@pytest.mark.parametrize("command", ["vasp", "label", "select-given", "write"])
def test_every_reader_refuses_unphysical_frames(tmp_path, small_store, small_pool, command):
    """NaN positions never reach POSCAR, a calculator, a given set or a training file."""
    frames = ase.io.read(small_pool, index=":3")
    frames[2].positions[0] = np.nan
    bad = tmp_path / "bad.xyz"
    ase.io.write(bad, frames, format="extxyz")
    out = tmp_path / "out"
    args = {
        "vasp": ["vasp", bad, "-o", out],
        "label": ["label", bad, "--calculator", "ase.calculators.emt:EMT", "-o", out],
        "select-given": ["select", small_store, "-n", "2", "--given", bad, "-o", out],
        "write": ["write", bad, tmp_path / "sel.h5", "-o", out],
    }[command]
    if command == "write":
        from test_vasp_fakerun import make_selection

        make_selection(tmp_path / "sel.h5", bad, [2])
    msg = one_line_error(run(*args))
    assert "bad.xyz: frame 2: atom 0 has a non-finite position" in msg, msg
    assert not out.exists()
