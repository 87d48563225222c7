"""A damaged store is reported as damaged (one line naming it, exit 2), never a KeyError or a
selection that ends after one pick because every candidate 'duplicates' a corrupt row."""

from __future__ import annotations

import shutil
import struct

import h5py
import numpy as np
import pytest
from clihelpers import one_line_error, run

from mlpdesign.errors import MlpdesignError
from mlpdesign.io import store as store_mod
from mlpdesign.io.store import open_store


def _copy(small_store, tmp_path):
    path = tmp_path / "pool.h5"
    shutil.copy(small_store, path)
    return path


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _heap(path):
    """Overwrite the first local heap (the group's link names) with garbage."""
    data = bytearray(path.read_bytes())
    at = data.index(b"HEAP")
    data[at + 4 : at + 64] = b"\xff" * 60
    path.write_bytes(bytes(data))


def _format_only(path):
    path.unlink()
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "mlpdesign-store"
        f.attrs["format_version"] = np.int64(1)


def _no_weights(path):
    with h5py.File(path, "r+") as f:
        del f["descriptors/1/weights"]


def _nan(path):
    with h5py.File(path, "r+") as f:
        f["descriptors/1/rows"][7, 3] = np.nan


def _big_soap(path):
    with h5py.File(path, "r+") as f:
        f["descriptors/1/rows"][11, 5] = 1e6


def _flipped_bit(path):
    """One bit flipped in the exponent of a SOAP value (what a bad disk block does)."""
    with h5py.File(path, "r+") as f:
        ds = f["descriptors/1/rows"]
        row = ds[20]
        j = int(np.argmax(np.abs(row)))
        bits = struct.unpack("<Q", struct.pack("<d", row[j]))[0] ^ (1 << 61)
        row[j] = struct.unpack("<d", struct.pack("<Q", bits))[0]
        ds[20] = row


DAMAGE = {
    "truncated": (_truncated, "truncated"),
    "heap": (_heap, ""),
    "format-only": (_format_only, "no attribute 'gap'"),
    "no-weights": (_no_weights, "no dataset 'descriptors/1/weights'"),
    "nan": (_nan, "NaN or infinite rows in row 7 of descriptor 1 (soap)"),
    "1e6": (_big_soap, "norm 1e+06 where SOAP rows are unit"),
    "bit-flip": (_flipped_bit, "where SOAP rows are unit"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_store_is_reported_as_damaged(case, tmp_path, small_store):
    path = _copy(small_store, tmp_path)
    damage, detail = DAMAGE[case]
    damage(path)
    for args in (["info", path], ["select", path, "-n", "5", "-o", tmp_path / "s.h5"]):
        err = one_line_error(run(*args))
        assert f"{path}: is damaged" in err and detail in err, err
        assert "duplicate" not in err
    assert not (tmp_path / "s.h5").exists()


def test_values_are_checked_block_by_block(tmp_path, small_store, monkeypatch):
    path = _copy(small_store, tmp_path)
    with h5py.File(path, "r+") as f:
        n = f["descriptors/1/rows"].shape[0]
        f["descriptors/1/rows"][n - 1, 0] = np.inf
    read = []
    real = store_mod._check_rows

    def spy(store, k):
        ds = store.f[f"descriptors/{k}/rows"]
        read.append(ds.shape[0])
        return real(store, k)

    monkeypatch.setattr(store_mod, "_CHECKED", set())  # as in a fresh process
    monkeypatch.setattr(store_mod, "CHECK_BYTES", 8 * 51 * 4)  # four SOAP rows at a time
    monkeypatch.setattr(store_mod, "_check_rows", spy)
    with pytest.raises(MlpdesignError, match=f"row {n - 1} of descriptor 1 .soap., config 39"):
        open_store(path)
    with open_store(small_store) as s:  # a sound store opens (and is checked once)
        assert s.n_configs == 40
    with open_store(small_store) as s:
        pass
    assert len(read) == 2 + 2  # damaged: both descriptors read; sound: once, not twice


def test_unnormalised_synthetic_rows_are_not_damage(tmp_path):
    """Rows that are not unit vectors throughout (a synthetic store) are data, not damage."""
    from mlpdesign.io.store import write_store_arrays

    gap = (
        "soap cutoff=5.0 l_max=1 n_max=1 atom_sigma=0.5 covariance_type=dot_product zeta=2 delta=1"
    )
    rows = np.random.default_rng(0).normal(size=(6, 4))
    write_store_arrays(tmp_path / "s.h5", gap, np.arange(6), [rows])
    with open_store(tmp_path / "s.h5") as s:
        assert s.n_configs == 6


@pytest.mark.parametrize("case", ["nan", "1e6", "bit-flip"])
def test_report_checks_values_as_its_kernel_loads_them(case, tmp_path, small_store, monkeypatch):
    """select and report in memory open the store unchecked and check the rows while the
    kernel reads them (one read): the same damage line as the check on open, nothing written."""
    sel = tmp_path / "sel.h5"
    assert run("select", small_store, "-n", "5", "-o", sel).exit_code == 0
    path = _copy(small_store, tmp_path)
    damage, detail = DAMAGE[case]
    damage(path)
    monkeypatch.setattr(store_mod, "_CHECKED", set())  # as in a fresh process
    err = one_line_error(run("report", path, sel, "-o", tmp_path / "rep", "-q"))
    assert f"{path}: is damaged" in err and detail in err, err
    assert not (tmp_path / "rep").exists()


def test_kernel_load_feeds_every_row_to_the_check_once(small_store, monkeypatch):
    """The load's check sees each stored row exactly once (the reader's first look at a
    block is not counted twice) and marks the store checked."""
    from mlpdesign.kernels.core import StoreKernel

    monkeypatch.setattr(store_mod, "_CHECKED", set())
    seen: dict[int, list[int]] = {}
    real = store_mod.RowCheck.rows

    def spy(self, r0, x):
        before = len(self._seen)
        real(self, r0, x)
        if len(self._seen) > before:
            seen.setdefault(self.k, []).extend(range(r0, r0 + len(x)))

    monkeypatch.setattr(store_mod.RowCheck, "rows", spy)
    with open_store(small_store, check=False) as s:
        assert not store_mod.values_checked(s)
        StoreKernel(s)
        assert store_mod.values_checked(s)
        for k in range(len(s.descriptors)):
            assert sorted(seen[k]) == list(range(s.n_rows(k)))
