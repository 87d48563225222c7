"""Alloys end to end: EAM files by their header, the per-pair / per-species default model,
its kernel against a brute-force double sum, gap_fit's nested braces and label keys."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from clihelpers import one_line_error, run
from conftest import SMALL_GAP

from mlpdesign.describe.runner import DescriptorCalculator
from mlpdesign.gap.label import eam_kind
from mlpdesign.gap.strings import alloy_specs, gap_fit_argument, parse_gap, render_gap
from mlpdesign.io.frames import open_pool
from mlpdesign.io.store import open_store
from mlpdesign.kernels import core as K

CU, ZR = 29, 40


def write_binary_eam(path, kind: str, nr: int = 400, nrho: int = 400, cutoff: float = 5.5):
    """A smooth analytic Cu-Zr EAM (Johnson-like) tabulated as ``kind`` by matscipy.

    The density function is the same for both elements, so the eam/alloy and eam/fs
    files describe one potential (the fs file with its per-pair density blocks).
    """
    from matscipy.calculators.eam.io import EAMParameters, write_eam

    dr, drho = cutoff / (nr - 1), 60.0 / (nrho - 1)
    r, rho = np.arange(nr) * dr, np.arange(nrho) * drho
    taper = np.clip(1 - r / cutoff, 0, None) ** 3
    dens = np.exp(-1.5 * (r / 2.7 - 1)) * taper
    F = np.array([-1.1 * np.sqrt(rho), -1.6 * np.sqrt(rho)])
    re = {(0, 0): 2.55, (0, 1): 2.8, (1, 1): 3.2}
    rep = np.zeros((2, 2, nr))
    for (i, j), r0 in re.items():
        rep[i, j] = rep[j, i] = r * 0.4 * np.exp(-4.0 * (r / r0 - 1)) * taper
    f = np.array([dens, dens]) if kind == "eam/alloy" else np.array([[dens, dens], [dens, dens]])
    params = EAMParameters(
        ["Cu", "Zr"], [CU, ZR], [63.546, 91.224], [3.61, 3.23], ["fcc", "hcp"],
        nrho, nr, drho, dr, cutoff,
    )  # fmt: skip
    write_eam("analytic Cu-Zr", params, F, f, rep, str(path), kind=kind)
    return path


def cuzr_frames(n: int = 6) -> list[Atoms]:
    """B2 CuZr 2x2x2 (16 atoms), rattled; every other one with a Cu-rich swap."""
    out = []
    for k in range(n):
        a = Atoms("CuZr", scaled_positions=[[0, 0, 0], [0.5] * 3], cell=3.26 * np.eye(3), pbc=True)
        a = a.repeat((2, 2, 2))
        if k % 2:
            a.numbers[1] = CU
        a.rattle(0.08, seed=k)
        a.info["config_type"] = "b2" if k % 2 == 0 else "cu_rich"
        out.append(a)
    return out


@pytest.fixture(scope="module")
def eams(tmp_path_factory):
    d = tmp_path_factory.mktemp("eam")
    return {
        "fs": write_binary_eam(d / "CuZr.eam.fs", "eam/fs"),
        "alloy": write_binary_eam(d / "CuZr.eam.alloy", "eam/alloy"),
        "renamed": write_binary_eam(d / "potential.txt", "eam/fs"),
    }


def test_eam_kind_from_the_header(eams, eam_file, tmp_path):
    assert eam_kind(eams["fs"]) == eam_kind(eams["renamed"]) == "eam/fs"
    assert eam_kind(eams["alloy"]) == "eam/alloy"
    assert eam_kind(eam_file) == "eam/alloy"  # one element: both layouts are the same
    cut = tmp_path / "cut.eam.fs"
    cut.write_text("\n".join(eams["fs"].read_text().splitlines()[:-3]) + "\n")
    pool = tmp_path / "p.xyz"
    ase.io.write(pool, cuzr_frames(1), format="extxyz")
    msg = one_line_error(run("label", pool, "--eam", cut, "-o", tmp_path / "l.xyz"))
    assert "fit neither eam/alloy" in msg and "cut.eam.fs" in msg


def test_label_with_eam_fs_and_alloy_files_agree(eams, tmp_path):
    pool = tmp_path / "cuzr.xyz"
    ase.io.write(pool, cuzr_frames(), format="extxyz")
    got = {}
    for name in ("fs", "alloy", "renamed"):
        out = tmp_path / f"{name}.xyz"
        r = run("label", pool, "--eam", eams[name], "-o", out, "-q")
        assert r.exit_code == 0, r.stderr
        got[name] = ase.io.read(out, index=":")
    e = {k: np.array([a.info["dft_energy"] for a in v]) for k, v in got.items()}
    assert np.ptp(e["fs"]) > 0.1  # the two compositions differ
    np.testing.assert_allclose(e["fs"], e["alloy"], rtol=1e-10)
    np.testing.assert_array_equal(e["fs"], e["renamed"])
    for a, b in zip(got["fs"], got["alloy"], strict=True):
        np.testing.assert_allclose(a.arrays["dft_forces"], b.arrays["dft_forces"], atol=1e-9)


def test_default_gap_of_an_alloy_is_per_pair_and_per_species(tmp_path):
    specs = alloy_specs(parse_gap(SMALL_GAP), [ZR, CU])
    names = [(s.name, s.params.get("Z1"), s.params.get("Z2"), s.params.get("Z")) for s in specs]
    assert names == [
        ("distance_2b", CU, CU, None), ("distance_2b", CU, ZR, None),
        ("distance_2b", ZR, ZR, None), ("soap", None, None, [CU]), ("soap", None, None, [ZR]),
    ]  # fmt: skip
    for s in specs[3:]:
        assert s.params["species_Z"] == [CU, ZR] and s.params["n_species"] == 2
        assert s.kernel == parse_gap(SMALL_GAP)[1].kernel  # its own delta, zeta
    assert alloy_specs(parse_gap(SMALL_GAP), [ZR])[1].params["Z"] == [ZR]
    # describe's default string for a binary pool is this expansion of the paper's model
    pool = tmp_path / "cuzr.xyz"
    ase.io.write(pool, cuzr_frames(2), format="extxyz")
    r = run("describe", pool, "-o", tmp_path / "d.h5", "-q")
    assert r.exit_code == 0, r.stderr
    with open_store(tmp_path / "d.h5") as s:
        want = alloy_specs(parse_gap(None or _default()), [CU, ZR])
        assert [(d.descriptor, d.kernel) for d in s.descriptors] == [
            (w.descriptor, w.kernel) for w in want
        ]


def _default() -> str:
    from mlpdesign.gap.strings import DEFAULT_GAP

    return DEFAULT_GAP


def test_direct_pair_path_with_z1_z2_equals_quippy():
    specs = alloy_specs(parse_gap(SMALL_GAP), [CU, ZR])[:3]
    fast, ref = DescriptorCalculator(specs), DescriptorCalculator(specs, fast=False)
    assert all(callable(c) and not hasattr(c, "pair") for c in fast._calls)  # direct path
    total = 0
    for a in cuzr_frames(3):
        for (r1, w1), (r2, w2) in zip(fast.compute(a), ref.compute(a), strict=True):
            assert r1.shape == r2.shape
            np.testing.assert_allclose(r1, r2, atol=1e-10)
            np.testing.assert_allclose(w1, w2, atol=1e-12)
            total += r1.shape[0]
    blind = DescriptorCalculator(parse_gap(SMALL_GAP)[:1])
    assert total == sum(blind.compute(a)[0][0].shape[0] for a in cuzr_frames(3))


def test_alloy_kernel_is_the_exact_sum_of_its_terms(tmp_path):
    gap = render_gap(alloy_specs(parse_gap(SMALL_GAP), [CU, ZR]))
    pool = tmp_path / "cuzr.xyz"
    ase.io.write(pool, cuzr_frames(4), format="extxyz")
    store = tmp_path / "a.h5"
    assert run("describe", pool, "-o", store, "--gap", gap, "-q").exit_code == 0
    with open_store(store) as s:
        kd = K.StoreKernel(s, normalize=False)
        got = kd.k_block(np.arange(4), np.arange(4))
        want = np.zeros((4, 4))
        for k, spec in enumerate(s.descriptors):
            o, rows, w = s.offsets(k), s.rows(k), s.weights(k)
            delta = spec.kernel["delta"]
            for i in range(4):
                for j in range(4):
                    a, b = slice(o[i], o[i + 1]), slice(o[j], o[j + 1])
                    if spec.name == "soap":
                        dots = (rows[a] @ rows[b].T) ** spec.kernel["zeta"]
                        term = w[a] @ dots @ w[b]
                    else:
                        theta = spec.kernel["theta_uniform"]
                        term = K.pair_kernel_bruteforce(rows[a, 0], w[a], rows[b, 0], w[b], theta)
                    want[i, j] += delta**2 * term
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_gap_fit_gets_nested_braces_and_reads_both_forms():
    specs = alloy_specs(parse_gap(SMALL_GAP), [CU, ZR])
    arg = gap_fit_argument(specs)
    assert "species_Z={{29 40}}" in arg and "Z={{29}}" in arg and "Z={29 40}" not in arg
    assert arg.count("add_species=F") == len(specs)  # gap_fit fits these terms, no copies
    back = parse_gap(arg)
    assert [s.descriptor for s in back] == [s.descriptor for s in specs]
    assert [s.kernel for s in back] == [dict(s.kernel, add_species=False) for s in specs]


def test_binary_pool_labelled_with_eam_fs_fitted_by_gap_fit(eams, tmp_path):
    """describe -> select -> write -> label (eam/fs) -> fit with the design's own kernel."""
    gap = render_gap(alloy_specs(parse_gap(SMALL_GAP), [CU, ZR]))
    pool, store, sel = tmp_path / "cuzr.xyz", tmp_path / "p.h5", tmp_path / "s.h5"
    ase.io.write(pool, cuzr_frames(6), format="extxyz")
    assert run("describe", pool, "-o", store, "--gap", gap, "-q").exit_code == 0
    assert run("select", store, "-n", "4", "-o", sel, "-q").exit_code == 0
    assert run("write", pool, sel, "-o", tmp_path / "t.xyz", "-q").exit_code == 0
    lab = tmp_path / "lab.xyz"
    assert run("label", tmp_path / "t.xyz", "--eam", eams["fs"], "-o", lab, "-q").exit_code == 0
    r = run("fit", lab, "--store", store, "-o", tmp_path / "m", "-q", "--n-sparse", "soap=20")
    assert r.exit_code == 0, r.stderr
    xml = (tmp_path / "m" / "gap.xml").read_text()
    assert xml.count("<gpCoordinates") == 5  # 3 pair terms + 2 SOAP centres, as described
    import json

    cmd = json.loads((tmp_path / "m" / "fit.json").read_text())["command"]
    assert any("Z={{29}}" in c for c in cmd)


def test_fit_takes_ase_keys_and_named_keys(tmp_path):
    """Labels under ASE's energy/forces (an MD file) or any named key are fitted."""
    frames = cuzr_frames(3)
    for k, a in enumerate(frames):
        a.calc = SinglePointCalculator(a, energy=-60.0 - k, forces=np.zeros((16, 3)) + 0.01)
    ase.io.write(tmp_path / "md.xyz", frames, format="extxyz")  # energy= and forces columns
    gap = "distance_2b cutoff=4.0 covariance_type=ard_se delta=0.5 theta_uniform=0.5 n_sparse=8"
    r = run("fit", tmp_path / "md.xyz", "--gap", gap, "-o", tmp_path / "m1", "-q")
    assert r.exit_code == 0, r.stderr
    train = ase.io.read(tmp_path / "m1" / "train.xyz", index=":")
    assert [t.info["dft_energy"] for t in train] == [-60.0, -61.0, -62.0]
    for a, k in zip(frames, range(3), strict=True):
        a.calc = None
        a.info["my_e"] = -60.0 - k
    ase.io.write(tmp_path / "named.xyz", frames, format="extxyz")
    r = run("fit", tmp_path / "named.xyz", "--gap", gap, "-o", tmp_path / "m2", "-q")
    assert "has no dft_energy label" in one_line_error(r)
    r = run(
        "fit", tmp_path / "named.xyz", "--gap", gap, "-o", tmp_path / "m2", "-q",
        "--energy-key", "my_e",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "m2" / "gap.xml").is_file()


def test_pool_species_checks_cover_every_soap_centre(tmp_path):
    pool = tmp_path / "cuzr.xyz"
    ase.io.write(pool, cuzr_frames(1), format="extxyz")
    p = open_pool(pool)
    assert p.symbols == ["Cu", "Zr"]
    only_cu = render_gap(alloy_specs(parse_gap(SMALL_GAP), [CU, ZR])[:4])  # no Zr centre
    msg = one_line_error(run("describe", pool, "-o", tmp_path / "x.h5", "--gap", only_cu))
    assert "has Zr (Z=40), which is not in the SOAP Z list {29}" in msg
