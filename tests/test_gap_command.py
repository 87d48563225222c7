"""``gap-command``: the gap_fit command for the store's kernel, and gap_fit running it."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner
from test_vasp_fakerun import fake_vasp_run

from mlpdesign.cli import cli
from mlpdesign.dft.collect import collect
from mlpdesign.dft.vasp import write_vasp_inputs
from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.command import command_args, gap_fit_command
from mlpdesign.gap.strings import DEFAULT_GAP
from mlpdesign.generate.pool import PoolSpec, generate
from mlpdesign.io.store import write_store_arrays

TINY_GAP = (
    "distance_2b cutoff=5.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=5.0 l_max=3 n_max=3 normalize=T atom_sigma=0.5 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)


def make_store(path: Path, gap: str) -> Path:
    """A store carrying ``gap`` (the rows do not matter to gap-command)."""
    n = len(gap.split(" : "))
    return write_store_arrays(path, gap, [0, 1], [np.zeros((2, 1))] * n)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """A labelled set made the whole way: pool -> vasp -> stand-in VASP -> collect."""
    d = tmp_path_factory.mktemp("lab")
    generate(d / "pool.xyz", 12, PoolSpec(seed=5))
    write_vasp_inputs(d / "pool.xyz", d / "runs")
    for name in (d / "runs" / "runs.txt").read_text().split():
        fake_vasp_run(d / "runs" / name)
    collect([d / "runs"], d / "labelled.xyz")
    return d / "labelled.xyz"


def test_command_carries_the_store_kernel(tmp_path):
    store = make_store(tmp_path / "pool.h5", DEFAULT_GAP)
    cmd, notes = gap_fit_command(store, at_file=str(tmp_path / "labelled.xyz"))
    args = shlex.split(cmd)
    assert args[0] == "gap_fit"
    gap = next(a for a in args if a.startswith("gap={"))
    two_b, soap = gap[len("gap={") : -1].split(" : ")
    assert two_b == (
        "distance_2b cutoff=7.0 covariance_type=ard_se delta=0.8 "
        "theta_uniform=0.3 n_sparse=20 sparse_method=uniform add_species=F"
    )
    assert soap == (  # gap_fit's nested braces inside gap={...}
        "soap cutoff=6.8 l_max=10 n_max=10 normalize=T atom_sigma=0.15 n_Z=1 "
        "Z={{40}} covariance_type=dot_product zeta=4 delta=0.3 n_sparse=500 "
        "sparse_method=cur_points add_species=F"
    )
    for a in (
        "e0_method=average",
        "default_sigma={0.002 0.05 0.05 0.0}",
        "energy_parameter_name=dft_energy",
        "force_parameter_name=dft_forces",
        "virial_parameter_name=dft_virial",
        "gp_file=gap.xml",
        "rnd_seed=1",
    ):
        assert a in args, a
    assert f"at_file={tmp_path / 'labelled.xyz'}" in args
    assert "does not exist yet" in notes[0]


def test_sparse_points_capped_by_training_set_and_kept_when_given(tmp_path, labelled):
    n_atoms = sum(len(a) for a in ase.io.read(labelled, index=":"))
    args = command_args(TINY_GAP, str(labelled), train=_train(labelled))
    assert f"n_sparse={n_atoms} sparse_method=cur_points" in args[1]
    given = TINY_GAP.replace("delta=0.3", "delta=0.3 n_sparse=4 sparse_method=random")
    args = command_args(given, str(labelled), train=_train(labelled))
    assert "n_sparse=4 sparse_method=random" in args[1]
    assert args[1].count("n_sparse=") == 2


def _train(path):
    from mlpdesign.gap.command import read_training_set

    return read_training_set(path)


def test_bad_inputs(tmp_path, labelled):
    with pytest.raises(MlpdesignError, match="default-sigma"):
        command_args(TINY_GAP, "x.xyz", sigma=(0.0, 0.1, 0.1, 0.0))
    other = TINY_GAP.replace("Z={40}", "Z={22}")
    with pytest.raises(MlpdesignError, match="Z="):
        command_args(other, str(labelled), train=_train(labelled))
    unlabelled = tmp_path / "raw.xyz"
    generate(unlabelled, 2, PoolSpec(seed=1))
    store = make_store(tmp_path / "s.h5", TINY_GAP)
    with pytest.raises(MlpdesignError, match="no dft_energy"):
        gap_fit_command(store, at_file=str(unlabelled))
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(MlpdesignError, match="not an HDF5 file"):
        gap_fit_command(tmp_path / "junk.h5")


def test_gap_fit_runs_the_printed_command(tmp_path, labelled):
    """The printed command, run as it is on a collected set, fits a GAP that reproduces
    the labels, virials included (a wrong virial sign could not be fitted this well)."""
    from quippy.potential import Potential

    from mlpdesign.gap.fit import gap_fit_binary

    store = make_store(tmp_path / "pool.h5", TINY_GAP)
    r = CliRunner().invoke(
        cli,
        [
            "gap-command",
            str(store),
            "--at-file",
            str(labelled),
            "--gp-file",
            str(tmp_path / "gap.xml"),
        ],
    )
    assert r.exit_code == 0, r.output
    args = shlex.split(r.stdout.strip())
    proc = subprocess.run(
        [gap_fit_binary(), *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "gap.xml").is_file()
    pot = Potential(param_filename=str(tmp_path / "gap.xml"))
    for a in ase.io.read(labelled, index=":"):
        b = a.copy()
        b.calc = pot
        assert b.get_potential_energy() / len(b) == pytest.approx(
            a.info["dft_energy"] / len(a), abs=2e-3
        )
        v = -b.get_stress(voigt=False) * b.get_volume()
        assert (
            np.abs(v.reshape(9) - a.info["dft_virial"]).max()
            < 0.1 * np.abs(a.info["dft_virial"]).max() + 0.01
        )


def test_cli_help_and_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["gap-command", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output
    store = make_store(tmp_path / "pool.h5", TINY_GAP)
    r = runner.invoke(cli, ["gap-command", str(store), "--default-sigma", "0.1 0.2"])
    assert r.exit_code == 2 and "--sigma expects E,F,V[,H]" in r.stderr
    r = runner.invoke(cli, ["gap-command", "--help"])
    assert "--sigma E,F,V[,H]" in r.output and "--default-sigma" not in r.output  # old: hidden
    r = runner.invoke(cli, ["gap-command", str(tmp_path / "none.h5")])
    assert r.exit_code == 2 and r.stderr.startswith("mlpdesign: error: ")
    assert r.stderr.count("\n") == 1
    r = runner.invoke(
        cli,
        [
            "gap-command",
            str(store),
            "--at-file",
            "later.xyz",
            "--default-sigma",
            "0.001 0.1 0.05 0",
        ],
    )
    assert r.exit_code == 0
    assert "'default_sigma={0.001 0.1 0.05 0.0}'" in r.stdout
    assert "note: later.xyz does not exist yet" in r.stderr
