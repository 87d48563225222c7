"""The one reader of configurations: any file ASE reads, several files, physical checks.

:func:`open_pool` takes the inputs of a command (files and glob patterns, in order) and
indexes them as one pool of candidates:

* extxyz / plain XYZ files are the fast path: one byte scan gives each frame's offset,
  atom count, symbols and ``candidate_id`` (:mod:`mlpdesign.io.extxyz`), and a worker
  reads only its own frames. Any other format ASE reads (``.traj``, ``OUTCAR``,
  ``vasprun.xml``, LAMMPS dumps, ...) is read whole, once, through ``ase.io.read``.
* Every candidate has a stable ``candidate_id``: the frame's own ``info["candidate_id"]``,
  else its position in the pool (inputs in the order given, frames in file order). Ids
  must be unique over all inputs. Each candidate also knows its source (input, frame).
* The pool checksum is the input file's SHA-256 for one input, else the SHA-256 of the
  inputs' checksums in order (:func:`pool_checksum`): it covers every input.
* Every frame handed out is checked (:func:`check_frame`): finite positions and cell,
  periodic cell vectors that span a lattice, no two atoms (or an atom and its own periodic
  image) closer than ``min_distance`` (default :data:`MIN_DISTANCE`). Bad input is one
  line ``<file>: frame K: ...``, raised before the frame reaches QUIP (which aborts the
  process on some of it). Frames without a lattice or with ``pbc`` F in some direction
  are isolated in that direction; a singular cell there is completed with unit vectors
  orthogonal to the periodic ones (QUIP and the neighbour list ignore it).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import file_sha256, require_file
from mlpdesign.io.extxyz import Frame, PoolIndex, index_pool, one_line, read_atoms, read_frames

#: Closest distance (Å) two atoms may have, by default: about a fifth of a typical bond;
#: closer pairs are broken input (overlapping atoms, wrong units, a tiny cell).
MIN_DISTANCE = 0.5

EXTXYZ = "extxyz"


# ---------------------------------------------------------------------------- inputs


def expand_inputs(paths: str | os.PathLike | Sequence, what: str = "pool file") -> list[Path]:
    """The input files of ``paths`` in order: glob patterns expanded (sorted), each file
    required to exist; a file named twice is refused (its frames would be candidates twice)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = os.fspath(p)
        if not os.path.exists(s) and glob.has_magic(s):
            hits = sorted(glob.glob(s))
            if not hits:
                raise MlpdesignError(f"{s}: no {what} matches this pattern")
            out += [Path(h) for h in hits]
        else:
            out.append(Path(s))
    if not out:
        raise MlpdesignError(f"no {what} given")
    seen: dict[Path, Path] = {}
    for p in out:
        require_file(p, what)
        r = p.resolve()
        if r in seen:
            raise MlpdesignError(f"{p}: given twice (as {seen[r]} and {p})")
        seen[r] = p
    return out


def input_format(path: Path) -> str:
    """ASE's name of the format of ``path`` (:data:`EXTXYZ` for extxyz and plain XYZ)."""
    if path.name.lower().endswith((".xyz", ".extxyz")):
        return EXTXYZ
    from ase.io.formats import filetype

    try:
        fmt = filetype(str(path), read=True, guess=False)
    except Exception as e:  # noqa: BLE001 - UnknownFileTypeError and read errors
        raise MlpdesignError(
            f"{path}: not a file format ASE reads ({one_line(e)}); give extxyz, .traj, "
            "OUTCAR, vasprun.xml or another format of ase.io.read"
        ) from None
    return EXTXYZ if fmt in ("extxyz", "xyz") else str(fmt)


def pool_checksum(paths: Sequence[Path]) -> str:
    """SHA-256 of one input; of several, the SHA-256 of their checksums in order."""
    if len(paths) == 1:
        return file_sha256(paths[0])
    h = hashlib.sha256(b"mlpdesign-pool-v1\n")
    for p in paths:
        h.update(file_sha256(p).encode() + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------- checks


def _gram_ratio(vectors: list[list[float]]) -> float:
    """Gram determinant of 1-3 vectors over the product of their squared lengths: 1 for
    orthogonal vectors, 0 for dependent ones (pure Python: this runs once per frame)."""
    sq = [v[0] * v[0] + v[1] * v[1] + v[2] * v[2] for v in vectors]
    if len(vectors) == 1:
        return 1.0
    if len(vectors) == 2:
        a, b = vectors
        ab = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
        return (sq[0] * sq[1] - ab * ab) / (sq[0] * sq[1])
    a, b, c = vectors
    det = (
        a[0] * (b[1] * c[2] - b[2] * c[1])
        - a[1] * (b[0] * c[2] - b[2] * c[0])
        + a[2] * (b[0] * c[1] - b[1] * c[0])
    )
    return det * det / (sq[0] * sq[1] * sq[2])


def open_cell(cell: np.ndarray, pbc, where: str) -> np.ndarray:
    """``cell`` checked against ``pbc``; a singular cell of an isolated direction completed.

    Periodic vectors must be non-zero and independent (else one line: a singular cell
    with pbc T). A cell that is singular only through non-periodic vectors (no Lattice, a
    zero vector with pbc F) gets those vectors replaced by unit vectors orthogonal to the
    periodic ones: the lattice of periodic images, hence every distance, is unchanged.
    """
    rows = cell.tolist()
    per = [k for k in range(3) if pbc[k]]
    for k in per:
        if sum(x * x for x in rows[k]) < 1e-12:
            raise MlpdesignError(
                f"{where}: cell vector {k + 1} is zero but periodic (pbc T): give the "
                "lattice, or pbc F for an isolated direction"
            )
    if len(per) > 1 and _gram_ratio([rows[k] for k in per]) < 1e-12:
        raise MlpdesignError(
            f"{where}: the periodic cell vectors are linearly dependent (singular cell with pbc T)"
        )
    if len(per) == 3 or (
        min(sum(x * x for x in r) for r in rows) > 1e-12 and _gram_ratio(rows) > 1e-12
    ):
        return cell
    if per:
        q = np.linalg.qr(cell[per].T, mode="complete")[0]
        complement = q[:, len(per) :].T
    else:
        complement = np.eye(3)
    out = np.array(cell, dtype=np.float64)
    out[[k for k in range(3) if not pbc[k]]] = complement
    return out


def closest_pair(frame: Frame, cutoff: float) -> tuple[int, int, float] | None:
    """The closest two atoms (or atom and periodic image) nearer than ``cutoff``, if any."""
    from matscipy.neighbours import neighbour_list

    i, j, d = neighbour_list(
        "ijd",
        positions=frame.positions,
        cell=frame.cell,
        pbc=np.asarray(frame.pbc, dtype=bool),
        cell_origin=np.zeros(3),
        cutoff=float(cutoff),
    )
    if d.size == 0:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


def check_frame(frame: Frame, where: str, min_distance: float = MIN_DISTANCE) -> Frame:
    """``frame`` if it is physical, with its cell opened (:func:`open_cell`); else one line.

    ``where`` starts the message (``"<file>: frame K"``); ``min_distance`` 0 skips the
    distance check.
    """
    pos = frame.positions
    if len(frame) == 0:
        raise MlpdesignError(f"{where}: no atoms")
    if pos.shape != (len(frame), 3) or not np.isfinite(pos).all():
        i = int(np.argwhere(~np.isfinite(pos))[0, 0]) if pos.ndim == 2 else 0
        raise MlpdesignError(f"{where}: atom {i} has a non-finite position {pos[i].tolist()}")
    if not np.isfinite(frame.cell).all():
        raise MlpdesignError(f"{where}: the cell holds a non-finite number")
    cell = open_cell(frame.cell, frame.pbc, where)
    if cell is not frame.cell:
        frame = Frame(frame.numbers, pos, cell, np.asarray(frame.pbc, dtype=bool), frame.info)
    if min_distance > 0:
        hit = closest_pair(frame, min_distance)
        if hit is not None:
            i, j, d = hit
            what = (
                f"atom {i} is {d:.3g} A from its own periodic image (the cell is too small)"
                if i == j
                else f"atoms {i} and {j} are {d:.3g} A apart"
            )
            raise MlpdesignError(
                f"{where}: {what}, closer than --min-distance {min_distance:g} A "
                "(overlapping atoms, wrong units or a wrong cell?)"
            )
    return frame


# ---------------------------------------------------------------------------- pool


@dataclass
class Source:
    """One input file of a pool: an extxyz byte index, or the frames ASE read from it."""

    path: Path
    fmt: str
    index: PoolIndex | None = None
    atoms: list | None = None

    @property
    def n_frames(self) -> int:
        return self.index.n_configs if self.index is not None else len(self.atoms)


def _read_ase(path: Path, fmt: str) -> list:
    import ase.io

    try:
        # parallel=False: under mpiexec ASE would read on rank 0 and broadcast, which needs
        # every rank in the call; each rank here reads on its own
        frames = ase.io.read(str(path), index=":", format=fmt, parallel=False)
    except Exception as e:  # noqa: BLE001 - ASE raises many kinds on a broken file
        raise MlpdesignError(f"{path}: cannot be read as {fmt}: {one_line(e)}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise MlpdesignError(f"{path}: no configurations (empty file?)")
    return frames


def _source_ids(src: Source) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, has_id)`` of a source's frames (ids -1 where a frame has none)."""
    if src.index is not None:
        return src.index.ids, src.index.has_id
    ids = np.full(len(src.atoms), -1, dtype=np.int64)
    has = np.zeros(len(src.atoms), dtype=bool)
    for k, a in enumerate(src.atoms):
        v = a.info.get("candidate_id")
        if v is None:
            continue
        try:
            if isinstance(v, bool) or float(v) != int(v):
                raise ValueError
            ids[k], has[k] = int(v), True
        except (TypeError, ValueError):
            raise MlpdesignError(
                f"{src.path}: frame {k}: candidate_id={v!r} is not an integer"
            ) from None
    return ids, has


@dataclass
class Pool:
    """Candidates from one or several input files, in order (see the module docstring)."""

    sources: list[Source]
    starts: np.ndarray  # (n_sources + 1,) first pool position of each source
    candidate_id: np.ndarray  # (n,) int64
    n_atoms: np.ndarray  # (n,) int64
    first_seen: dict  # symbol -> first pool position holding it
    species_known: bool
    min_distance: float = MIN_DISTANCE

    @property
    def n_configs(self) -> int:
        return int(self.starts[-1])

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.sources]

    @property
    def path(self) -> str:
        """The pool's name in messages and in the store: the file, or the files joined."""
        return " ".join(str(p) for p in self.paths)

    @property
    def symbols(self) -> list[str]:
        return sorted(self.first_seen)

    def locate(self, c: int) -> tuple[int, int]:
        """``(source number, frame in that file)`` of pool position ``c``."""
        s = int(np.searchsorted(self.starts, c, side="right")) - 1
        return s, int(c - self.starts[s])

    def where(self, c: int) -> str:
        s, k = self.locate(c)
        return f"{self.sources[s].path}: frame {k}"

    def source_arrays(self, c0: int = 0, c1: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(source_file, source_frame)`` of positions ``c0 .. c1-1`` (int32, int64)."""
        c1 = self.n_configs if c1 is None else c1
        pos = np.arange(c0, c1, dtype=np.int64)
        f = (np.searchsorted(self.starts, pos, side="right") - 1).astype(np.int32)
        return f, pos - self.starts[f]

    def checksum(self) -> str:
        return pool_checksum(self.paths)

    def frames(self, c0: int, c1: int) -> Iterator[Frame]:
        """Checked :class:`Frame` of pool positions ``c0 .. c1-1`` (reading only those)."""
        for s, src in enumerate(self.sources):
            a, b = max(c0, int(self.starts[s])), min(c1, int(self.starts[s + 1]))
            if a >= b:
                continue
            a, b = a - int(self.starts[s]), b - int(self.starts[s])
            it = (
                read_frames(src.index, a, b)
                if src.index is not None
                else (Frame.from_atoms(x) for x in src.atoms[a:b])
            )
            for k, fr in zip(range(a, b), it, strict=True):
                yield check_frame(fr, f"{src.path}: frame {k}", self.min_distance)

    def check(self, c0: int = 0, c1: int | None = None) -> None:
        """Check every frame of positions ``c0 .. c1-1`` (one line on the first bad one)."""
        for _ in self.frames(c0, self.n_configs if c1 is None else c1):
            pass

    def atoms(self, positions: Sequence[int]) -> list:
        """Full ASE Atoms (info, arrays, calculator results) of ``positions``, in that order,
        each checked like :meth:`frames`."""
        by_src: dict[int, list[int]] = {}
        for c in positions:
            s, k = self.locate(int(c))
            by_src.setdefault(s, []).append(k)
        got: dict[tuple[int, int], object] = {}
        for s, ks in by_src.items():
            src = self.sources[s]
            if src.index is not None:
                got.update({(s, k): a for k, a in read_atoms(src.index, ks).items()})
            else:
                for k in ks:
                    a = src.atoms[k].copy()
                    a.calc = src.atoms[k].calc
                    got[(s, k)] = a
        out = []
        for c in positions:
            s, k = self.locate(int(c))
            a = got[(s, k)]
            check_frame(
                Frame.from_atoms(a), f"{self.sources[s].path}: frame {k}", self.min_distance
            )
            out.append(a)
        return out


def _open_source(path: Path, species: bool) -> Source:
    fmt = input_format(path)
    if fmt == EXTXYZ:
        return Source(path, fmt, index=index_pool(path, species=species))
    return Source(path, fmt, atoms=_read_ase(path, fmt))


def _unique_ids(pool_ids: np.ndarray, pool: Pool) -> None:
    uniq, cnt = np.unique(pool_ids, return_counts=True)
    if (cnt > 1).any():
        cid = int(uniq[cnt > 1][0])
        a, b = np.flatnonzero(pool_ids == cid)[:2]
        raise MlpdesignError(
            f"candidate_id {cid} appears twice in the pool ({pool.where(int(a))} and "
            f"{pool.where(int(b))}); candidate ids must be unique over all inputs"
        )


def open_pool(
    paths: str | os.PathLike | Sequence,
    min_distance: float = MIN_DISTANCE,
    species: bool = True,
    what: str = "pool file",
    unique_ids: bool = True,
) -> Pool:
    """Index the inputs ``paths`` (files, glob patterns) as one pool; see the module doc.

    ``species=False`` skips collecting the chemical symbols of extxyz inputs;
    ``unique_ids=False`` allows a candidate_id in several frames (a labelled set that
    joins two designs), which a pool never does.
    """
    if min_distance < 0 or not np.isfinite(min_distance):
        raise MlpdesignError(f"--min-distance must be a finite number >= 0, got {min_distance}")
    sources = [_open_source(p, species) for p in expand_inputs(paths, what)]
    starts = np.concatenate([[0], np.cumsum([s.n_frames for s in sources])]).astype(np.int64)
    ids, n_atoms, first_seen, known = [], [], {}, True
    for s, src in enumerate(sources):
        i, has = _source_ids(src)
        ids.append(np.where(has, i, starts[s] + np.arange(src.n_frames)))
        if src.index is not None:
            n_atoms.append(src.index.n_atoms)
            known = known and src.index.species_known
            for sym, c in src.index.first_seen.items():
                first_seen.setdefault(sym, int(starts[s] + c))
        else:
            n_atoms.append(np.array([len(a) for a in src.atoms], dtype=np.int64))
            for k, a in enumerate(src.atoms):
                for sym in set(a.get_chemical_symbols()):
                    first_seen.setdefault(sym, int(starts[s] + k))
    pool = Pool(
        sources,
        starts,
        np.concatenate(ids).astype(np.int64),
        np.concatenate(n_atoms).astype(np.int64),
        first_seen,
        known and species,
        float(min_distance),
    )
    if unique_ids:
        _unique_ids(pool.candidate_id, pool)
    return pool


def read_configs(
    paths: str | os.PathLike | Sequence,
    what: str = "input file",
    min_distance: float = MIN_DISTANCE,
    assign_ids: bool = True,
) -> list:
    """Every frame of ``paths`` (any format ASE reads) as full ASE Atoms, checked; with
    ``assign_ids``, ``candidate_id`` set where a frame has none (its pool position) and
    required unique; without, frames are read as they are."""
    pool = open_pool(paths, min_distance, species=False, what=what, unique_ids=assign_ids)
    frames = pool.atoms(range(pool.n_configs))
    if assign_ids:
        for a, cid in zip(frames, pool.candidate_id, strict=True):
            a.info.setdefault("candidate_id", int(cid))
    return frames
