"""generate: pinned output, deformation statistics, chunking, bad input."""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import pytest
from ase.io import read
from clihelpers import run
from scipy import stats

from mlpdesign.generate.pool import (
    PoolSpec,
    deformation_of,
    format_candidates,
    generate,
    iter_candidates,
    lattice_for,
    shard_range,
    write_frames,
)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pinned_small_pool(tmp_path):
    out = tmp_path / "pool.xyz"
    r = run("generate", "-n", 6, "--seed", 1, "-o", out, "-q")
    assert r.exit_code == 0, r.output
    frames = read(out, ":")
    assert [a.info["candidate_id"] for a in frames] == list(range(6))
    assert [a.info["structure"] for a in frames] == ["bcc", "fcc", "hcp", "hcp", "fcc", "hcp"]
    assert [len(a) for a in frames] == [1, 1, 2, 2, 1, 2]
    np.testing.assert_allclose(
        frames[0].info["strain_eigenvalues"],
        [0.9674335521373095, 1.0145118532197295, 0.9820202386599737],
        rtol=0,
        atol=1e-15,
    )
    np.testing.assert_allclose(
        frames[0].cell.array[0],
        [-1.837394104376605, 1.8084937107094816, 1.8232558757226525],
        rtol=0,
        atol=1e-15,
    )
    assert sha(out) == "acd1e7d92bb968da6285edf2685b3cabf2944b9133e4a3e4832800aa4843b880"


def test_deformation_is_symmetric_with_bounded_eigenvalues(tmp_path):
    spec = PoolSpec(seed=3, eig_min=0.9, eig_max=1.08)
    for atoms in iter_candidates(spec, 0, 300):
        f = deformation_of(atoms)
        np.testing.assert_array_equal(f, f.T)
        lam = np.asarray(atoms.info["strain_eigenvalues"])
        assert np.all((lam >= 0.9) & (lam <= 1.08))
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(f)), np.sort(lam), atol=1e-13)
        ref = {"hcp": 2, "fcc": 1, "bcc": 1}[atoms.info["structure"]]
        assert len(atoms) == ref
        assert atoms.info["config_type"] == atoms.info["structure"]


def test_new_cell_is_cell_times_F_transpose():
    spec = PoolSpec(seed=11, structures={"hcp": 1.0})
    lat = spec.lattice
    from ase.build import bulk

    ref = bulk("Zr", "hcp", a=lat.hcp_a, c=lat.hcp_c)
    for atoms in iter_candidates(spec, 0, 20):
        f = deformation_of(atoms)
        np.testing.assert_allclose(atoms.cell.array, ref.cell.array @ f.T, atol=1e-14)
        np.testing.assert_allclose(
            atoms.get_scaled_positions(wrap=False), ref.get_scaled_positions(wrap=False), atol=1e-12
        )


def test_rotations_are_uniform_on_so3():
    """Eigenvectors of F are the columns of R: for Haar R each is uniform on the sphere,
    so every |component| of a unit eigenvector is uniform on [0, 1] (Archimedes)."""
    spec = PoolSpec(seed=5, eig_min=0.9, eig_max=1.1)
    comps = []
    for atoms in iter_candidates(spec, 0, 3000):
        w, v = np.linalg.eigh(deformation_of(atoms))
        comps.append(np.abs(v[:, 2]))  # eigenvector of the largest eigenvalue
    comps = np.array(comps)
    for k in range(3):
        assert stats.kstest(comps[:, k], "uniform").pvalue > 1e-3
    # and the eigenvalues are uniform within the bounds
    lam = np.concatenate([a.info["strain_eigenvalues"] for a in iter_candidates(spec, 0, 1000)])
    assert stats.kstest(lam, "uniform", args=(0.9, 0.2)).pvalue > 1e-3


def test_structure_weights_are_respected():
    spec = PoolSpec(seed=2, structures={"hcp": 0.5, "fcc": 0.25, "bcc": 0.25})
    names = [a.info["structure"] for a in iter_candidates(spec, 0, 4000)]
    counts = np.array([names.count(k) for k in ("hcp", "fcc", "bcc")])
    assert stats.chisquare(counts, [2000, 1000, 1000]).pvalue > 1e-3


def test_same_atomic_volume_for_all_structures():
    lat = lattice_for("Zr")
    spec = PoolSpec(eig_min=1.0, eig_max=1.0)
    vols = {}
    for atoms in iter_candidates(spec, 0, 60):
        vols.setdefault(atoms.info["structure"], []).append(atoms.get_volume() / len(atoms))
    assert set(vols) == {"hcp", "fcc", "bcc"}
    for v in vols.values():
        np.testing.assert_allclose(v, lat.atomic_volume, rtol=1e-12)
    assert math.isclose(lat.hcp_a, 3.232) and math.isclose(lat.hcp_c, 5.147)


@pytest.mark.parametrize(
    "spec",
    [
        PoolSpec(seed=4),
        PoolSpec(seed=9, supercell=(2, 1, 2)),
        PoolSpec(element="Ti", lattice=lattice_for("Ti")),
    ],
)
def test_fast_writer_matches_ase_writer_byte_for_byte(spec):
    buf = io.StringIO()
    write_frames(buf, iter_candidates(spec, 17, 200))
    assert format_candidates(spec, 17, 200) == buf.getvalue()


def test_chunked_generation_equals_one_go(tmp_path):
    one = tmp_path / "one.xyz"
    assert run("generate", "-n", 50, "--seed", 4, "-o", one, "-q").exit_code == 0
    parts = []
    for s, c in [(0, 13), (13, 20), (33, 17)]:
        p = tmp_path / f"part{s}.xyz"
        r = run("generate", "-n", 50, "--seed", 4, "--start", s, "--count", c, "-o", p, "-q")
        assert r.exit_code == 0, r.stderr
        parts.append(p.read_bytes())
    assert b"".join(parts) == one.read_bytes()
    shards = []
    for i in range(1, 4):
        p = tmp_path / f"shard{i}.xyz"
        assert (
            run("generate", "-n", 50, "--seed", 4, "--shard", f"{i}/3", "-o", p, "-q").exit_code
            == 0
        )
        shards.append(p.read_bytes())
    assert b"".join(shards) == one.read_bytes()


def test_shard_ranges_cover_exactly():
    for n in (1, 7, 100, 1001):
        for k in (1, 2, 3, 16):
            ranges = [shard_range(n, i, k) for i in range(1, k + 1)]
            assert sum(c for _, c in ranges) == n
            assert all(ranges[i][0] + ranges[i][1] == ranges[i + 1][0] for i in range(k - 1))


def test_library_generate_matches_cli(tmp_path):
    a, b = tmp_path / "a.xyz", tmp_path / "b.xyz"
    generate(a, 30, PoolSpec(seed=8))
    assert run("generate", "-n", 30, "--seed", 8, "-o", b, "-q").exit_code == 0
    assert a.read_bytes() == b.read_bytes()


def test_existing_output_refused_without_force(tmp_path):
    out = tmp_path / "pool.xyz"
    out.write_text("keep me")
    r = run("generate", "-n", 5, "-o", out)
    assert r.exit_code == 2
    assert "exists" in r.stderr and "--force" in r.stderr
    assert out.read_text() == "keep me"
    assert run("generate", "-n", 5, "-o", out, "--force", "-q").exit_code == 0
    assert len(read(out, ":")) == 5


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--structures", "hcp,diamond"], "unknown structure"),
        (["--element", "Xx"], "unknown element"),
        (["--max-strain", "-0.1"], "--max-strain"),
        (["--max-strain", "1"], "--max-strain"),
        (["--max-strain", "1.5"], "--max-strain"),
        (["--min-eigenvalue", "1.2", "--max-eigenvalue", "1.1"], "0 < min <= max"),
        (["--supercell", "2x0x1"], "supercell"),
        (["--hcp-a", "-3"], "hcp-a"),
        (["--structures", "hcp:0"], "positive weight"),
    ],
)
def test_bad_input_exit_2_and_no_file(tmp_path, args, msg):
    out = tmp_path / "pool.xyz"
    r = run("generate", "-n", 5, "-o", out, *args)
    assert r.exit_code == 2, r.output
    assert msg in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_n(tmp_path, n):
    r = run("generate", "-n", n, "-o", tmp_path / "p.xyz")
    assert r.exit_code == 2 and "-n must be a positive" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "nodir" / "p.xyz", tmp_path / "afile" / "p.xyz"):
        r = run("generate", "-n", 5, "-o", out)
        assert r.exit_code == 2 and "cannot write" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_no_temporary_left_after_failure(tmp_path, monkeypatch):
    import mlpdesign.generate.pool as pool

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pool, "format_candidates", boom)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "p.xyz", 10, PoolSpec())
    assert list(tmp_path.iterdir()) == []


def test_help_and_version():
    r = run("--help")
    assert r.exit_code == 0 and "generate" in r.output
    r = run("generate", "--help")
    assert r.exit_code == 0 and "Examples:" in r.output and "--max-strain" in r.output
    r = run("--version")
    assert r.exit_code == 0 and "mlpdesign, version" in r.output


def test_other_element_and_supercell(tmp_path):
    out = tmp_path / "ti.xyz"
    r = run(
        "generate",
        "-n",
        4,
        "--element",
        "Ti",
        "--supercell",
        "2x2x1",
        "--structures",
        "bcc",
        "--bcc-a",
        "3.3",
        "-o",
        out,
        "-q",
    )
    assert r.exit_code == 0, r.stderr
    frames = read(out, ":")
    assert all(a.get_chemical_symbols() == ["Ti"] * 4 for a in frames)
    assert all(a.info["structure"] == "bcc" for a in frames)
