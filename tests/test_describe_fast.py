"""describe's fast paths against their references: the extxyz frame parser against ASE's
reader, the direct quippy call against ``Descriptor.calc``, and damaged saved chunks."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import write
from ase.io.extxyz import key_val_str_to_dict
from conftest import SMALL_GAP

from mlpdesign.describe.runner import (
    DamagedChunk,
    DescriptorCalculator,
    Frame,
    ase_value,
    describe,
    index_pool,
    read_frames,
    read_frames_ase,
)
from mlpdesign.gap.strings import parse_gap
from mlpdesign.generate.pool import PoolSpec, iter_candidates
from mlpdesign.io.store import stores_equal

LATTICE = 'Lattice="3.2 0 0 0 3.2 0 0.1 0 5.1"'


def _same_frame(a: Frame, b: Frame) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    assert a.positions.dtype == b.positions.dtype == np.float64
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell, b.cell)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    for key in ("candidate_id", "structure", "F"):
        assert (key in a.info) == (key in b.info), key
        if key in a.info:
            va, vb = a.info[key], b.info[key]
            assert type(va) is type(vb), (key, va, vb)
            np.testing.assert_array_equal(va, vb)


@pytest.mark.parametrize(
    "raw",
    [
        "5", "-12", "+3", "5.0", "1e3", "nan", "inf", "Infinity", "hcp", "T", "F", "true",
        "TRUE", "t", "1 2 3", "1 2.5 3", "T T F", "T x", "0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9",
        "99999999999999999999", "1_000", "0x10", "",
    ],
)  # fmt: skip
@pytest.mark.parametrize("key", ["candidate_id", "structure", "F", "Lattice", "pbc", "uid"])
def test_value_conversion_is_ases(key, raw):
    try:
        want = key_val_str_to_dict(f'{key}="{raw}"')[key]
    except ValueError:  # e.g. a Lattice that is not 9 numbers
        with pytest.raises(ValueError):
            ase_value(key, raw)
        return
    got = ase_value(key, raw)
    assert type(got) is type(want), (got, want)
    np.testing.assert_array_equal(got, want)


def _frames_text() -> str:
    """Frames that exercise the parser: generate's output plus hand-written variants,
    some plain (parsed here) and some not (left to ASE)."""
    import io

    buf = io.StringIO()
    write(buf, list(iter_candidates(PoolSpec(seed=3, supercell=(2, 1, 1)), 0, 4)), format="extxyz")
    text = buf.getvalue()
    atoms = "Zr 0.0 0.0 0.0\nZr 1.6 0.9 2.55\n"
    for comment, lines in [
        (f"{LATTICE} Properties=species:S:1:pos:R:3 candidate_id=7 structure=hcp", atoms),
        (f'{LATTICE} pbc="T T F" candidate_id=+8 structure=T', atoms),  # no Properties
        (f'{LATTICE} pbc=F Properties=species:S:1:pos:R:3 structure="1"', atoms),
        (
            f"{LATTICE} Properties=forces:R:3:species:S:1:pos:R:3 candidate_id=9 "
            'F="1 0 0 0 1 0 0 0 1"',
            "0.1 0.2 0.3 zr 0.0 0.0 0.0\n1 2 3 ZR 1.6 0.9 2.55 extra\n",
        ),
        (f"{LATTICE} candidate_id=10.0 structure=nan", atoms),
        (f'{LATTICE} candidate_id=11 structure="a b" comment="it\'s"', atoms),  # ASE only
        ("Lattice=[3.2,0,0,0,3.2,0,0,0,5.1] candidate_id=12 tag", atoms),  # ASE only
        (f"{LATTICE} Properties=species:S:1:pos:R:3:tags:I:1", atoms.replace("\n", " 5\n")),
        (f'{LATTICE} candidate_id=14 F="1 2 3" structure=bcc', atoms),
        ("Properties=species:S:1:pos:R:3 candidate_id=15", atoms),  # no Lattice: ASE only
    ]:
        text += f"2\n{comment}\n{lines}"
    return text


def test_frame_parser_equals_ase_reader(tmp_path):
    pool = tmp_path / "mixed.xyz"
    pool.write_text(_frames_text())
    index = index_pool(pool)
    ours = list(read_frames(index, 0, index.n_configs))
    ref = [Frame.from_atoms(a) for a in read_frames_ase(index, 0, index.n_configs)]
    assert len(ours) == len(ref) == 14
    for a, b in zip(ours, ref, strict=True):
        _same_frame(a, b)
    # and on a generated pool, chunk by chunk
    pool = tmp_path / "gen.xyz"
    write(pool, list(iter_candidates(PoolSpec(seed=9), 0, 30)), format="extxyz")
    index = index_pool(pool)
    for c0, c1 in ((0, 30), (7, 19), (29, 30)):
        for a, b in zip(read_frames(index, c0, c1), read_frames_ase(index, c0, c1), strict=True):
            _same_frame(a, Frame.from_atoms(b))


def test_direct_quippy_call_equals_descriptor_calc():
    """Bit for bit: SOAP and a distance_2b that has to go through quippy (Z1/Z2 set),
    including configs where quippy finds no pair at all."""
    from quippy.descriptors import Descriptor

    gap = (
        "distance_2b cutoff=3.0 Z1=40 Z2=40 covariance_type=ard_se delta=1 theta_uniform=0.3 :"
        " soap cutoff=4.0 l_max=3 n_max=3 normalize=T atom_sigma=0.5 n_Z=1 Z={40} "
        "covariance_type=dot_product zeta=4 delta=1"
    )
    specs = parse_gap(gap)
    fast = DescriptorCalculator(specs)
    refs = [Descriptor(s.descriptor) for s in specs]
    frames = list(iter_candidates(PoolSpec(seed=3, eig_min=0.9, eig_max=1.1), 0, 12))
    frames += list(iter_candidates(PoolSpec(seed=4, supercell=(2, 1, 1)), 0, 3))
    empty = 0
    for atoms in frames:
        (r2, w2), (rs, ws) = fast.compute(Frame.from_atoms(atoms))
        q = refs[1].calc(atoms)
        np.testing.assert_array_equal(rs, q["data"])
        np.testing.assert_array_equal(ws, q["covariance_cutoff"])
        q = refs[0].calc(atoms)
        if "covariance_cutoff" not in q:
            assert r2.shape == (0, 1) and w2.shape == (0,)
            empty += 1
            continue
        order = np.lexsort(q["data"].T[::-1])
        np.testing.assert_array_equal(r2, q["data"][order])
        np.testing.assert_array_equal(w2, q["covariance_cutoff"][order])
    assert 0 < empty < len(frames)


def test_damaged_chunks_are_recomputed(small_pool, small_store, tmp_path):
    out = tmp_path / "o.h5"
    partial = tmp_path / "o.h5.partial"
    describe(small_pool, tmp_path / "ref.h5", gap=SMALL_GAP, chunk_size=10)

    def interrupted() -> list:
        """A partial with every chunk saved, as if killed just before assembling."""
        import mlpdesign.describe.runner as D

        real = D.assemble
        D.assemble = lambda *a, **k: (_ for _ in ()).throw(D.WorkerDied("stop"))
        try:
            with pytest.raises(D.WorkerDied):
                describe(small_pool, out, gap=SMALL_GAP, chunk_size=10)
        finally:
            D.assemble = real
        return sorted(partial.glob("chunk-*.npz"))

    chunks = interrupted()
    assert len(chunks) == 4
    chunks[1].write_bytes(chunks[1].read_bytes()[:100])  # cut off: not a zip any more
    chunks[2].write_bytes(b"")
    describe(small_pool, out, gap=SMALL_GAP, chunk_size=10)
    assert stores_equal(small_store, out) == [] and not partial.exists()

    out.unlink()
    chunks = interrupted()
    data = bytearray(chunks[3].read_bytes())
    data[len(data) // 2] ^= 0xFF  # zip directory intact, CRC of one array wrong
    chunks[3].write_bytes(bytes(data))
    with pytest.raises(DamagedChunk, match="run the same command again"):
        describe(small_pool, out, gap=SMALL_GAP, chunk_size=10)
    assert not out.exists() and not chunks[3].exists() and chunks[0].exists()
    describe(small_pool, out, gap=SMALL_GAP, chunk_size=10)
    assert stores_equal(small_store, out) == []
