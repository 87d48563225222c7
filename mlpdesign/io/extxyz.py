"""The extxyz fast path: a byte index of a file's frames and a parser for plain frames.

:func:`index_pool` scans an extxyz (or plain XYZ) file once: where each frame starts, its
atom count, its chemical symbols and its ``candidate_id`` (from the comment line). Workers
then read only their own frames (:func:`read_frames`), parsed here when they are plain
extxyz (what ``generate`` and ASE write) with ASE's value conversions, and by ASE's reader
otherwise. :func:`read_atoms` gives the full ASE Atoms of chosen frames (``write``).
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import require_file


@dataclass
class PoolIndex:
    """Where each frame of an extxyz pool starts, and what it holds, from one quick scan."""

    path: Path
    offsets: np.ndarray  # (n+1,) int64 byte offset of each frame; last = end of data
    n_atoms: np.ndarray  # (n,) int64
    first_seen: dict[str, int] = field(default_factory=dict)  # symbol -> first config
    species_known: bool = True
    #: (n,) int64 ``candidate_id`` of each frame's comment line; -1 where it has none
    ids: np.ndarray | None = None
    has_id: np.ndarray | None = None  # (n,) bool

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


#: ``candidate_id=<int>`` (bare or quoted) as ASE's extxyz writer puts it on a comment line.
_CID = re.compile(rb'(?:^|\s)candidate_id=(?:(-?[0-9]+)(?=\s|$)|"\s*(-?[0-9]+)\s*"(?=\s|$))')


def comment_id(comment: bytes, where: str) -> int | None:
    """The ``candidate_id`` of an extxyz comment line (None when it has none).

    The common forms are matched directly; anything else naming ``candidate_id`` goes
    through ASE's comment parser and must give an integer.
    """
    m = _CID.search(comment)
    if m is not None:
        return int(m.group(1) or m.group(2))
    if b"candidate_id" not in comment:
        return None
    from ase.io.extxyz import key_val_str_to_dict

    try:
        value = key_val_str_to_dict(comment.decode(errors="replace").strip()).get("candidate_id")
    except Exception:  # noqa: BLE001 - ASE raises many kinds on a malformed line
        value = None
    if value is None:
        return None
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise MlpdesignError(f"{where}: candidate_id={value!r} is not an integer") from None


def _frame_symbols(lines: list[bytes], col: int, where: str) -> set[str]:
    try:
        syms = {ln.split(None, col + 1)[col] for ln in lines}
    except IndexError:
        raise MlpdesignError(f"{where}: an atom line has too few columns") from None
    return {sb.decode(errors="replace") for sb in syms}


def index_pool(path: str | os.PathLike, species: bool = True) -> PoolIndex:
    """Scan an extxyz file once: frame offsets, atom counts, symbols and candidate ids.

    ``species=False`` skips the symbols (``write`` needs only where the frames are).

    Raises a one-line :class:`MlpdesignError` for a missing or empty file, a line where a
    frame's atom count should be, a frame with no atoms or a file that ends mid-frame.
    """
    p = require_file(path, "pool file")
    offsets, counts, first_seen, ids = [], [], {}, []
    known = species
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
            ids.append(comment_id(comment, f"{p}: config {c}"))
            col = _species_column(comment) if known else None
            known = known and col is not None
            if known:
                for sym in _frame_symbols(lines, col, f"{p}: config {c} (line {lineno - n + 1})"):
                    first_seen.setdefault(sym, c)
    if not counts:
        raise MlpdesignError(f"{p}: no configurations (empty file?)")
    offsets.append(pos)
    has = np.array([i is not None for i in ids], dtype=bool)
    return PoolIndex(
        p,
        np.asarray(offsets, dtype=np.int64),
        np.asarray(counts, dtype=np.int64),
        first_seen,
        known,
        np.array([-1 if i is None else i for i in ids], dtype=np.int64),
        has,
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
            f"{path}: config {c}: cannot read it as extxyz: {one_line(e)}"
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


def one_line(e: BaseException) -> str:
    """An exception's message on one line (at most 300 characters)."""
    s = " ".join(str(e).split()) or type(e).__name__
    return s[:300]


def read_atoms(index: PoolIndex, positions) -> dict[int, object]:
    """Full ASE Atoms (every info key, array and calculator result) of the frames at
    ``positions`` of the file, read from their byte ranges only: ``{position: Atoms}``."""
    from ase.io.extxyz import read_xyz

    out = {}
    with open(index.path, "rb") as f:
        for c in sorted({int(c) for c in positions}):
            f.seek(int(index.offsets[c]))
            raw = f.read(int(index.offsets[c + 1] - index.offsets[c]))
            try:
                out[c] = next(read_xyz(io.StringIO(raw.decode()), index=0))
            except Exception as e:  # noqa: BLE001 - ASE raises many types on a broken frame
                raise MlpdesignError(
                    f"{index.path}: frame {c}: cannot be read: {one_line(e)}"
                ) from None
    return out
