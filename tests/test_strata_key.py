"""``select --stratify-by KEY`` and ``--strata-share``: strata by the input file of each
candidate or by any info key of the pool's frames, with the picks of the textbook loop."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import read, write
from clihelpers import one_line_error, run
from conftest import SMALL_GAP

from mlpdesign.generate.pool import PoolSpec, generate
from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels.core import StoreKernel
from mlpdesign.select.greedy import maxmin_reference
from mlpdesign.select.strata import labels_by


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    """30 'cold' and 10 'hot' candidates in two files, each frame with info key origin."""
    d = tmp_path_factory.mktemp("strata")
    paths = []
    for name, n, seed, id0 in (("cold", 30, 5, 0), ("hot", 10, 6, 1000)):
        raw = d / f"raw-{name}.xyz"
        generate(raw, n, PoolSpec(seed=seed))
        frames = read(raw, ":")
        for k, a in enumerate(frames):
            a.info["origin"] = name
            a.info["candidate_id"] = id0 + k
        paths.append(d / f"{name}.xyz")
        write(paths[-1], frames, format="extxyz")
    store = d / "pool.h5"
    res = run("describe", *map(str, paths), "-o", str(store), "--gap", SMALL_GAP, "-q")
    assert res.exit_code == 0, res.output
    return d, store


def _select(store, out, *args):
    res = run("select", str(store), "-n", "12", "-o", str(out), "-q", *args)
    assert res.exit_code == 0, res.output
    return load_selection(out)


def test_by_source_is_the_textbook_loop_on_those_labels(two_files):
    d, store = two_files
    sel = _select(store, d / "src.h5", "--stratify-by", "source")
    assert sel.attrs["stratify"] == "source"
    with open_store(store) as st:
        labels = labels_by(st, store, "source")
        kd = StoreKernel(st)
    assert sorted(set(labels)) == ["cold.xyz", "hot.xyz"]
    ref = maxmin_reference(kd, 12, strata=labels)
    assert np.array_equal(sel.index, ref.index)
    counts = {k: int(np.sum(labels[sel.index] == k)) for k in ("cold.xyz", "hot.xyz")}
    assert counts == {"cold.xyz": 9, "hot.xyz": 3}  # the pool's shares, 30:10


def test_equal_share_and_info_key(two_files):
    d, store = two_files
    sel = _select(store, d / "eq.h5", "--stratify-by", "origin", "--strata-share", "equal")
    assert sel.attrs["stratify"] == "origin" and sel.attrs["strata_share"] == "equal"
    with open_store(store) as st:
        labels = labels_by(st, store, "origin")
    assert {k: int(np.sum(labels[sel.index] == k)) for k in ("cold", "hot")} == {
        "cold": 6,
        "hot": 6,
    }
    more = run(
        "select", str(store), "-n", "16", "--continue", str(d / "eq.h5"), "-o", str(d / "c.h5")
    )
    assert more.exit_code == 0, more.output
    assert np.array_equal(load_selection(d / "c.h5").index[:12], sel.index)


def test_missing_info_key_is_one_line(two_files):
    d, store = two_files
    out = d / "none.h5"
    res = run("select", str(store), "-n", "5", "--stratify-by", "temperature", "-o", str(out))
    assert "temperature" in one_line_error(res)
    assert not out.exists()
