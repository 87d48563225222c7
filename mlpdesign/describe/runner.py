"""Descriptors of a pool: QUIP through quippy, plus a direct path for ``distance_2b``.

:func:`describe` turns an extxyz pool into a descriptor store (:mod:`mlpdesign.io.store`):

* The pool is indexed once (byte offset of every frame), so each worker reads only its
  own chunk of configs and a shard (``--shard i/n``) reads only its own part.
* Every descriptor goes through ``quippy.descriptors.Descriptor.calc``, except a plain
  ``distance_2b`` (no Z filter, exponents, tail or residue options): its rows are just the
  pair distances within the cutoff, each pair twice (ordered pairs, as QUIP gives them), and
  its weights QUIP's ``coordination_function`` (1 below ``cutoff - cutoff_transition_width``,
  a cosine down to 0 at ``cutoff``; QUIP's default width is 0.5 A). A matscipy neighbour
  list gives those ~50x faster than quippy's per-pair Python unpacking. Pair rows are
  sorted by distance within each config on both paths (the order of pairs carries no
  information, and sorting makes the two paths give the same rows).
* Work is cut into chunks of configs; each finished chunk is saved in ``<output>.partial/``
  (atomically), so a killed run continues where it stopped when the same command is run
  again. The store is assembled from the chunks at the end, front to back, so it has the
  same bytes however the chunks were computed (one job or many, interrupted or not).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import (
    DEFAULT_GAP,
    DescriptorSpec,
    parse_gap,
    probe_descriptor,
    soap_species,
    with_species,
)
from mlpdesign.generate.pool import shard_range
from mlpdesign.io.atomic import atomic_path, check_output, file_sha256, require_file
from mlpdesign.io.lock import holding
from mlpdesign.io.store import STRUCTURE_DTYPE, ChunkData, StoreWriter, package_versions

#: Keys that keep a distance_2b on the direct (neighbour-list) path.
_FAST_2B_KEYS = {"cutoff", "cutoff_transition_width", "Z1", "Z2", "n_exponents", "exponents"}


# ---------------------------------------------------------------------------- pool index


@dataclass
class PoolIndex:
    """Where each frame of an extxyz pool starts, and what it holds, from one quick scan."""

    path: Path
    offsets: np.ndarray  # (n+1,) int64 byte offset of each frame; last = end of data
    n_atoms: np.ndarray  # (n,) int64
    first_seen: dict[str, int] = field(default_factory=dict)  # symbol -> first config
    species_known: bool = True

    @property
    def n_configs(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def symbols(self) -> list[str]:
        return sorted(self.first_seen)


_PROPS = re.compile(rb"[Pp]roperties=([^\s\"]+|\"[^\"]*\")")


def _species_column(comment: bytes) -> int | None:
    """Column (token index) of the species in the atom lines, from ``Properties=``."""
    m = _PROPS.search(comment)
    if not m:
        return 0  # plain xyz / ASE default: species first
    fields = m.group(1).strip(b'"').split(b":")
    col = 0
    for name, _kind, count in zip(fields[0::3], fields[1::3], fields[2::3], strict=False):
        if name.lower() in (b"species", b"element", b"symbol"):
            return col
        try:
            col += int(count)
        except ValueError:
            return None
    return None


def index_pool(path: str | os.PathLike) -> PoolIndex:
    """Scan an extxyz file once: frame offsets, atom counts and the chemical symbols.

    Raises a one-line :class:`MlpdesignError` for a missing or empty file, a line where a
    frame's atom count should be, a frame with no atoms or a file that ends mid-frame.
    """
    p = require_file(path, "pool file")
    offsets, counts, first_seen = [], [], {}
    known = True
    pos, lineno = 0, 0
    with open(p, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                break
            lineno += 1
            if not line.strip():  # blank lines between or after frames
                pos += len(line)
                continue
            c = len(counts)
            try:
                n = int(line)
            except ValueError:
                text = line.decode(errors="replace").strip()[:40]
                raise MlpdesignError(
                    f"{p}: line {lineno}: expected the number of atoms of config {c}, got "
                    f"{text!r} (is this an extended XYZ file?)"
                ) from None
            if n <= 0:
                raise MlpdesignError(f"{p}: config {c} (line {lineno}) has no atoms")
            comment = f.readline()
            lines = list(islice(f, n))
            if not comment or len(lines) < n:
                raise MlpdesignError(
                    f"{p}: file ends inside config {c} (line {lineno} "
                    f"announces {n} atoms); truncated?"
                )
            offsets.append(pos)
            counts.append(n)
            pos += len(line) + len(comment) + sum(map(len, lines))
            lineno += 1 + n
            if known:
                col = _species_column(comment)
                if col is None:
                    known = False
                    continue
                try:
                    syms = {ln.split(None, col + 1)[col] for ln in lines}
                except IndexError:
                    raise MlpdesignError(
                        f"{p}: config {c} (line {lineno - n + 1}): an atom line has too few columns"
                    ) from None
                for sb in syms:
                    sym = sb.decode(errors="replace")
                    if sym not in first_seen:
                        first_seen[sym] = c
    if not counts:
        raise MlpdesignError(f"{p}: no configurations (empty file?)")
    offsets.append(pos)
    return PoolIndex(
        p,
        np.asarray(offsets, dtype=np.int64),
        np.asarray(counts, dtype=np.int64),
        first_seen,
        known,
    )


@dataclass
class Frame:
    """What describe needs of one configuration: no ASE Atoms, no info it does not use."""

    numbers: np.ndarray  # (n,) int64 atomic numbers
    positions: np.ndarray  # (n, 3) float64
    cell: np.ndarray  # (3, 3) float64, rows are the cell vectors (ASE's convention)
    pbc: np.ndarray  # (3,) bool
    info: dict  # candidate_id, structure, F when present (values as ASE would parse them)

    def __len__(self) -> int:
        return int(self.numbers.shape[0])

    @classmethod
    def from_atoms(cls, atoms) -> Frame:
        return cls(
            np.asarray(atoms.numbers, dtype=np.int64),
            np.asarray(atoms.positions, dtype=np.float64),
            np.asarray(atoms.cell.array, dtype=np.float64),
            np.asarray(atoms.pbc, dtype=bool),
            atoms.info,
        )


#: ``key=value`` / ``key="v a l u e"`` without any character that makes ASE's comment-line
#: parser do more than split on spaces (escapes, other quotes, brackets, commas, '=').
_KV = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"\\\'{}\[\],=]*)"|([^\s"\\\'{}\[\],=]+))')
_INT = re.compile(r"[+-]?[0-9]+")
_INFO_KEYS = ("candidate_id", "structure", "F")
_BOOLS = {
    "T": True, "F": False, "true": True, "false": False,
    "True": True, "False": False, "TRUE": True, "FALSE": False,
}  # fmt: skip


def _comment_pairs(comment: str) -> dict[str, str] | None:
    """``{key: raw value}`` of a plain extxyz comment line; None when ASE's parser is needed."""
    out: dict[str, str] = {}
    pos = 0
    for m in _KV.finditer(comment):
        if comment[pos : m.start()].strip():
            return None
        key, quoted, bare = m.groups()
        out[key] = quoted if quoted is not None else bare
        pos = m.end()
        if pos < len(comment) and not comment[pos].isspace():
            return None
    if comment[pos:].strip():
        return None
    return out


def ase_value(key: str, raw: str):
    """The value ASE's ``key_val_str_to_dict`` gives ``key=raw`` (for a plain ``raw``:
    no quotes, brackets, commas or escapes): int / float (arrays), bool (lists) or str."""
    if key.lower() in ("uid",):
        return raw
    parts = raw.split()
    value = raw
    if len(parts) == 1 and _INT.fullmatch(parts[0]) and len(parts[0]) < 19:
        value = np.int64(int(parts[0]))  # the common case, without numpy's string parsing
    else:
        try:
            try:
                num = np.array(parts, dtype=int)
            except (ValueError, OverflowError):
                num = np.array(parts, dtype=float)
            value = num[0] if len(num) == 1 else num
        except (ValueError, OverflowError):
            pass
    if key in ("Lattice", "stress", "virial"):
        if not isinstance(value, np.ndarray) or value.shape != (9,):
            raise ValueError(f"{key} is not a 9-long numerical vector")
        value = np.array(value).reshape((3, 3), order="F")
    if isinstance(value, str):
        try:
            b = [_BOOLS[v] for v in parts]
        except KeyError:
            return value
        value = b[0] if len(b) == 1 else b
    return value


def _parse_frame(lines: list[str], n: int) -> Frame | None:
    """A frame from its lines (count, comment, atoms) when it is plain extxyz, else None.

    Plain: a comment line of simple ``key=value`` pairs with a 9-number ``Lattice``, atom
    lines of a ``species`` column and real-valued columns (``pos`` among them). Values are
    converted as ASE converts them; anything else is left to ASE (:func:`_read_frame_ase`).
    """
    if len(lines) < n + 2:
        return None
    pairs = _comment_pairs(lines[1].strip())
    if pairs is None or "Lattice" not in pairs:
        return None
    props = pairs.get("Properties", "species:S:1:pos:R:3").split(":")
    if len(props) % 3:
        return None
    ncol, sp, pc, names = 0, -1, -1, set()
    for name, kind, count in zip(props[0::3], props[1::3], props[2::3], strict=True):
        if name in names or not count.isdigit():
            return None
        names.add(name)
        k = int(count)
        if name == "species" and kind == "S" and k == 1:
            sp = ncol
        elif kind != "R":
            return None
        elif name == "pos":
            if k != 3:
                return None
            pc = ncol
        ncol += k
    if sp < 0 or pc < 0:
        return None
    try:
        cell = np.asarray(ase_value("Lattice", pairs["Lattice"]).T, dtype=np.float64)
    except ValueError:
        return None
    pbc = np.ones(3, dtype=bool)
    if "pbc" in pairs:
        v = ase_value("pbc", pairs["pbc"])
        if isinstance(v, bool) or (isinstance(v, list) and len(v) == 3):
            pbc[:] = v
        else:
            return None
    symbols, pos = [], []
    for line in lines[2 : n + 2]:
        vals = line.split()
        if len(vals) < ncol:
            return None
        symbols.append(vals[sp].capitalize())
        try:
            reals = [float(v) for v in vals[:sp] + vals[sp + 1 : ncol]]
        except ValueError:
            return None
        p = pc if pc < sp else pc - 1
        pos.append(reals[p : p + 3])
    try:
        numbers = np.array([_ATOMIC_NUMBERS[s] for s in symbols], dtype=np.int64)
    except KeyError:
        return None
    info = {k: ase_value(k, pairs[k]) for k in _INFO_KEYS if k in pairs}
    return Frame(numbers, np.array(pos, dtype=np.float64), cell, pbc, info)


def _read_frame_ase(text: str, c: int, path) -> Frame:
    """One frame through ASE's extxyz reader (the reference, and anything unusual)."""
    from ase.io.extxyz import read_xyz

    try:
        atoms = next(read_xyz(io.StringIO(text), index=0))
    except Exception as e:  # ASE raises many types on malformed frames
        raise MlpdesignError(
            f"{path}: config {c}: cannot read it as extxyz: {_one_line(e)}"
        ) from None
    return Frame.from_atoms(atoms)


def read_frames(index: PoolIndex, c0: int, c1: int):
    """:class:`Frame` of configs ``c0 .. c1-1``, read from their byte range only.

    Plain extxyz (what ``generate`` and ASE write) is parsed here, with ASE's value
    conversions; any other frame goes through ASE's reader.
    """
    _load_atomic_numbers()
    with open(index.path, "rb") as f:
        f.seek(int(index.offsets[c0]))
        data = f.read(int(index.offsets[c1] - index.offsets[c0]))
    base = int(index.offsets[c0])
    for c in range(c0, c1):
        raw = data[int(index.offsets[c]) - base : int(index.offsets[c + 1]) - base]
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            raise MlpdesignError(f"{index.path}: config {c}: not UTF-8 text ({e.reason})") from None
        n = int(index.n_atoms[c])
        frame = _parse_frame(text.split("\n", n + 2), n)
        if frame is None:
            frame = _read_frame_ase(text, c, index.path)
        yield frame


def read_frames_ase(index: PoolIndex, c0: int, c1: int):
    """ASE Atoms of configs ``c0 .. c1-1`` (the reference for :func:`read_frames`)."""
    from ase.io.extxyz import read_xyz

    with open(index.path, "rb") as f:
        f.seek(int(index.offsets[c0]))
        text = f.read(int(index.offsets[c1] - index.offsets[c0])).decode()
    yield from read_xyz(io.StringIO(text), index=slice(None))


_ATOMIC_NUMBERS: dict[str, int] = {}


def _load_atomic_numbers() -> None:
    if not _ATOMIC_NUMBERS:
        from ase.data import atomic_numbers

        _ATOMIC_NUMBERS.update(atomic_numbers)


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s[:300]


# ---------------------------------------------------------------------------- computing


def cutoff_weights(r: np.ndarray, cutoff: float, width: float) -> np.ndarray:
    """QUIP's ``coordination_function``: 1 below ``cutoff - width``, cosine to 0 at cutoff."""
    w = np.ones_like(r)
    if width > 0:
        inner = r > cutoff - width
        w[inner] = 0.5 * (np.cos(np.pi * (r[inner] - cutoff + width) / width) + 1.0)
    w[r > cutoff] = 0.0
    return w


def fast_distance_2b(spec: DescriptorSpec) -> bool:
    """Whether ``spec`` is a plain distance_2b that the neighbour-list path reproduces."""
    if spec.name != "distance_2b":
        return False
    p = spec.params
    if set(p) - _FAST_2B_KEYS or p.get("Z1", 0) != 0 or p.get("Z2", 0) != 0:
        return False
    ex = p.get("exponents", 1)
    return p.get("n_exponents", 1) == 1 and ex in (1, [1])


def distance_2b_direct(atoms, cutoff: float, width: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Rows (ordered pair distances, sorted) and weights of a plain ``distance_2b``.

    ``atoms``: ASE Atoms or :class:`Frame` (anything with ``positions``, ``cell``, ``pbc``).
    """
    from matscipy.neighbours import neighbour_list

    d = neighbour_list(
        "d",
        positions=atoms.positions,
        cell=np.asarray(atoms.cell, dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        cell_origin=np.zeros(3),
        cutoff=float(cutoff),
    )
    d.sort()
    return d.reshape(-1, 1), cutoff_weights(d, cutoff, width)


def _sort_pairs(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if rows.shape[0] < 2:
        return rows, weights
    order = np.lexsort(rows.T[::-1])
    return rows[order], weights[order]


def quippy_rows(descriptor, atoms, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and covariance-cutoff weights from ``quippy`` ``Descriptor.calc`` (reference)."""
    out = descriptor.calc(atoms, grad=False)
    if "covariance_cutoff" not in out:  # no descriptor in this config
        return np.zeros((0, dim)), np.zeros(0)
    data = np.asarray(out["data"], dtype=np.float64).reshape(-1, dim)
    w = np.asarray(out["covariance_cutoff"], dtype=np.float64).reshape(-1)
    keep = np.asarray(out.get("has_data", np.ones(len(w), bool)), dtype=bool).reshape(-1)
    if not keep.all():
        data, w = data[keep], w[keep]
    return data, w


class QuipDescriptor:
    """One quippy descriptor called the way ``Descriptor.calc`` calls it, minus the overhead.

    ``Descriptor.calc`` converts ASE Atoms to QUIP Atoms (through every ASE array), builds
    the neighbour list twice (once in ``calc``, once more to count the descriptors) and
    unpacks the result through a dict per row. Here a QUIP Atoms is built from the four
    arrays QUIP uses (lattice, positions, pbc, Z), connected once at the same cutoff as
    quippy's (descriptor cutoff + 1 A, so neighbour order and hence every bit of the rows
    is the same), and the rows are read straight from QUIP's result.
    """

    def __init__(self, descriptor, dim: int, pair: bool) -> None:
        import quippy

        self._atoms_type = quippy.atoms_types_module.Atoms
        self._raw = descriptor._quip_descriptor
        self._calc = type(self._raw)._calc_1  # the Fortran calc, not the overload dispatch
        self.connect_cutoff = float(descriptor.cutoff()) + 1.0
        self.dim, self.pair = dim, pair

    def quip_atoms(self, frame: Frame):
        """QUIP Atoms of ``frame`` with the connectivity quippy would give it."""
        q = self._atoms_type(len(frame), np.ascontiguousarray(frame.cell.T))
        q.pos[:] = frame.positions.T
        q.is_periodic[:] = frame.pbc
        q.z[:] = frame.numbers
        q.set_atoms(q.z)  # species and masses, as quippy.convert.ase_to_quip
        if q.cutoff < self.connect_cutoff:
            q.set_cutoff(self.connect_cutoff)
        q.calc_connect()
        return q

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        out = self._calc(
            self._raw,
            self.quip_atoms(frame),
            do_descriptor=True,
            do_grad_descriptor=False,
            args_str="",
        )
        x = out.x
        n = len(x)
        data = np.empty((n, self.dim))
        w = np.empty(n)
        keep = np.ones(n, dtype=bool)
        for i in range(n):
            m = x[i]
            if m.has_data:
                data[i] = m.data
            else:
                keep[i] = False
            w[i] = m.covariance_cutoff
        if not keep.all():
            data, w = data[keep], w[keep]
        return _sort_pairs(data, w) if self.pair else (data, w)


class DescriptorCalculator:
    """Computes every descriptor of a GAP string for one configuration at a time.

    ``fast=True``: a plain ``distance_2b`` from a neighbour list, others through
    :class:`QuipDescriptor`. ``fast=False``: everything through quippy's public
    ``Descriptor.calc`` on ASE Atoms (the reference path the tests compare against).
    """

    def __init__(self, specs: Sequence[DescriptorSpec], fast: bool = True) -> None:
        from quippy.descriptors import Descriptor

        self.specs = list(specs)
        self.fast = fast
        self._calls: list[Callable] = []
        for spec in self.specs:
            p = spec.params
            if fast and fast_distance_2b(spec):
                cut = float(p["cutoff"])
                width = float(p.get("cutoff_transition_width", 0.5))
                self._calls.append(lambda a, c=cut, w=width: distance_2b_direct(a, c, w))
                if spec.dim is None:
                    spec.dim = 1
            else:
                try:
                    d = Descriptor(spec.descriptor)
                except RuntimeError as e:
                    raise MlpdesignError(
                        f"quippy rejects descriptor {spec.descriptor!r}: {_one_line(e)}"
                    ) from None
                dim = int(d.dimensions())
                if spec.dim is None:
                    spec.dim = dim
                pair = spec.name == "distance_2b"
                if fast:
                    self._calls.append(QuipDescriptor(d, dim, pair))
                else:
                    self._calls.append(
                        lambda a, d=d, n=dim, pair=pair: (
                            _sort_pairs(*quippy_rows(d, a, n)) if pair else quippy_rows(d, a, n)
                        )
                    )

    def compute(self, atoms) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(rows, weights), ...]`` per descriptor for ``atoms`` (ASE Atoms or Frame)."""
        if self.fast and not isinstance(atoms, Frame):
            atoms = Frame.from_atoms(atoms)
        elif not self.fast and isinstance(atoms, Frame):
            from ase import Atoms

            atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        return [call(atoms) for call in self._calls]


def required_species(specs: Sequence[DescriptorSpec]) -> set[int] | None:
    """Atomic numbers every config must be limited to (SOAP ``Z`` lists); None = any."""
    allowed = None
    for s in specs:
        z = soap_species(s)
        if z is not None:
            allowed = set(z) if allowed is None else allowed & set(z)
        if s.name == "soap" and "species_Z" in s.params:
            sz = s.params["species_Z"]
            sz = set(sz if isinstance(sz, list) else [sz])
            if sz != {0}:
                allowed = sz if allowed is None else allowed & sz
    return allowed


def _element_error(symbol: str, config: int, allowed: set[int], where: str) -> MlpdesignError:
    from ase.data import atomic_numbers

    z = atomic_numbers.get(symbol, "?")
    zs = "{" + " ".join(str(x) for x in sorted(allowed)) + "}"
    return MlpdesignError(
        f"{where}: config {config} has {symbol} (Z={z}), which is not in the SOAP Z list "
        f"{zs}; add it to Z= and n_Z= (and species_Z=, n_species=) of --gap"
    )


def compute_chunk(
    index: PoolIndex,
    c0: int,
    c1: int,
    calc: DescriptorCalculator,
    allowed: set[int] | None = None,
    id_base: int = 0,
) -> ChunkData:
    """Descriptors of configs ``c0 .. c1-1`` (pool positions) as :class:`ChunkData`.

    ``candidate_id`` comes from ``info["candidate_id"]`` (else the pool position + id_base).
    """
    from ase.data import chemical_symbols

    n, nd = c1 - c0, len(calc.specs)
    cid = np.empty(n, np.int64)
    nat = np.empty(n, np.int32)
    struct = np.zeros(n, dtype=STRUCTURE_DTYPE)
    F = np.full((n, 9), np.nan)
    rows = [[] for _ in range(nd)]
    wts = [[] for _ in range(nd)]
    counts = [np.zeros(n, np.int64) for _ in range(nd)]
    for j, atoms in enumerate(read_frames(index, c0, c1)):
        c = c0 + j
        if len(atoms) == 0:
            raise MlpdesignError(f"{index.path}: config {c} has no atoms")
        if allowed is not None:
            bad = set(atoms.numbers.tolist()) - allowed
            if bad:
                raise _element_error(chemical_symbols[min(bad)], c, allowed, str(index.path))
        info = atoms.info
        try:
            cid[j] = int(info.get("candidate_id", c + id_base))
        except (TypeError, ValueError):
            raise MlpdesignError(
                f"{index.path}: config {c}: candidate_id="
                f"{info.get('candidate_id')!r} is not an integer"
            ) from None
        nat[j] = len(atoms)
        struct[j] = str(info.get("structure", "")).encode()[:8]
        if "F" in info:
            f = np.asarray(info["F"], dtype=np.float64).reshape(-1)
            if f.shape == (9,):
                F[j] = f
        try:
            res = calc.compute(atoms)
        except RuntimeError as e:  # quippy reports Fortran errors this way
            raise MlpdesignError(
                f"{index.path}: config {c}: quippy failed: {_one_line(e)}"
            ) from None
        for k, (r, w) in enumerate(res):
            rows[k].append(r)
            wts[k].append(w)
            counts[k][j] = r.shape[0]
    out_rows = [
        np.concatenate(r, axis=0) if r else np.zeros((0, s.dim))
        for r, s in zip(rows, calc.specs, strict=True)
    ]
    out_w = [np.concatenate(w) if w else np.zeros(0) for w in wts]
    return ChunkData(c0, c1, cid, nat, struct, F, out_rows, out_w, counts)


# ---------------------------------------------------------------------------- workers


class Resumable(MlpdesignError):
    """A run stopped for a reason other than its input; the finished chunks are kept."""

    exit_code = 1


class WorkerDied(Resumable):
    """A worker process was killed (QUIP abort, out of memory); finished chunks are kept."""


class DamagedChunk(Resumable):
    """A saved chunk cannot be read back (OS crash while it was written); it is removed."""


_WORKER: dict = {}


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (e.g. SIGKILL of the run)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _init_worker(
    index: PoolIndex, specs: list[DescriptorSpec], allowed, partial: str, id_base: int
) -> None:
    _die_with_parent()
    _WORKER.update(
        index=index,
        calc=DescriptorCalculator(specs),
        allowed=allowed,
        partial=Path(partial),
        id_base=id_base,
    )


def _chunk_name(c0: int, c1: int) -> str:
    return f"chunk-{c0:012d}-{c1:012d}.npz"


def _run_chunk(c0: int, c1: int) -> tuple[int, int]:
    w = _WORKER
    chunk = compute_chunk(w["index"], c0, c1, w["calc"], w["allowed"], w["id_base"])
    chunk.save(w["partial"] / _chunk_name(c0, c1))
    return c0, c1


# ---------------------------------------------------------------------------- describe


def default_chunk_size(count: int) -> int:
    """Configs per resumable chunk: ~64 chunks for small pools, at most 256 configs."""
    return max(1, min(256, math.ceil(count / 64)))


def _manifest(
    sha: str, specs: list[DescriptorSpec], start: int, count: int, chunk: int, pool_n: int
) -> dict:
    v = package_versions()
    return {
        "pool_sha256": sha,
        "gap": " : ".join(s.segment for s in specs),
        "dims": [s.dim for s in specs],
        "config_start": start,
        "count": count,
        "chunk_size": chunk,
        "pool_n_configs": pool_n,
        "quippy": v.get("quippy-ase", ""),
        "matscipy": v.get("matscipy", ""),
    }


def prepare_specs(gap: str | None, index: PoolIndex) -> list[DescriptorSpec]:
    """Parse the GAP string and fit it to the pool's species.

    The default (the paper's Zr model) follows the pool's elements: SOAP's ``Z`` (and
    ``species_Z`` when several) become the pool's atomic numbers. An explicit ``gap`` is
    used as given, and a pool element outside its SOAP ``Z`` list is an error.
    """
    from ase.data import atomic_numbers

    specs = parse_gap(gap if gap is not None else DEFAULT_GAP)
    for s in specs:  # QUIP may abort on a bad string: try unknown kinds in a child first
        if s.name not in ("soap", "distance_2b"):
            s.dim = probe_descriptor(s.descriptor)
    unknown = [s for s in index.first_seen if s not in atomic_numbers]
    if unknown:
        raise MlpdesignError(
            f"{index.path}: config {index.first_seen[unknown[0]]} has unknown "
            f"element {unknown[0]!r}"
        )
    numbers = sorted(atomic_numbers[s] for s in index.first_seen)
    if gap is None and index.species_known and numbers and numbers != [40]:
        specs = with_species(specs, numbers)
    allowed = required_species(specs)
    if allowed is not None and index.species_known:
        for sym, c in sorted(index.first_seen.items(), key=lambda kv: kv[1]):
            if atomic_numbers[sym] not in allowed:
                raise _element_error(sym, c, allowed, str(index.path))
    return specs


def open_partial(out: Path, manifest: dict, sha: str, restart: bool) -> Path:
    """The ``<output>.partial/`` folder of this run: made with its manifest, or an earlier
    killed run's for the same manifest (its stale temporaries removed); another run's is
    refused, ``restart`` discards it."""
    partial = out.with_name(out.name + ".partial")
    mfile = partial / "manifest.json"
    if restart and partial.exists():
        shutil.rmtree(partial)
    if partial.exists():
        try:
            old = json.loads(mfile.read_text())
        except (OSError, ValueError):
            old = None
        if old != manifest:
            what = (
                "another pool"
                if old and old.get("pool_sha256") != sha
                else "other settings (gap string, shard or chunk size)"
            )
            raise MlpdesignError(
                f"{partial} holds an interrupted run for {what}; remove it "
                "or pass --restart to start over"
            )
    else:
        partial.mkdir()
        tmp = partial / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, mfile)
    for stale in partial.glob(".*.tmp-*"):  # a chunk being written when a run was killed
        stale.unlink(missing_ok=True)
    return partial


def describe(
    pool: str | os.PathLike,
    output: str | os.PathLike,
    gap: str | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    chunk_size: int | None = None,
    dtype: str = "float64",
    force: bool = False,
    restart: bool = False,
    command: str = "",
    progress=None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Describe ``pool`` (extxyz) into the store ``output``; resumable, shardable, parallel.

    ``gap``: GAP string (default :data:`DEFAULT_GAP`, species fitted to the pool).
    ``jobs``: worker processes. ``shard=(i, n)``: only part i of n (1-based) of the pool.
    A previous killed run of the same command is continued from ``<output>.partial/``;
    ``restart=True`` discards it. ``progress(total, initial)``: makes a progress object
    with ``update(k)``/``close()`` (see :mod:`mlpdesign.progress`); ``log``: where to say
    that a run is resumed. The output is locked for the run (:mod:`mlpdesign.io.lock`):
    a second run on it is refused at once.
    """
    with holding(output):
        return _describe(
            pool, output, gap, jobs, shard, chunk_size, dtype, force, restart, command,
            progress, log,
        )  # fmt: skip


def _describe(
    pool: str | os.PathLike,
    output: str | os.PathLike,
    gap: str | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    chunk_size: int | None = None,
    dtype: str = "float64",
    force: bool = False,
    restart: bool = False,
    command: str = "",
    progress=None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """:func:`describe` while holding the output's lock."""
    out = check_output(output, force)
    if dtype not in ("float64", "float32"):
        raise MlpdesignError(f"--dtype must be float64 or float32, got {dtype!r}")
    if jobs < 1:
        raise MlpdesignError(f"--jobs must be >= 1, got {jobs}")
    index = index_pool(pool)
    specs = prepare_specs(gap, index)
    calc = DescriptorCalculator(specs)  # fixes dims; also checks quippy accepts the strings
    n_pool = index.n_configs
    start, count = shard_range(n_pool, *shard) if shard else (0, n_pool)
    chunk = chunk_size or default_chunk_size(count)
    if chunk < 1:
        raise MlpdesignError(f"--chunk-size must be >= 1, got {chunk}")
    sha = file_sha256(pool)
    manifest = _manifest(sha, specs, start, count, chunk, n_pool)

    partial = open_partial(out, manifest, sha, restart)
    tasks = [(c0, min(c0 + chunk, start + count)) for c0 in range(start, start + count, chunk)]
    done = [t for t in tasks if _chunk_ok(partial / _chunk_name(*t), len(specs))]
    todo = [t for t in tasks if t not in set(done)]
    if done and log is not None:
        log(
            f"resuming: {sum(b - a for a, b in done)} of {count} configs already described "
            f"in {partial}"
        )
    bar = progress(count, sum(b - a for a, b in done)) if progress is not None else None
    allowed = required_species(specs)
    try:
        try:
            _run(todo, index, specs, calc, allowed, partial, jobs, bar)
        finally:
            if bar is not None:
                bar.close()
        attrs = {
            "pool_sha256": sha,
            "pool_path": str(pool),
            "pool_n_configs": n_pool,
            "config_start": start,
            "shard": f"{shard[0]}/{shard[1]}" if shard else "",
            "versions": package_versions(),
            "command": command,
        }
        assemble(partial, tasks, specs, out, attrs, dtype, force)
    except Resumable:
        raise
    except MlpdesignError:
        # bad input: the chunks could never be completed; leave nothing behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _run(tasks, index, specs, calc, allowed, partial, jobs, progress) -> None:
    """Compute and save the chunks in ``tasks``, in this process or in ``jobs`` workers."""
    if not tasks:
        return
    if jobs == 1 or len(tasks) == 1:
        for c0, c1 in tasks:
            compute_chunk(index, c0, c1, calc, allowed).save(partial / _chunk_name(c0, c1))
            if progress is not None:
                progress.update(c1 - c0)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pending, queue = set(), list(reversed(tasks))
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(index, specs, allowed, str(partial), 0),
    ) as ex:
        try:
            while queue or pending:
                while queue and len(pending) < 4 * jobs:
                    pending.add(ex.submit(_run_chunk, *queue.pop()))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        c0, c1 = fut.result()
                    except BrokenProcessPool:
                        raise WorkerDied(
                            "a worker process died (QUIP abort or out of memory?); finished "
                            f"chunks are kept in {partial}: run the same command to resume"
                        ) from None
                    if progress is not None:
                        progress.update(c1 - c0)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


#: Bytes of descriptor rows gathered from saved chunks before one HDF5 write.
ASSEMBLE_BYTES = 64 << 20

_CHUNK_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _chunk_ok(path: Path, n_desc: int) -> bool:
    """Whether a saved chunk exists and its zip directory lists every array (cheap: the
    data are CRC-checked when :func:`assemble` reads them). A damaged one is removed."""
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            need = {"c", "candidate_id"} | {f"rows{k}" for k in range(n_desc)}
            if need <= set(z.files):
                return True
    except _CHUNK_ERRORS:
        pass
    path.unlink(missing_ok=True)
    return False


def _load_chunk(partial: Path, c0: int, c1: int, nd: int) -> ChunkData:
    path = partial / _chunk_name(c0, c1)
    try:
        return ChunkData.load(path, nd)
    except _CHUNK_ERRORS as e:
        path.unlink(missing_ok=True)
        raise DamagedChunk(
            f"{path} was damaged ({_one_line(e)}; an OS crash while it was written?) and is "
            "removed: run the same command again to recompute it"
        ) from None


def assemble(
    partial: Path,
    tasks,
    specs: list[DescriptorSpec],
    output: Path,
    attrs: dict,
    dtype: str,
    force: bool,
) -> None:
    """Write the store from the saved chunks, in config order (deterministic bytes).

    Consecutive chunks are gathered into writes of up to :data:`ASSEMBLE_BYTES`; the
    store's layout is fixed when it is created, so this changes no byte of it.
    """
    nd = len(specs)
    n_rows = [0] * nd
    ids = []
    for c0, c1 in tasks:
        try:
            with np.load(partial / _chunk_name(c0, c1)) as z:
                for k in range(nd):
                    n_rows[k] += int(z[f"counts{k}"].sum())
                ids.append(z["candidate_id"])
        except _CHUNK_ERRORS:
            _load_chunk(partial, c0, c1, nd)  # removes it and says so
            raise
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    uniq, cnt = np.unique(ids, return_counts=True)
    if (cnt > 1).any():
        raise MlpdesignError(
            f"{attrs['pool_path']}: candidate_id {int(uniq[cnt > 1][0])} "
            "appears more than once in the pool"
        )
    n = int(ids.shape[0])
    with atomic_path(output, force) as tmp:
        w = StoreWriter(tmp, specs, n, n_rows, attrs, dtype)
        try:
            base = tasks[0][0] if tasks else 0
            batch: list[ChunkData] = []
            size = 0
            for i, (c0, c1) in enumerate(tasks):
                ch = _load_chunk(partial, c0, c1, nd)
                ch.c0, ch.c1 = c0 - base, c1 - base
                batch.append(ch)
                size += ch.nbytes
                if size >= ASSEMBLE_BYTES or i == len(tasks) - 1:
                    w.append(ChunkData.concat(batch))
                    batch, size = [], 0
        except BaseException:
            w.abort()
            raise
        w.close()
