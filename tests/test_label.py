"""``label``: stand-in labels from a classical potential, checked against the calculator itself."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner
from clihelpers import one_line_error

from mlpdesign.cli import cli
from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.label import (
    ENERGY_KEY,
    FORCES_KEY,
    VIRIAL_KEY,
    calculator_from_spec,
    eam_calculator,
    label,
    labelled_frame,
    read_labelled,
)


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def other_element_eam(eam_file, tmp_path_factory) -> Path:
    """The Zr file relabelled as Al: a valid EAM file for another element."""
    lines = eam_file.read_text().splitlines(keepends=True)
    assert lines[3].split()[:2] == ["1", "Zr"] and lines[5].split()[0] == "40"
    lines[3] = "1 Al\n"
    lines[5] = lines[5].replace("40", "13", 1)
    p = tmp_path_factory.mktemp("eam") / "Al_fake.eam.fs"
    p.write_text("".join(lines))
    return p


def test_label_matches_calculator_called_directly(small_pool, eam_file, tmp_path):
    out = tmp_path / "labelled.xyz"
    res = run("label", small_pool, "--eam", eam_file, "-o", out, "-q")
    assert res.exit_code == 0, res.stderr
    got = read_labelled(out, need_forces=True)
    pool = ase.io.read(small_pool, ":")
    assert len(got) == len(pool) == 40
    from matscipy.calculators.eam import EAM

    calc = EAM(str(eam_file))
    for a, b in zip(pool, got, strict=True):
        a.calc = calc
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)
        assert b.calc is None  # labels stay labels on read-back, not a calculator
        assert b.info[ENERGY_KEY] == pytest.approx(e, abs=1e-10)
        np.testing.assert_allclose(b.arrays[FORCES_KEY], f, atol=1e-8)  # %16.8f in extxyz
        np.testing.assert_allclose(b.info[VIRIAL_KEY], (-s * a.get_volume()).reshape(9), atol=1e-10)
        assert b.info["candidate_id"] == a.info["candidate_id"]
        assert b.info["config_type"] == a.info["config_type"]
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
    # QUIP reads the virial only as 9 plain numbers, never as ASE's _JSON 3x3 form
    text = out.read_text()
    assert 'dft_virial="' in text and "_JSON" not in text


def test_label_same_bytes_twice(small_pool, eam_file, tmp_path):
    calc = eam_calculator(eam_file)
    label(small_pool, tmp_path / "a.xyz", calc)
    label(small_pool, tmp_path / "b.xyz", calc)
    assert (tmp_path / "a.xyz").read_bytes() == (tmp_path / "b.xyz").read_bytes()


def test_label_any_ase_calculator(small_pool, tmp_path):
    out = tmp_path / "lj.xyz"
    res = run(
        "label",
        small_pool,
        "--calculator",
        "ase.calculators.lj:LennardJones",
        "--calc-arg",
        "sigma=2.9",
        "--calc-arg",
        "epsilon=0.3",
        "--calc-arg",
        "rc=7.0",
        "--no-virial",
        "-o",
        out,
        "-q",
    )
    assert res.exit_code == 0, res.stderr
    from ase.calculators.lj import LennardJones

    calc = LennardJones(sigma=2.9, epsilon=0.3, rc=7.0)
    for a, b in zip(ase.io.read(small_pool, ":"), read_labelled(out), strict=True):
        a.calc = calc
        assert b.info[ENERGY_KEY] == pytest.approx(a.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(b.arrays[FORCES_KEY], a.get_forces(), atol=1e-8)
        assert VIRIAL_KEY not in b.info


def test_labelled_frame_virial_convention():
    from ase.build import bulk

    a = bulk("Zr", "hcp", a=3.232, c=5.147)
    voigt = np.array([1.0, 2.0, 3.0, 0.4, 0.5, 0.6]) * 1e-3
    f = labelled_frame(a, -13.0, np.zeros((2, 3)), voigt)
    v = f.info[VIRIAL_KEY].reshape(3, 3)
    np.testing.assert_allclose(v, v.T)
    np.testing.assert_allclose(np.diag(v), -voigt[:3] * a.get_volume())
    assert v[1, 2] == pytest.approx(-0.4e-3 * a.get_volume())
    assert v[0, 2] == pytest.approx(-0.5e-3 * a.get_volume())
    assert v[0, 1] == pytest.approx(-0.6e-3 * a.get_volume())


def test_missing_potential_file(small_pool, tmp_path):
    line = one_line_error(
        run("label", small_pool, "--eam", tmp_path / "nope.eam.fs", "-o", tmp_path / "x.xyz")
    )
    assert "nope.eam.fs: no such EAM potential file" in line
    assert not (tmp_path / "x.xyz").exists()


def test_eam_file_for_another_element(small_pool, other_element_eam, tmp_path):
    line = one_line_error(
        run("label", small_pool, "--eam", other_element_eam, "-o", tmp_path / "x.xyz")
    )
    assert "has parameters for Al only" in line and "contains Zr" in line
    assert not (tmp_path / "x.xyz").exists()


def test_not_an_eam_file(small_pool, tmp_path):
    bad = tmp_path / "bad.eam.fs"
    bad.write_text("this is not\nan EAM file\n")
    line = one_line_error(run("label", small_pool, "--eam", bad, "-o", tmp_path / "x.xyz"))
    assert "not a readable EAM potential file" in line


@pytest.mark.parametrize(
    "args, msg",
    [
        ([], "exactly one of --eam FILE or --calculator"),
        (["--calculator", "nomodule"], "expects module:Class"),
        (["--calculator", "ase.calculators.lj:Nope"], "has no Nope"),
        (["--calculator", "no_such_module_xyz:Calc"], "cannot import"),
        (
            ["--calculator", "ase.calculators.lj:LennardJones", "--calc-arg", "oops"],
            "expects key=value",
        ),
    ],
)
def test_bad_calculator_options(small_pool, tmp_path, args, msg):
    line = one_line_error(run("label", small_pool, *args, "-o", tmp_path / "x.xyz"))
    assert msg in line


def test_existing_output_refused(small_pool, eam_file, tmp_path):
    out = tmp_path / "l.xyz"
    out.write_text("keep me")
    line = one_line_error(run("label", small_pool, "--eam", eam_file, "-o", out))
    assert "exists; use --force" in line and out.read_text() == "keep me"
    assert run("label", small_pool, "--eam", eam_file, "-o", out, "--force", "-q").exit_code == 0


def test_read_labelled_refuses_unlabelled_set(small_pool):
    with pytest.raises(MlpdesignError, match="configuration 0 has no dft_energy label"):
        read_labelled(small_pool)


def test_calculator_from_spec_kwargs():
    calc = calculator_from_spec("ase.calculators.lj:LennardJones", {"sigma": 2.5})
    assert calc.parameters["sigma"] == 2.5


def test_energy_only_spelling(small_pool, eam_file, tmp_path):
    """--energy-only (not the confusable --no-forces next to --force): energies alone;
    --no-forces stays as a hidden old spelling with its old meaning (virials kept)."""
    full = tmp_path / "full.xyz"
    assert run("label", small_pool, "--eam", eam_file, "-o", full, "-q").exit_code == 0
    ref = read_labelled(full, need_forces=True)
    cases = {"--energy-only": (False, False), "--no-forces": (False, True)}
    for flag, (has_forces, has_virial) in cases.items():
        out = tmp_path / f"{flag.strip('-')}.xyz"
        res = run("label", small_pool, "--eam", eam_file, "-o", out, "-q", flag)
        assert res.exit_code == 0, res.stderr
        got = read_labelled(out)
        for a, b in zip(got, ref, strict=True):
            assert a.info[ENERGY_KEY] == b.info[ENERGY_KEY]
            assert (FORCES_KEY in a.arrays) == has_forces, flag
            assert (VIRIAL_KEY in a.info) == has_virial, flag
    help_text = run("label", "--help").output
    assert "--energy-only" in help_text and "--no-forces" not in help_text


def test_disk_full_names_the_output_and_leaves_nothing(small_pool, eam_file, tmp_path, monkeypatch):
    """An OS error while writing (a full disk) is one line naming the output, not the
    temporary, and neither the output nor a temporary is left."""
    import errno

    import ase.io.extxyz

    def full(fh, frames, **kw):
        fh.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ase.io.extxyz, "write_xyz", full)
    out = tmp_path / "lab.xyz"
    line = one_line_error(run("label", small_pool, "--eam", eam_file, "-o", out, "-q"))
    assert line == f"mlpdesign: error: {out}: No space left on device"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "damage, msg",
    [
        ("energy", "configuration 1 has a non-numeric or non-finite dft_energy (nan)"),
        ("forces", "configuration 1: dft_forces must be"),
        ("virial", "configuration 1: dft_virial must be 9 finite numbers"),
    ],
)
def test_non_finite_labels_refused_by_fit_and_crossval(small_pool, eam_file, tmp_path, damage, msg):
    """A labelled set with a NaN/inf energy, force or virial is refused by every command
    reading it (one line naming the file, exit 2, nothing written), never fitted."""
    from mlpdesign.gap.label import write_labelled

    lab = tmp_path / "lab.xyz"
    label(small_pool, lab, eam_calculator(eam_file))
    frames = read_labelled(lab)
    a = frames[1]
    if damage == "energy":
        a.info[ENERGY_KEY] = float("nan")
    elif damage == "forces":
        a.arrays[FORCES_KEY][0, 2] = np.inf
    else:
        a.info[VIRIAL_KEY] = np.array([np.nan] + [0.0] * 8)
    bad = tmp_path / "bad.xyz"
    write_labelled(bad, frames)
    gap = ["--gap", "distance_2b cutoff=5.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3"]
    for args, out in (
        (["fit", bad, *gap], tmp_path / "model"),
        (["crossval", f"A={lab}", f"B={bad}", *gap], tmp_path / "cv"),
    ):
        line = one_line_error(run(*args, "-o", out, "-q"))
        assert f"{bad}: {msg}" in line, line
        assert not out.exists()


def test_label_to_stdout(small_pool, eam_file, tmp_path, monkeypatch):
    """-o -: the labelled extxyz on stdout, the same bytes as the file output; no file '-'."""
    out = tmp_path / "lab.xyz"
    assert run("label", small_pool, "--eam", eam_file, "-o", out, "-q").exit_code == 0
    monkeypatch.chdir(tmp_path)
    res = run("label", small_pool, "--eam", eam_file, "-o", "-", "-q")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == out.read_text()
    assert not (tmp_path / "-").exists()
