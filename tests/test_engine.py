"""The greedy loop is written once: a criterion plugged into its protocol runs in memory,
streamed and under ``mpiexec -n 3`` with the same picks; and the tie rule makes the fast
path and the textbook loop agree on real descriptor data with symmetric duplicates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_scale import _mpi_missing, _mpiexec
from toy_criterion import PsiPerAtom, reference

from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels import core as K
from mlpdesign.kernels.core import StoreKernel
from mlpdesign.select import run
from mlpdesign.select.engine import CRITERIA, tie_argmax
from mlpdesign.select.greedy import maxmin, maxmin_reference

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def toy_picks(small_store, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("toy")
    picks = {}
    for name, kw in {
        "memory": {},
        "streamed": dict(memory_limit="3M", block_rows=8),
    }.items():
        sel, _ = run(
            small_store, 15, out / f"{name}.h5", criterion=PsiPerAtom(), stratify=False, **kw
        )
        picks[name] = list(sel.index)
    return picks


def test_toy_criterion_in_memory_is_its_textbook_loop(small_store, toy_picks):
    with open_store(small_store) as st:
        kd = StoreKernel(st)
    assert toy_picks["memory"] == reference(kd, 15)
    assert toy_picks["memory"] != list(maxmin(kd, 15, strata=None).index)  # not max-min


def test_toy_criterion_streamed_same_picks(toy_picks):
    assert toy_picks["streamed"] == toy_picks["memory"]


@pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))
def test_toy_criterion_under_mpiexec_same_picks(small_store, toy_picks, tmp_path):
    out = tmp_path / "mpi.h5"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [_mpiexec(), "-n", "3", sys.executable, str(HERE / "toy_criterion.py")]
    res = subprocess.run(
        [*cmd, str(small_store), "15", str(out)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    sel = load_selection(out)
    assert list(sel.index) == toy_picks["memory"]
    assert sel.method == "psi_per_atom"


def test_tie_rule_lowest_index_within_window():
    v = np.array([0.5, 1.0 - 1e-13, 0.2, 1.0])
    assert tie_argmax(v, 1e-12) == 1
    assert tie_argmax(v, 1e-14) == 3


def test_ties_on_real_descriptors_fast_equals_textbook():
    """scikit-matter's CSD set: 500 rows, 305 distinct, symmetric duplicates whose Psi agree
    to 2e-16; without the tie rule the paths parted at pick 183 (452 vs 185)."""
    datasets = pytest.importorskip("skmatter.datasets")
    X = datasets.load_csd_1000r().data.X
    kd = K.linear(X)
    with pytest.warns(RuntimeWarning, match="stopped after"):
        fast = maxmin(kd, 500, first=0)
    with pytest.warns(RuntimeWarning, match="stopped after"):
        ref = maxmin_reference(kd, 500, first=0)
    assert len(fast.index) == len(ref.index) > 183
    assert np.array_equal(fast.index, ref.index)
    assert np.allclose(fast.psi, ref.psi, rtol=0, atol=4 * kd.eps)


def test_criteria_registry_names_the_cli_choices():
    assert {"maxmin", "random"} <= set(CRITERIA)


def test_continue_works_streamed_too(small_store, tmp_path):
    """The one front door: ``--continue`` runs on the streamed engine as in memory."""
    kw = dict(memory_limit="3M", block_rows=8)
    first, _ = run(small_store, 8, tmp_path / "a.h5", **kw)
    more, _ = run(small_store, 16, tmp_path / "b.h5", continue_from=tmp_path / "a.h5", **kw)
    once, _ = run(small_store, 16, tmp_path / "c.h5", **kw)
    mem, _ = run(small_store, 16, tmp_path / "d.h5")
    assert list(more.index[:8]) == list(first.index)
    assert list(more.index) == list(once.index) == list(mem.index)


def test_suggested_memory_limit_is_accepted(small_store, tmp_path):
    """'give at least X' rounds up: X itself then runs (issue 15)."""
    import re

    from mlpdesign.errors import MlpdesignError

    with pytest.raises(MlpdesignError, match="give at least") as err:
        run(small_store, 5, None, memory_limit="20K", block_rows=8)
    least = re.search(r"give at least (\S+)", str(err.value)).group(1)
    sel, _ = run(small_store, 5, None, memory_limit=least, block_rows=8)
    assert sel.n == 5
