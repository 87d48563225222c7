"""Shared fixtures: small pools (and, later, stores) made once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpdesign.gap.label import eam_calculator, label
from mlpdesign.generate.pool import PoolSpec, generate
from mlpdesign.io.store import open_store
from mlpdesign.kernels import core as K


@pytest.fixture(scope="session")
def small_pool(tmp_path_factory) -> Path:
    """A 40-candidate mixed hcp/fcc/bcc Zr pool (seed 7), max strain 0.05."""
    path = tmp_path_factory.mktemp("pool") / "pool.xyz"
    generate(path, 40, PoolSpec(seed=7))
    return path


#: GAP string of ``small_store``: the paper's model with small SOAP settings (dim 51).
SMALL_GAP = (
    "distance_2b cutoff=5.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=5.0 l_max=4 n_max=4 normalize=T atom_sigma=0.5 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)


@pytest.fixture(scope="session")
def small_store(small_pool, tmp_path_factory) -> Path:
    """``small_pool`` described with ``SMALL_GAP`` (distance_2b + SOAP l_max=n_max=4)."""
    from mlpdesign.describe.runner import describe

    path = tmp_path_factory.mktemp("store") / "pool.h5"
    describe(small_pool, path, gap=SMALL_GAP)
    return path


@pytest.fixture(scope="module")
def labelled(small_pool, eam_file, tmp_path_factory) -> Path:
    """``small_pool`` labelled by the Zr EAM potential (one copy per test module)."""
    out = tmp_path_factory.mktemp("fit") / "labelled.xyz"
    label(small_pool, out, eam_calculator(eam_file))
    return out


@pytest.fixture(scope="module")
def zr_kernels(small_store):
    """The 40-config small Zr store: candidates 0..29 as the pool, 30..39 as a given set
    (the whole store's centring for both), and the pool's structure labels."""
    out = {}
    with open_store(small_store) as st:
        for mode in ("normalized", "raw"):
            opts = {} if mode == "normalized" else {"normalize": False, "per_atom": True}
            pool = K.StoreKernel(st, configs=(0, 30), **opts)
            given = K.StoreKernel(st, configs=(30, 40), like=pool, **opts)
            out[mode] = (pool, given)
        labels = np.asarray(st.structure)[:30]
    return out, labels


@pytest.fixture(scope="session")
def eam_file() -> Path:
    """The Mendelev-Ackland Zr EAM potential (Debian lammps-data), fetched by ``make eam``.

    Tests and CI get it the same way: if third_party/Zr_mm.eam.fs is missing, the Makefile
    rule is run once; only if that cannot fetch it are the tests that need it skipped.
    """
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    path = root / "third_party" / "Zr_mm.eam.fs"
    if not path.is_file() and shutil.which("make"):
        subprocess.run(["make", "-s", "eam"], cwd=root, capture_output=True, timeout=600)
    if not path.is_file():
        pytest.skip(
            "Zr_mm.eam.fs not available: 'make eam' could not fetch Debian's "
            "lammps-data package (apt-get download lammps-data)"
        )
    return path
