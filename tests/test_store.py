"""The HDF5 store: synthetic writer, streaming reader, pool check, merge refusals."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import DEFAULT_GAP
from mlpdesign.io.store import open_store, stores_equal, verify_pool, write_store_arrays


def _synthetic(path, seed=0, **kw):
    rng = np.random.default_rng(seed)
    o2 = np.array([0, 3, 5, 5, 9, 12])
    o1 = np.array([0, 1, 2, 4, 5, 6])
    rows = [rng.random((12, 1)), rng.random((6, 7))]
    w = [rng.random(12), np.ones(6)]
    write_store_arrays(
        path,
        DEFAULT_GAP,
        np.arange(10, 15),
        rows,
        w,
        [o2, o1],
        structure=["hcp", "fcc", "bcc", "hcp", "hcp"],
        force=True,
        **kw,
    )
    return rows, w, [o2, o1]


def test_round_trip_and_streaming_ranges(tmp_path):
    rows, w, offs = _synthetic(tmp_path / "s.h5")
    with open_store(tmp_path / "s.h5") as s:
        assert s.n_configs == 5 and s.candidate_id.tolist() == [10, 11, 12, 13, 14]
        assert [d.name for d in s.descriptors] == ["distance_2b", "soap"]
        assert [d.dim for d in s.descriptors] == [1, 7]
        assert s.descriptors[1].kernel == {
            "covariance_type": "dot_product",
            "zeta": 4,
            "delta": 0.3,
        }
        assert s.structure.tolist() == [b"hcp", b"fcc", b"bcc", b"hcp", b"hcp"]
        assert np.isnan(s.F).all() and s.F.shape == (5, 9)
        assert s.n_atoms.tolist() == [1, 1, 2, 1, 1]  # SOAP rows per config
        np.testing.assert_array_equal(s.offsets(0), offs[0])
        np.testing.assert_array_equal(s.rows(0, 1, 4), rows[0][3:9])
        np.testing.assert_array_equal(s.weights("distance_2b", 3, 5), w[0][5:12])
        np.testing.assert_array_equal(s.rows("soap"), rows[1])
        ranges = s.config_ranges(max_rows=4)
        assert ranges[0][0] == 0 and ranges[-1][1] == 5
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        for c0, c1 in ranges:
            assert c1 > c0
            assert c1 - c0 == 1 or s.offsets(0)[c1] - s.offsets(0)[c0] <= 4
        with pytest.raises(MlpdesignError, match="outside"):
            s.rows(0, 3, 9)
        with pytest.raises(MlpdesignError, match="no descriptor named 'bond'"):
            s.rows("bond")


def test_same_data_same_bytes(tmp_path):
    _synthetic(tmp_path / "a.h5")
    _synthetic(tmp_path / "b.h5")
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]
    assert stores_equal(tmp_path / "a.h5", tmp_path / "b.h5") == []
    _synthetic(tmp_path / "c.h5", seed=1)
    assert "/descriptors/0/rows differs" in stores_equal(tmp_path / "a.h5", tmp_path / "c.h5")


def test_float32_and_empty_descriptor(tmp_path):
    write_store_arrays(
        tmp_path / "e.h5",
        DEFAULT_GAP,
        [7, 8],
        [np.zeros((0, 1)), np.ones((2, 3))],
        offsets=[[0, 0, 0], None],
        dtype="float32",
    )
    with open_store(tmp_path / "e.h5") as s:
        assert s.rows(0).shape == (0, 1) and s.rows(1).dtype == np.float32
        assert s.dtype == "float32" and s.config_ranges() == [(0, 2)]


def test_verify_pool(tmp_path):
    pool = tmp_path / "pool.xyz"
    pool.write_text("x")
    from mlpdesign.io.atomic import file_sha256

    _synthetic(tmp_path / "s.h5", pool_sha256=file_sha256(pool), pool_path=str(pool))
    with open_store(tmp_path / "s.h5") as s:
        verify_pool(s, pool)
        pool.write_text("y")
        with pytest.raises(MlpdesignError, match="different pool"):
            verify_pool(s, pool)


def test_open_store_refuses_other_files(tmp_path):
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(MlpdesignError, match="not an HDF5 file"):
        open_store(tmp_path / "t.txt")
    with h5py.File(tmp_path / "o.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(MlpdesignError, match="not an mlpdesign descriptor store"):
        open_store(tmp_path / "o.h5")
    with pytest.raises(MlpdesignError, match="no such store"):
        open_store(tmp_path / "missing.h5")


def test_writer_checks_array_shapes(tmp_path):
    with pytest.raises(MlpdesignError, match="offsets of descriptor 0"):
        write_store_arrays(
            tmp_path / "x.h5",
            DEFAULT_GAP,
            [1, 2],
            [np.zeros((3, 1)), np.zeros((2, 4))],
            offsets=[[0, 1, 2], None],
        )
    assert not (tmp_path / "x.h5").exists()
