"""``write``: the chosen configurations of a selection, in pick order, as extxyz.

The pool may hold 10^5-10^6 frames, so it is never loaded whole: one text pass reads only
the comment line of each frame (where ``candidate_id`` lives) and keeps the raw text of the
frames the selection wants; only those are parsed by ASE and written out in selection order.
:func:`pool_frames_ase` is the plain reference (ASE parses every frame) that the fast scan
is tested against.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_path, check_output, file_sha256, require_file
from mlpdesign.io.selection import load_selection

#: ``candidate_id=<int>`` as ASE's extxyz writer puts it on a frame's comment line.
_CID = re.compile(r'(?:^|\s)candidate_id=(?:"\s*)?(-?\d+)(?:\s*")?(?=\s|$)')


@dataclass
class WriteResult:
    """What :func:`write_training_set` wrote."""

    n_written: int
    n_selection: int
    pool_frames: int
    checksum_checked: bool


def _frame_texts(path: Path, wanted: set[int]) -> tuple[dict[int, str], int]:
    """One streaming pass: raw extxyz text of the frames whose ``candidate_id`` is wanted.

    Returns ``({candidate_id: text}, number of frames in the pool)``. Memory is the
    wanted frames only. A frame without ``candidate_id`` or a malformed frame is refused.
    """
    found: dict[int, str] = {}
    n_frames = 0
    lineno = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = iter(fh)
        for head in lines:
            lineno += 1
            if not head.strip():
                continue
            try:
                nat = int(head)
            except ValueError:
                raise MlpdesignError(
                    f"{path}:{lineno}: expected the atom count of an extxyz "
                    f"frame, got {head.strip()[:40]!r}"
                ) from None
            comment = next(lines, "")
            lineno += 1
            m = _CID.search(comment)
            if m is None:
                raise MlpdesignError(
                    f"{path}:{lineno}: frame {n_frames} has no candidate_id "
                    "(expected a pool written by mlpdesign generate)"
                )
            cid = int(m.group(1))
            if cid in wanted:
                if cid in found:
                    raise MlpdesignError(f"{path}: candidate_id {cid} occurs twice in the pool")
                body = list(itertools.islice(lines, nat))
                found[cid] = head + comment + "".join(body)
            else:
                for _ in itertools.islice(lines, nat):
                    pass
            lineno += nat
            n_frames += 1
    return found, n_frames


def _parse_frame(text: str, cid: int, path: Path) -> Atoms:
    from ase.io.extxyz import read_xyz

    try:
        atoms = next(read_xyz(io.StringIO(text), index=0))
    except Exception as e:  # ASE raises many types on a broken frame
        raise MlpdesignError(
            f"{path}: frame of candidate_id {cid} cannot be read: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    got = atoms.info.get("candidate_id")
    if got is None or int(got) != cid:
        raise MlpdesignError(f"{path}: frame of candidate_id {cid} reads back as {got}")
    return atoms


def pool_frames(path: str | os.PathLike, ids: Sequence[int]) -> tuple[list[Atoms], int]:
    """The pool frames with candidate ids ``ids``, in that order (fast text scan).

    Returns ``(frames, number of frames in the pool)``; refuses ids not in the pool.
    """
    p = Path(path)
    wanted = {int(i) for i in ids}
    texts, n_frames = _frame_texts(p, wanted)
    missing = [i for i in ids if int(i) not in texts]
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MlpdesignError(
            f"{len(missing)} selected candidate ids are not in {p} "
            f"({shown}): the selection was made from another pool"
        )
    parsed = {cid: _parse_frame(t, cid, p) for cid, t in texts.items()}
    return [parsed[int(i)].copy() for i in ids], n_frames


def pool_frames_ase(path: str | os.PathLike, ids: Sequence[int]) -> tuple[list[Atoms], int]:
    """Reference for :func:`pool_frames`: ASE parses every frame of the pool."""
    import ase.io

    wanted = {int(i) for i in ids}
    found: dict[int, Atoms] = {}
    n = 0
    for atoms in ase.io.iread(str(path), format="extxyz"):
        cid = int(atoms.info["candidate_id"])
        if cid in wanted:
            found[cid] = atoms
        n += 1
    return [found[int(i)].copy() for i in ids], n


def annotate(frames: Iterable[Atoms], psi: Sequence[float], start_rank: int = 0) -> list[Atoms]:
    """Add ``selection_rank`` (0 = first pick) and ``min_distance`` (the pick's psi) to info."""
    out = []
    for r, (atoms, d) in enumerate(zip(frames, psi, strict=True)):
        atoms.info["selection_rank"] = start_rank + r
        atoms.info["min_distance"] = float(d) if d is not None else math.inf
        out.append(atoms)
    return out


def write_extxyz(path: Path, frames: Iterable[Atoms]) -> None:
    """Write frames with every info key and array (no calculator results) through ASE."""
    from ase.io.extxyz import write_xyz

    with open(path, "w") as fh:
        for atoms in frames:
            write_xyz(fh, [atoms], write_results=False)


def write_training_set(
    pool: str | os.PathLike,
    selection: str | os.PathLike,
    output: str | os.PathLike,
    n: int | None = None,
    force: bool = False,
) -> WriteResult:
    """Write the picks of ``selection`` (the first ``n``) from ``pool`` to ``output`` (extxyz).

    Frames come out in selection order with every pool ``info`` key, plus
    ``selection_rank`` and ``min_distance`` (the selection's psi, the squared kernel
    distance D^2 to the design at pick time; ``inf`` for the first pick). Refuses a
    selection made from another pool (checksum, then candidate ids).
    """
    pool_p = require_file(pool, "pool file")
    require_file(selection, "selection file")
    check_output(output, force)
    sel = load_selection(selection)
    ids = np.asarray(sel.candidate_id, dtype=np.int64)
    psi = np.asarray(sel.psi, dtype=np.float64)
    if ids.size == 0:
        raise MlpdesignError(f"{selection}: the selection is empty")
    if n is not None:
        if n < 1:
            raise MlpdesignError(f"-n must be a positive number of configurations, got {n}")
        if n > ids.size:
            raise MlpdesignError(f"-n {n} but {selection} holds only {ids.size} picks")
        ids, psi = ids[:n], psi[:n]
    if len(set(ids.tolist())) != ids.size:
        raise MlpdesignError(f"{selection}: a candidate id is picked twice")
    want_sha = getattr(sel, "pool_sha256", "") or ""
    if want_sha:
        sha = file_sha256(pool_p)
        if sha != want_sha:
            raise MlpdesignError(
                f"{selection} was selected from a different pool (sha256 {want_sha[:12]}…) "
                f"than {pool} (sha256 {sha[:12]}…); give the pool the store was described from"
            )
    frames, n_frames = pool_frames(pool_p, ids.tolist())
    frames = annotate(frames, psi.tolist())
    with atomic_path(output, force) as tmp:
        write_extxyz(tmp, frames)
    return WriteResult(
        n_written=len(frames),
        n_selection=len(sel.candidate_id),
        pool_frames=n_frames,
        checksum_checked=bool(want_sha),
    )
