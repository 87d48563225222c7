"""``write``: picks of a selection from the pool, in pick order, with every info key."""

from __future__ import annotations

import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner
from test_vasp_fakerun import make_selection

from mlpdesign.cli import cli
from mlpdesign.errors import MlpdesignError
from mlpdesign.generate.pool import PoolSpec, generate
from mlpdesign.io.write import pool_frames, pool_frames_ase, write_extxyz, write_training_set

IDS = [17, 3, 38, 0, 25, 9]


@pytest.fixture
def selection(tmp_path, small_pool) -> Path:
    return make_selection(
        tmp_path / "selection.h5", small_pool, IDS, psi=[math.inf, 1.5, 0.9, 0.7, 0.4, 0.2]
    )


def test_write_keeps_order_info_rank_and_distance(tmp_path, small_pool, selection):
    out = tmp_path / "train.xyz"
    res = write_training_set(small_pool, selection, out)
    assert (res.n_written, res.n_selection, res.pool_frames) == (6, 6, 40)
    assert res.checksum_checked
    got = ase.io.read(out, index=":", format="extxyz")
    pool = ase.io.read(small_pool, index=":", format="extxyz")
    assert [int(a.info["candidate_id"]) for a in got] == IDS
    assert [a.info["selection_rank"] for a in got] == list(range(6))
    assert got[0].info["min_distance"] == math.inf
    assert [a.info["min_distance"] for a in got[1:]] == [1.5, 0.9, 0.7, 0.4, 0.2]
    for a in got:
        ref = pool[int(a.info["candidate_id"])]
        assert np.array_equal(a.positions, ref.positions)
        assert np.array_equal(a.cell.array, ref.cell.array)
        for key, val in ref.info.items():  # every pool key kept, F still 9 numbers
            assert np.array_equal(np.asarray(a.info[key]), np.asarray(val)), key
        assert np.shape(a.info["F"]) == (9,)
        assert a.calc is None


@pytest.mark.parametrize("suffix", [".json", ".txt"])
def test_every_selection_format(tmp_path, small_pool, selection, suffix):
    other = make_selection(
        tmp_path / f"sel{suffix}", small_pool, IDS, psi=[math.inf, 1.5, 0.9, 0.7, 0.4, 0.2]
    )
    write_training_set(small_pool, selection, tmp_path / "h5.xyz")
    write_training_set(small_pool, other, tmp_path / "other.xyz")
    assert (tmp_path / "h5.xyz").read_bytes() == (tmp_path / "other.xyz").read_bytes()


def test_first_n_is_a_prefix(tmp_path, small_pool, selection):
    write_training_set(small_pool, selection, tmp_path / "all.xyz")
    write_training_set(small_pool, selection, tmp_path / "three.xyz", n=3)
    full = (tmp_path / "all.xyz").read_text().splitlines()
    three = (tmp_path / "three.xyz").read_text().splitlines()
    assert len(ase.io.read(tmp_path / "three.xyz", index=":")) == 3
    assert full[: len(three)] == three


def test_fast_scan_equals_ase_reference(tmp_path):
    """The text scan returns exactly what parsing every frame with ASE returns."""
    pool = tmp_path / "pool.xyz"
    generate(pool, 300, PoolSpec(seed=11, supercell=(1, 1, 2)))
    ids = [299, 0, 150, 7, 42, 298, 1]
    fast, n_fast = pool_frames(pool, ids)
    ref, n_ref = pool_frames_ase(pool, ids)
    assert n_fast == n_ref == 300
    write_extxyz(tmp_path / "fast.xyz", fast)
    write_extxyz(tmp_path / "ref.xyz", ref)
    assert (tmp_path / "fast.xyz").read_bytes() == (tmp_path / "ref.xyz").read_bytes()


def test_selection_from_another_pool_is_refused(tmp_path, small_pool):
    other = tmp_path / "other.xyz"
    generate(other, 40, PoolSpec(seed=8))
    sel = make_selection(tmp_path / "sel.h5", other, [1, 2])
    with pytest.raises(MlpdesignError, match="different pool"):
        write_training_set(small_pool, sel, tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_ids_missing_from_pool_are_refused_without_checksum(tmp_path, small_pool):
    sel = make_selection(tmp_path / "sel.h5", None, [5, 40, 77], pool_sha256="")
    with pytest.raises(MlpdesignError, match=r"2 selected candidate ids are not in .*\(40, 77\)"):
        write_training_set(small_pool, sel, tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_bad_n_and_existing_output(tmp_path, small_pool, selection):
    with pytest.raises(MlpdesignError, match="holds only 6 picks"):
        write_training_set(small_pool, selection, tmp_path / "o.xyz", n=7)
    with pytest.raises(MlpdesignError, match="positive"):
        write_training_set(small_pool, selection, tmp_path / "o.xyz", n=0)
    (tmp_path / "o.xyz").write_text("keep")
    with pytest.raises(MlpdesignError, match="exists"):
        write_training_set(small_pool, selection, tmp_path / "o.xyz")
    assert (tmp_path / "o.xyz").read_text() == "keep"
    write_training_set(small_pool, selection, tmp_path / "o.xyz", force=True)
    assert len(ase.io.read(tmp_path / "o.xyz", index=":")) == 6


def test_pool_without_candidate_id_gets_ids_on_read(tmp_path, small_pool):
    frames = ase.io.read(small_pool, index=":")
    for a in frames:
        a.info.pop("candidate_id")
    bare = tmp_path / "bare.xyz"
    ase.io.write(bare, frames, format="extxyz")
    sel = make_selection(tmp_path / "sel.h5", bare, [7, 1])
    write_training_set(bare, sel, tmp_path / "out.xyz")
    got = ase.io.read(tmp_path / "out.xyz", index=":")
    assert [g.info["candidate_id"] for g in got] == [7, 1]
    np.testing.assert_allclose(got[0].positions, frames[7].positions)


def test_cli_write_and_errors(tmp_path, small_pool, selection):
    runner = CliRunner()
    out = tmp_path / "train.xyz"
    r = runner.invoke(cli, ["write", str(small_pool), str(selection), "-o", str(out), "-n", "4"])
    assert r.exit_code == 0, r.output
    assert "wrote 4 of 6 picks from 40 pool configurations" in r.stderr
    sizes = [len(a) for a in ase.io.read(out, index=":")]
    cost = sum(n**3 for n in sizes)
    assert f"{sum(sizes)} atoms; DFT cost sum(n_atoms^3) = {cost:.4g}" in r.stderr
    assert len(ase.io.read(out, index=":")) == 4
    other = tmp_path / "other.xyz"
    generate(other, 40, PoolSpec(seed=8))
    r = runner.invoke(cli, ["write", str(other), str(selection), "-o", str(tmp_path / "x.xyz")])
    assert r.exit_code == 2
    assert r.stderr.startswith("mlpdesign: error: ") and r.stderr.count("\n") == 1
    assert "different pool" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "x.xyz").exists()
    r = runner.invoke(
        cli, ["write", str(small_pool), str(tmp_path / "nope.h5"), "-o", str(tmp_path / "y.xyz")]
    )
    assert r.exit_code == 2 and "no such selection file" in r.stderr
    r = runner.invoke(cli, ["write", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output


def test_cut_off_pool_frame_is_one_clear_line(tmp_path, small_pool):
    lines = small_pool.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.xyz"
    cut.write_text("".join(lines[:-1]))  # the last frame lost its last atom line
    sel = make_selection(tmp_path / "sel.h5", None, [39], pool_sha256="")
    with pytest.raises(MlpdesignError, match="cut.xyz: file ends inside config 39"):
        write_training_set(cut, sel, tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()
