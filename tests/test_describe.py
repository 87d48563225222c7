"""describe: rows equal quippy's, fast distance_2b path, jobs, shards + merge, bad input."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from ase.io import read, write
from click.testing import CliRunner
from conftest import SMALL_GAP

from mlpdesign.cli import cli
from mlpdesign.describe.runner import DescriptorCalculator, describe, distance_2b_direct
from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import parse_gap
from mlpdesign.generate.pool import PoolSpec, iter_candidates
from mlpdesign.io.store import open_store, stores_equal


def _sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def test_stored_rows_equal_quippy_descriptor_calc(small_pool, small_store):
    from quippy.descriptors import Descriptor

    frames = read(small_pool, ":")
    d2b = Descriptor("distance_2b cutoff=5.0")
    soap = Descriptor("soap cutoff=5.0 l_max=4 n_max=4 normalize=T atom_sigma=0.5 n_Z=1 Z={40}")
    with open_store(small_store) as s:
        assert s.n_configs == len(frames) == 40
        assert s.candidate_id.tolist() == [a.info["candidate_id"] for a in frames]
        assert s.n_atoms.tolist() == [len(a) for a in frames]
        assert [d.dim for d in s.descriptors] == [1, 51]
        for c, atoms in enumerate(frames):
            q = soap.calc(atoms)
            np.testing.assert_array_equal(s.rows("soap", c, c + 1), q["data"])
            np.testing.assert_array_equal(s.weights("soap", c, c + 1), q["covariance_cutoff"])
            q = d2b.calc(atoms)
            order = np.argsort(q["data"][:, 0], kind="stable")
            np.testing.assert_allclose(s.rows(0, c, c + 1), q["data"][order], rtol=0, atol=1e-10)
            np.testing.assert_allclose(
                s.weights(0, c, c + 1), q["covariance_cutoff"][order], rtol=0, atol=1e-10
            )
            assert s.structure[c].decode() == atoms.info["structure"]
            np.testing.assert_array_equal(s.F[c], atoms.info["F"])


@pytest.mark.parametrize(
    "extra", ["cutoff=7.0", "cutoff=4.0 cutoff_transition_width=1.5", "cutoff=3.3"]
)
def test_direct_distance_2b_matches_quippy(extra):
    """Ordered pairs (each twice), QUIP's cosine cut-off weights, to 1e-10, many cells."""
    from quippy.descriptors import Descriptor

    frames = list(iter_candidates(PoolSpec(seed=3, eig_min=0.9, eig_max=1.1), 0, 24))
    frames += list(iter_candidates(PoolSpec(seed=4, supercell=(2, 1, 2)), 0, 6))
    d = Descriptor(f"distance_2b {extra}")
    p = parse_gap(f"distance_2b {extra} covariance_type=ard_se delta=1 theta_uniform=0.3")[0]
    cut = p.params["cutoff"]
    width = p.params.get("cutoff_transition_width", 0.5)
    partial = empty = 0
    for atoms in frames:
        q = d.calc(atoms)
        rows, w = distance_2b_direct(atoms, cut, width)
        if "covariance_cutoff" not in q:  # quippy's way of saying: no pair in range
            assert rows.shape == (0, 1) and w.shape == (0,)
            empty += 1
            continue
        order = np.argsort(q["data"][:, 0], kind="stable")
        assert rows.shape == q["data"].shape
        np.testing.assert_allclose(rows, q["data"][order], rtol=0, atol=1e-10)
        np.testing.assert_allclose(w, q["covariance_cutoff"][order], rtol=0, atol=1e-10)
        partial += int(((w > 0) & (w < 1)).sum())
    assert partial > 0  # the transition region was exercised
    assert (empty > 0) == (cut < 3.5)  # and configs with no pair at all


def test_reference_path_equals_fast_path():
    specs = parse_gap(SMALL_GAP)
    fast, ref = DescriptorCalculator(specs), DescriptorCalculator(parse_gap(SMALL_GAP), False)
    for atoms in iter_candidates(PoolSpec(seed=5), 0, 10):
        for (r1, w1), (r2, w2) in zip(fast.compute(atoms), ref.compute(atoms), strict=True):
            np.testing.assert_allclose(r1, r2, rtol=0, atol=1e-10)
            np.testing.assert_allclose(w1, w2, rtol=0, atol=1e-10)


def test_jobs_and_chunking_give_the_same_bytes(small_pool, small_store, tmp_path):
    describe(small_pool, tmp_path / "j2.h5", gap=SMALL_GAP, jobs=2, chunk_size=7, command="")
    # chunk size changes the write pattern but not the file layout (early allocation)
    assert stores_equal(small_store, tmp_path / "j2.h5") == []
    describe(small_pool, tmp_path / "j1.h5", gap=SMALL_GAP, jobs=1, chunk_size=7)
    assert _sha(tmp_path / "j1.h5") == _sha(tmp_path / "j2.h5")
    assert not (tmp_path / "j1.h5.partial").exists()


def test_shards_and_merge_equal_an_unsharded_run(small_pool, small_store, tmp_path):
    runner = CliRunner()
    parts = []
    for i in (3, 1, 2):  # any order
        part = tmp_path / f"part-{i}.h5"
        r = runner.invoke(
            cli,
            [
                "describe",
                str(small_pool),
                "-o",
                str(part),
                "--gap",
                SMALL_GAP,
                "--shard",
                f"{i}/3",
                "-q",
            ],
        )
        assert r.exit_code == 0, r.output
        parts.append(str(part))
    with open_store(parts[0]) as s:
        assert s.shard == "3/3" and s.config_start == 26 and s.n_configs == 14
        assert s.pool_n_configs == 40
    r = runner.invoke(cli, ["merge", *parts, "-o", str(tmp_path / "m.h5"), "-q"])
    assert r.exit_code == 0, r.output
    assert stores_equal(small_store, tmp_path / "m.h5") == []
    with open_store(tmp_path / "m.h5") as s:
        assert s.attrs["command"].startswith("mlpdesign merge")

    # refusals: missing shard, overlapping shards, another pool, another gap string
    r = runner.invoke(cli, ["merge", parts[0], parts[1], "-o", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "configs 13..25 of the pool are missing" in r.stderr
    r = runner.invoke(cli, ["merge", *parts, str(small_store), "-o", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "overlaps another shard" in r.stderr
    other = tmp_path / "other.xyz"
    write(other, list(iter_candidates(PoolSpec(seed=8), 0, 40)), format="extxyz")
    describe(other, tmp_path / "o3.h5", gap=SMALL_GAP, shard=(3, 3))
    r = runner.invoke(
        cli, ["merge", parts[1], parts[2], str(tmp_path / "o3.h5"), "-o", str(tmp_path / "x.h5")]
    )
    assert r.exit_code == 2 and "different pools" in r.stderr
    describe(
        small_pool,
        tmp_path / "g3.h5",
        gap=SMALL_GAP.replace("cutoff=5.0", "cutoff=4.5", 1),
        shard=(3, 3),
    )
    r = runner.invoke(
        cli, ["merge", parts[1], parts[2], str(tmp_path / "g3.h5"), "-o", str(tmp_path / "x.h5")]
    )
    assert r.exit_code == 2 and "different descriptor strings" in r.stderr
    assert not (tmp_path / "x.h5").exists()


def test_info_words_and_json(small_store):
    runner = CliRunner()
    r = runner.invoke(cli, ["info", str(small_store)])
    assert r.exit_code == 0
    assert "configs:     40," in r.output and "[1] soap:" in r.output and "x dim 51" in r.output
    r = runner.invoke(cli, ["info", str(small_store), "--json"])
    data = json.loads(r.output)
    assert data["n_configs"] == 40 and data["descriptors"][1]["dim"] == 51
    assert data["descriptors"][0]["kernel"]["theta_uniform"] == 0.3
    assert data["gap"] == SMALL_GAP and len(data["pool_sha256"]) == 64


def test_default_gap_follows_the_pool_species(tmp_path):
    pool = tmp_path / "ti.xyz"
    frames = list(iter_candidates(PoolSpec(element="Ti", seed=2), 0, 3))
    write(pool, frames, format="extxyz")
    gap = SMALL_GAP.replace("Z={40}", "Z={22}")
    describe(pool, tmp_path / "explicit.h5", gap=gap)
    describe(pool, tmp_path / "default.h5", chunk_size=3)
    with open_store(tmp_path / "default.h5") as s:
        assert "Z={22}" in s.descriptors[1].descriptor and s.descriptors[1].dim == 606
        assert s.rows(1).shape == (s.n_atoms.sum(), 606)


# ---------------------------------------------------------------------------- bad input


def _run(args):
    r = CliRunner().invoke(cli, args)
    return r.exit_code, r.stderr


def _nothing_written(out):
    assert not out.exists()
    assert not out.with_name(out.name + ".partial").exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


@pytest.mark.parametrize(
    "content, message",
    [
        ("hello world\n", "line 1: expected the number of atoms of config 0, got 'hello world'"),
        ("", "no configurations"),
        (
            '2\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3\nZr 0 0 0\n',
            "file ends inside config 0",
        ),
        (
            '0\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3\n',
            "config 0 (line 1) has no atoms",
        ),
        (
            '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3\nZr 0 0 zero\n',
            "config 0: cannot read it as extxyz",
        ),
        (
            '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3\nZr 0 0 0\n'
            '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3\nTi 0 0 0\n',
            "bad.xyz: frame 1 has Ti (Z=22), which is not in the SOAP Z list {40}",
        ),
    ],
)
def test_bad_pools_give_one_line_and_no_output(tmp_path, content, message):
    pool = tmp_path / "bad.xyz"
    pool.write_text(content)
    out = tmp_path / "out.h5"
    code, err = _run(["describe", str(pool), "-o", str(out), "--gap", SMALL_GAP])
    assert code == 2
    assert message in err and err.startswith("mlpdesign: error:") and err.count("\n") == 1
    _nothing_written(out)


def test_bad_arguments(small_pool, small_store, tmp_path):
    out = tmp_path / "out.h5"
    code, err = _run(["describe", str(tmp_path / "nope.xyz"), "-o", str(out)])
    assert code == 2 and "no such pool file" in err
    for gap, message in (
        (
            "soap cutoff=5 l_max=4 n_max=4 covariance_type=dot_product zeta=4 delta=1",
            "missing required key atom_sigma=",
        ),
        (
            "distance_2b cutoff=3 Z1=abc covariance_type=ard_se delta=1 theta_uniform=1",
            "Z1=abc is not valid",
        ),
        (
            "power_so4 cutoff=3 Z=x covariance_type=dot_product zeta=2 delta=1",
            "quippy rejects descriptor 'power_so4 cutoff=3 Z=x'",
        ),
    ):
        code, err = _run(["describe", str(small_pool), "-o", str(out), "--gap", gap])
        assert code == 2 and message in err and err.count("\n") == 1, err
    _nothing_written(out)
    code, err = _run(["describe", str(small_pool), "-o", str(small_store)])
    assert code == 2 and "exists; use --force" in err
    code, err = _run(["info", str(small_pool / "missing.h5")])
    assert code == 2 and "no such file" in err


def test_partial_of_another_pool_is_refused(small_pool, tmp_path):
    out = tmp_path / "out.h5"
    partial = tmp_path / "out.h5.partial"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps({"pool_sha256": "0" * 64}))
    code, err = _run(["describe", str(small_pool), "-o", str(out), "--gap", SMALL_GAP])
    assert code == 2 and re.search("holds an interrupted run for another pool", err)
    code, err = _run(
        ["describe", str(small_pool), "-o", str(out), "--gap", SMALL_GAP, "--restart", "-q"]
    )
    assert code == 0 and out.exists() and not partial.exists()


def test_library_refuses_bad_options(small_pool, tmp_path):
    with pytest.raises(MlpdesignError, match="--dtype"):
        describe(small_pool, tmp_path / "x.h5", dtype="float16")


def test_a_dead_worker_keeps_the_finished_chunks(small_pool, small_store, tmp_path, monkeypatch):
    import os

    import mlpdesign.describe.runner as D

    real = D._run_chunk

    def dying(c0, c1):  # a worker that dies like a QUIP abort, half way through the pool
        if c0 >= 20:
            os._exit(3)
        return real(c0, c1)

    dying.__module__, dying.__qualname__ = D.__name__, "_run_chunk"  # forked workers find it
    monkeypatch.setattr(D, "_run_chunk", dying)
    out = tmp_path / "o.h5"
    with pytest.raises(D.WorkerDied, match="run the same command to resume"):
        describe(small_pool, out, gap=SMALL_GAP, jobs=2, chunk_size=5)
    assert (tmp_path / "o.h5.partial" / "manifest.json").exists() and not out.exists()
    monkeypatch.undo()
    describe(small_pool, out, gap=SMALL_GAP, jobs=2, chunk_size=5)
    assert stores_equal(small_store, out) == []
