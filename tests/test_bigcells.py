"""Large cells (issue 17, item 4): the streamed pass bounds SOAP by Cauchy-Schwarz.

``KernelData.d2_below_range`` (the in-place pass of a block) and ``StreamedState`` (which now
sends every block's candidates through ``d2_below`` / ``d2_below_range``) are checked
against brute force: the full D² row, and the textbook max-min loop on a store of
16-atom cells (many SOAP rows per config), streamed with spilled blocks, with a given set
and under MPI. The picks are those of the textbook loop; Psi is within eps of it and
bitwise the same for any memory limit and number of ranks.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_GAP
from test_scale import mpirun, needs_mpi

from mlpdesign.io.store import open_store
from mlpdesign.kernels import core as K
from mlpdesign.select.greedy import maxmin_reference
from mlpdesign.select.scaled import select_streamed

ROOT = Path(__file__).resolve().parents[1]


def _bench_cells():
    spec = importlib.util.spec_from_file_location("bench_cells", ROOT / "benchmarks/bench_cells.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cells_kernel(**mode) -> K.KernelData:
    """24 toy configs of 3-9 SOAP-like rows of 40 each (unit rows, zeta 4) and 40-80 pairs each."""
    rng = np.random.default_rng(5)
    counts = rng.integers(3, 10, 24)
    soff = np.concatenate(([0], np.cumsum(counts)))
    base = np.abs(rng.normal(size=40))
    x = base + 0.05 * rng.normal(size=(soff[-1], 40))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs = rng.integers(40, 80, 24)  # the pair term carries most of D², as with real cells
    poff = np.concatenate(([0], np.cumsum(pairs)))
    shift = np.repeat(rng.uniform(-0.3, 0.3, 24), pairs)
    r = rng.uniform(2.5, 5.0, poff[-1]) + shift
    w = rng.uniform(0.5, 1.0, poff[-1])
    terms = [
        K.pair_term(r, w, poff, 0.3, 6.0, 0.8),
        K.Term.dot(x, soff, None, zeta=4, delta=0.3),
    ]
    return K.KernelData(terms, counts, **mode)


MODES = [{}, {"balance": True}, {"normalize": False}, {"normalize": False, "per_atom": True}]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("piece", [5, 2048])
def test_d2_below_range_exact_below_psi_and_a_bound_above(mode, piece, monkeypatch):
    monkeypatch.setattr(K, "PIECE", piece)  # several pieces, in-place and gathered
    kd = _cells_kernel(**mode)
    for i in range(kd.n):
        q = kd.query(i)
        full = kd.d2_range(q, 0, kd.n)
        for quant in (0.05, 0.3, 0.8):
            psi = np.full(kd.n, np.quantile(full, quant))
            psi[::7] = -np.inf  # not wanted: any value
            got = kd.d2_below_range(q, 3, kd.n, psi[3:])
            ref, psi = full[3:], psi[3:]
            low = ref < psi
            assert np.allclose(got[low], ref[low], rtol=0, atol=kd.eps)
            assert np.all(got[~low] >= psi[~low]) and np.all(got <= ref + kd.eps)


def test_d2_below_range_wanted_everywhere_is_d2_range(monkeypatch):
    monkeypatch.setattr(K, "PIECE", 5)
    kd = _cells_kernel()
    q = kd.query(4)
    before = kd.costly_evaluated
    got = kd.d2_below_range(q, 2, 21, np.full(19, np.inf))
    assert np.array_equal(got, kd.d2_range(q, 2, 21))  # the same pieces: the same bits
    assert kd.costly_evaluated - before == 19


@pytest.mark.parametrize("mode", MODES)
def test_d2_below_gathers_in_bounded_blocks_exactly(mode, monkeypatch):
    """Costly rows gathered GATHER configs at a time (here 4): still exact below psi and
    a bound above, and the same values as one gather of them all, to rounding."""
    kd = _cells_kernel(**mode)
    for i in range(0, kd.n, 5):
        q = kd.query(i)
        full = kd.d2_range(q, 0, kd.n)
        psi = np.full(kd.n, np.quantile(full, 0.8))
        monkeypatch.setattr(K, "GATHER", 4)
        got = kd.d2_below(q, np.arange(kd.n), psi)
        monkeypatch.setattr(K, "GATHER", 1 << 20)
        once = kd.d2_below(q, np.arange(kd.n), psi)
        low = full < psi
        assert low.sum() > 8  # several blocks of 4 gathered
        assert np.allclose(got[low], full[low], rtol=0, atol=kd.eps)
        assert np.allclose(got, once, rtol=0, atol=kd.eps)
        assert np.all(got[~low] >= psi[~low]) and np.all(got <= full + kd.eps)


def test_d2_below_takes_the_pool_eps():
    kd = _cells_kernel()
    q = kd.query(0)
    full = kd.d2_range(q, 0, kd.n)
    psi = np.full(kd.n, np.quantile(full, 0.5))
    n0 = kd.costly_evaluated
    kd.d2_below(q, np.arange(kd.n), psi)
    own = kd.costly_evaluated - n0
    kd.d2_below(q, np.arange(kd.n), psi, eps=1.0)  # a huge margin: every config computed
    assert kd.costly_evaluated - n0 - own == kd.n > own


# ---------------------------------------------------------------------------- a store


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> dict:
    """36 rattled 16-atom hcp cells (some with a vacancy) and 3 more as a given set."""
    from mlpdesign.describe.runner import describe

    bc = _bench_cells()
    tmp = tmp_path_factory.mktemp("cells")
    pool = bc.supercell_pool(tmp / "pool.xyz", 36, (2, 2, 2), seed=3)
    given = bc.supercell_pool(tmp / "given.xyz", 3, (2, 2, 2), seed=8)
    out = {"pool": pool, "store": tmp / "pool.h5", "given": tmp / "given.h5"}
    describe(pool, out["store"], gap=SMALL_GAP)
    describe(given, out["given"], gap=SMALL_GAP)
    return out


def _reference(cells, n: int, given: bool = False):
    with open_store(cells["store"]) as s:
        kd = K.StoreKernel(s)
        gk = None
        if given:
            with open_store(cells["given"]) as g:
                gk = K.StoreKernel(g, like=kd)
        return maxmin_reference(kd, n, given=gk), kd, gk


LIMIT = "1.6M"  # some of the 18 blocks cached, the others spilled


def test_store_has_many_soap_rows_per_config(cells):
    with open_store(cells["store"]) as s:
        assert np.diff(s.offsets(1)).min() >= 15  # SOAP: one row per atom


@pytest.mark.parametrize("given", [False, True])
def test_streamed_large_cells_are_the_textbook_loop(cells, given):
    ref, kd, gk = _reference(cells, 14, given)
    opts = {"given": cells["given"]} if given else {}
    a = select_streamed(cells["store"], 14, memory_limit=LIMIT, block_rows=32, **opts)
    b = select_streamed(cells["store"], 14, memory_limit="1G", block_rows=32, **opts)
    assert a.index.tolist() == b.index.tolist() == ref.index.tolist()
    assert np.array_equal(a.psi, b.psi)  # bitwise: same block grid, any cache
    eps = kd.eps if gk is None else max(kd.eps, kd.eps_with(gk))
    assert np.allclose(a.psi, ref.psi, rtol=0, atol=eps)
    assert a.stats["cached_blocks"] < a.stats["blocks"] and a.stats["spill_bytes"] > 0
    # the bound left out SOAP for some candidates the triangle inequality kept
    assert 0 < a.stats["costly_evaluated"] < a.evaluated


@needs_mpi
def test_streamed_large_cells_under_mpi(cells, tmp_path):
    serial = select_streamed(cells["store"], 14, memory_limit=LIMIT, block_rows=32)
    out = tmp_path / "mpi.json"
    mpirun(2, "select", cells["store"], "-n", 14, "-o", out, "-q", "--block-rows", 32)
    got = json.loads(out.read_text())
    assert got["index"] == serial.index.tolist()
    assert got["psi"][1:] == serial.psi.tolist()[1:]  # bitwise (JSON round-trips floats)


def test_design_points_keep_their_queries_self_kernels():
    from mlpdesign.kernels.blocks import DesignPoints

    kd = _cells_kernel()
    dp = DesignPoints(kd)
    for i in (3, 0, 17, 9, 22, 5, 11):
        dp.add(kd.query(i))
    for chunk, _queries in dp.chunks:
        fresh = K.KernelData(chunk.terms, chunk.n_atoms)  # recomputed from the rows
        assert np.array_equal(chunk.diag_t, fresh.diag_t)
        assert np.array_equal(chunk.diag, fresh.diag)
    assert [c.n for c, _ in dp.chunks] == [4, 2, 1]
    q = kd.query(14)
    want = kd.d2_subset(q, [3, 0, 17, 9, 22, 5, 11])
    assert np.allclose(dp.d2(q), want, rtol=0, atol=kd.eps)
